//! A small tokio runtime owned by the plugin.

/// Builds a multi-thread tokio runtime for a plugin: `workers` worker threads (clamped to
/// 1–2), at most 4 blocking threads, threads named `<name>-rt`, I/O and time enabled.
///
/// A cdylib has its own tokio: the host's runtime is invisible inside the plugin, so network
/// code needs one of these. Spawn long-lived tasks (poll loops, websockets) on it in
/// `start`; shut it down in `teardown` with `shutdown_timeout` (or keep it in an `Option`
/// and `take()` it). Never `block_on` it from inside one of its own tasks.
pub fn runtime(name: &str, workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.clamp(1, 2))
        .max_blocking_threads(4)
        .thread_name(format!("{name}-rt"))
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_runs_timers_on_named_threads() {
        let rt = super::runtime("kit-test", 8).expect("runtime");
        let name = rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .expect("join")
        });
        assert_eq!(name.as_deref(), Some("kit-test-rt"));
        assert_eq!(rt.metrics().num_workers(), 2);
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
    }
}
