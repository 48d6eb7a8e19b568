//! Panic guards for entry points.
//!
//! abi_stable's `extern "C"` shims turn a panic that reaches the boundary into
//! `std::process::exit(1)`: the whole host would die. Every entry point the kit generates runs
//! its body inside one of these guards.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::std_types::RResult;

use crate::abi::PluginError;

/// Runs `f`, turning a panic into `RErr(PluginError { kind: PANICKED, .. })`.
pub fn guard<T>(f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(PluginError::panicked(format!(
            "plugin panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Runs `f`; on panic returns `on_panic(message)` instead. For entry points that don't
/// return a `Result` (`health`, `set_typing`, `teardown`).
pub fn guard_or<T>(f: impl FnOnce() -> T, on_panic: impl FnOnce(String) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => on_panic(panic_message(payload.as_ref())),
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ErrorKind;

    #[test]
    fn guard_passes_results_through() {
        assert_eq!(guard(|| Ok::<_, PluginError>(5)).into_result(), Ok(5));
        let err = guard::<()>(|| Err(PluginError::auth("no"))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AUTH);
    }

    #[test]
    fn guard_catches_panics() {
        let err = guard::<()>(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert_eq!(err.message.as_str(), "plugin panicked: boom 42");
        let err = guard::<()>(|| std::panic::panic_any(7_u32)).unwrap_err();
        assert!(err.message.contains("non-string payload"));
    }

    #[test]
    fn guard_or_uses_fallback() {
        assert_eq!(guard_or(|| 1, |_| 2), 1);
        assert_eq!(guard_or(|| -> i32 { panic!("x") }, |m| m.len() as i32), 1);
    }
}
