//! Who is on the other end of a connection: the peer's uid (SO_PEERCRED), resolved through
//! the system's user database (getpwuid_r, so NSS sources such as LDAP count too).

use nanoclaw_plugin_api::kit::tracing;
use nix::unistd::{Uid, User};

/// A connected local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The login name: the raw chat id and sender handle (`cli:<user>` in the host).
    pub user: String,
    /// The GECOS full name when there is one, else the login name.
    pub display_name: String,
}

impl Identity {
    /// Resolves `uid`. Blocking (the user database may be remote): call it off the async
    /// threads. A uid with no entry (common in containers) is named by its number.
    pub fn of_uid(uid: u32) -> Self {
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(user)) => {
                let gecos = user.gecos.to_string_lossy();
                Self::from_passwd(&user.name, &gecos)
            }
            Ok(None) => Self::numeric(uid),
            Err(errno) => {
                tracing::warn!(
                    uid,
                    "user database lookup failed ({errno}); naming the user by uid"
                );
                Self::numeric(uid)
            }
        }
    }

    fn numeric(uid: u32) -> Self {
        Self {
            user: uid.to_string(),
            display_name: format!("uid {uid}"),
        }
    }

    /// Builds an identity from a passwd entry's login name and GECOS field.
    pub fn from_passwd(login: &str, gecos: &str) -> Self {
        Self {
            user: login.to_owned(),
            display_name: full_name(login, gecos).unwrap_or_else(|| login.to_owned()),
        }
    }
}

/// The full name in a GECOS field: its first comma-separated part, with `&` standing for the
/// capitalised login name (the BSD convention). `None` when empty.
fn full_name(login: &str, gecos: &str) -> Option<String> {
    let first = gecos.split(',').next().unwrap_or_default().trim();
    if first.is_empty() {
        return None;
    }
    if !first.contains('&') {
        return Some(first.to_owned());
    }
    let mut chars = login.chars();
    let capitalised: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    Some(first.replace('&', &capitalised))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gecos_full_name_or_login() {
        let id = Identity::from_passwd("ann", "Ann Smith,Room 4,555-1234,,");
        assert_eq!(id.user, "ann");
        assert_eq!(id.display_name, "Ann Smith");
        assert_eq!(Identity::from_passwd("bob", "").display_name, "bob");
        assert_eq!(Identity::from_passwd("bob", " ,,,").display_name, "bob");
        assert_eq!(
            Identity::from_passwd("zoe", "& Jones").display_name,
            "Zoe Jones"
        );
    }

    #[test]
    fn resolves_the_current_user() {
        let uid = nix::unistd::getuid();
        let id = Identity::of_uid(uid.as_raw());
        match User::from_uid(uid).expect("lookup") {
            Some(user) => assert_eq!(id.user, user.name),
            None => assert_eq!(id.user, uid.to_string()),
        }
        assert!(!id.display_name.is_empty());
    }
}
