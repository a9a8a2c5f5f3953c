//! `--user USER[:GROUP]`: the user (and group) workers run as.
//!
//! The master drops each worker's privileges itself, between fork and exec (see
//! [`crate::spawn`]): supplementary groups, then group, then user, and only then asks for
//! SIGKILL when the master dies, since the kernel clears that request on a credential
//! change. A worker that switches its user *itself* loses it, and would outlive a SIGKILLed
//! master: that is why the switch belongs to the master.

use std::ffi::CString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

/// Who workers run as, resolved when the option is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name (`USER` and `LOGNAME` in the worker's environment).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// The group: the one given, else the user's primary group.
    pub gid: u32,
    /// The supplementary groups: the user's, from the group database.
    pub groups: Vec<u32>,
    /// Its home (`HOME`).
    pub home: PathBuf,
}

impl FromStr for Credentials {
    type Err = String;

    /// Parses `USER` or `USER:GROUP`, each a name or a number, and looks them up.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (user, group) = match t.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (t, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err("expected USER or USER:GROUP (names or numbers)".into());
        }
        let group = group.map(group_id).transpose()?;
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(user),
        }
        .map_err(|e| format!("cannot look up user {user:?}: {e}"))?;
        let Some(found) = found else {
            // A bare uid with no entry (common in containers) is fine with its group given.
            return match (user.parse::<u32>(), group) {
                (Ok(uid), Some(gid)) => Ok(Credentials {
                    name: uid.to_string(),
                    uid,
                    gid,
                    groups: vec![gid],
                    home: PathBuf::from("/"),
                }),
                (Ok(uid), None) => Err(format!(
                    "uid {uid} has no entry in the user database: give its group too \
                     ({uid}:GID)"
                )),
                (Err(_), _) => Err(format!("no user {user:?} on this system")),
            };
        };
        let gid = group.unwrap_or(found.gid.as_raw());
        let name = CString::new(found.name.clone()).map_err(|_| "bad user name".to_string())?;
        let mut groups: Vec<u32> = getgrouplist(&name, Gid::from_raw(gid))
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|_| vec![gid]);
        groups.sort_unstable();
        groups.dedup();
        Ok(Credentials {
            name: found.name,
            uid: found.uid.as_raw(),
            gid,
            groups,
            home: found.dir,
        })
    }
}

/// A group given by number, or by a name the group database knows.
fn group_id(g: &str) -> Result<u32, String> {
    match g.parse::<u32>() {
        Ok(gid) => Ok(gid),
        Err(_) => Ok(Group::from_name(g)
            .map_err(|e| format!("cannot look up group {g:?}: {e}"))?
            .ok_or_else(|| format!("no group {g:?} on this system"))?
            .gid
            .as_raw()),
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.name, self.uid, self.gid)
    }
}

impl Credentials {
    /// Whether this process may start workers as this user: it is that user already, or it
    /// may change its credentials (root, or `CAP_SETUID` and `CAP_SETGID`).
    pub fn can_switch(&self) -> bool {
        let me = nix::unistd::geteuid();
        if me.as_raw() == self.uid && nix::unistd::getegid().as_raw() == self.gid {
            return true;
        }
        me.is_root() || has_setid_caps()
    }
}

/// Whether this process holds `CAP_SETUID` and `CAP_SETGID` (from `/proc/self/status`).
fn has_setid_caps() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| {
            // CAP_SETGID is capability 6, CAP_SETUID 7 (linux/capability.h).
            let wanted = (1u64 << 6) | (1u64 << 7);
            caps & wanted == wanted
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        let root: Credentials = "root".parse().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.home, PathBuf::from("/root"));
        let by_number: Credentials = "0:0".parse().unwrap();
        assert_eq!(by_number.name, "root");
        assert!(
            "no-such-user-xyz"
                .parse::<Credentials>()
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            "root:no-such-group-xyz"
                .parse::<Credentials>()
                .unwrap_err()
                .contains("no group")
        );
        // A bare uid without an entry, as containers run: its group must be given.
        let bare: Credentials = "4000123:4000124".parse().unwrap();
        assert_eq!(
            (bare.uid, bare.gid, bare.groups.as_slice()),
            (4000123, 4000124, &[4000124][..])
        );
        assert_eq!(bare.home, PathBuf::from("/"));
        assert!(
            "4000123"
                .parse::<Credentials>()
                .unwrap_err()
                .contains("4000123:GID")
        );
        assert!("".parse::<Credentials>().is_err());
        assert!("root:".parse::<Credentials>().is_err());
    }
}
