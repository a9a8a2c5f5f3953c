//! Where the control sockets are, and which master a control command means.
//!
//! Each master listens on `NAME.sock` (its `--name`, see [`Config::name`]) in its user's
//! folder: `$XDG_RUNTIME_DIR/master-process`, else `/run/master-process` for root, else
//! `master-process-UID` in the temp folder. So several masters of one user (or root) each
//! have their own socket, and `master-process status` finds the one that runs, or asks
//! which one when several do.
//!
//! A folder someone else could write to would let them put their own socket in place of a
//! master's and answer its clients: the folder must be ours (owner is our effective uid),
//! a real folder (not a symlink), with no write permission for group or others. The master
//! creates it so (0700); master and client both refuse one that is not. The client also
//! checks who answers ([`check_peer`]): our user or root.
//!
//! [`Config::name`]: crate::config::Config::name

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
#[cfg(feature = "cli")]
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[cfg(feature = "cli")]
use nix::sys::socket::{self, sockopt};

use crate::error::{Error, Result};

/// This user's folder of control sockets.
pub fn folder() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
    {
        return dir.join("master-process");
    }
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        PathBuf::from("/run/master-process")
    } else {
        std::env::temp_dir().join(format!("master-process-{uid}"))
    }
}

/// The default control socket of the master named `name`.
pub fn default_path(name: &str) -> PathBuf {
    folder().join(format!("{name}.sock"))
}

/// Creates `dir` private to us (0700) if missing, then checks it is safe to listen in.
///
/// # Errors
/// It cannot be created, or it is not ours alone: one line saying what to do.
pub fn ensure_folder(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(
                format!(
                    "cannot create the control folder {}; give --control PATH",
                    dir.display()
                ),
                e,
            ));
        }
    }
    check_folder(dir).map_err(|why| Error::UnsafeFolder {
        path: dir.to_path_buf(),
        reason: why,
    })
}

/// Checks that `dir` is a real folder, owned by our effective uid, that nobody else may
/// write to.
///
/// # Errors
/// What is wrong with it.
pub fn check_folder(dir: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect it: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link".into());
    }
    if !meta.is_dir() {
        return Err("it is not a folder".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "it belongs to uid {}, not to us ({me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "others may write to it (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(feature = "cli")]
/// Checks that the process at the other end of `stream` is of our user, or root.
///
/// # Errors
/// Who it is instead.
pub fn check_peer(stream: &UnixStream) -> std::result::Result<(), String> {
    let cred = socket::getsockopt(stream, sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read its credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == me || cred.uid() == 0 {
        Ok(())
    } else {
        Err(format!(
            "it is served by uid {} (pid {}), neither us nor root: not trusting it",
            cred.uid(),
            cred.pid()
        ))
    }
}

#[cfg(feature = "cli")]
/// A master found running: it answers on its control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its name (the socket's file name without `.sock`).
    pub name: String,
    /// Its control socket.
    pub path: PathBuf,
    /// Its pid and user, from the socket's credentials.
    pub pid: i32,
    /// Its user.
    pub uid: u32,
}

#[cfg(feature = "cli")]
/// The masters answering in `dir` (a folder we trust: see [`check_folder`]).
pub fn running_in(dir: &Path) -> Vec<Running> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Running> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".sock")?
                .to_string();
            let stream = connect_now(&path)?;
            let cred = socket::getsockopt(&stream, sockopt::PeerCredentials).ok()?;
            Some(Running {
                name,
                path,
                pid: cred.pid(),
                uid: cred.uid(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

#[cfg(feature = "cli")]
/// Connects to the unix socket at `path` without waiting: a listener whose queue is full
/// (hung, or someone's trap for root's `list`) is passed over (`EAGAIN`), not waited for.
fn connect_now(path: &Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let flags = socket::SockFlag::SOCK_NONBLOCK | socket::SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        flags,
        None,
    );
    let fd = fd.ok()?;
    let addr = socket::UnixAddr::new(path).ok()?;
    socket::connect(fd.as_raw_fd(), &addr).ok()?;
    Some(fd)
}

#[cfg(feature = "cli")]
/// The folders `list` looks in: ours; for root, every user's as well.
fn folders_to_list() -> Vec<PathBuf> {
    let mut dirs = vec![folder()];
    if nix::unistd::geteuid().is_root() {
        dirs.push(PathBuf::from("/run/master-process"));
        let globs = [
            (PathBuf::from("/run/user"), None, Some("master-process")),
            (std::env::temp_dir(), Some("master-process-"), None),
        ];
        for (base, prefix, sub) in globs {
            let Ok(entries) = std::fs::read_dir(&base) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if prefix.is_some_and(|p| !name.starts_with(p)) {
                    continue;
                }
                dirs.push(match sub {
                    Some(sub) => e.path().join(sub),
                    None => e.path(),
                });
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(feature = "cli")]
/// The control socket a command means: `name`'s, or the only master running.
///
/// # Errors
/// Our folder is unsafe, no master runs, or several do and no name says which.
pub fn find(name: Option<&str>) -> Result<PathBuf> {
    let dir = folder();
    if let Err(why) = check_folder(&dir) {
        if dir.exists() {
            return Err(Error::UnsafeFolder {
                path: dir,
                reason: why,
            });
        }
    }
    if let Some(name) = name {
        return Ok(dir.join(format!("{name}.sock")));
    }
    let running = running_in(&dir);
    match running.as_slice() {
        [one] => Ok(one.path.clone()),
        [] => Err(Error::NoMaster {
            reason: format!(
                "no master is running (no control socket answers in {}); give --name NAME or \
                 --control PATH",
                dir.display()
            ),
        }),
        many => {
            let names: Vec<&str> = many.iter().map(|r| r.name.as_str()).collect();
            Err(Error::NoMaster {
                reason: format!(
                    "several masters are running ({}): say which with --name NAME",
                    names.join(", ")
                ),
            })
        }
    }
}

#[cfg(feature = "cli")]
/// `master-process list`: prints the running masters; returns the exit code.
pub fn print_list(json: bool) -> u8 {
    let me = nix::unistd::geteuid().as_raw();
    let all: Vec<Running> = folders_to_list()
        .iter()
        .filter(|d| {
            // Root looks into every user's folder; anyone else only into a safe own one.
            me == 0 || check_folder(d).is_ok()
        })
        .flat_map(|d| running_in(d))
        .collect();
    if json {
        let items: Vec<String> = all
            .iter()
            .map(|r| {
                format!(
                    "{{\"name\":{},\"pid\":{},\"uid\":{},\"control\":{}}}",
                    super::client::json_string(&r.name),
                    r.pid,
                    r.uid,
                    super::client::json_string(&r.path.to_string_lossy())
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return 0;
    }
    if all.is_empty() {
        println!("no master is running");
        return 0;
    }
    let width = all.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:<7}  {:<5}  CONTROL", "NAME", "PID", "UID");
    for r in &all {
        println!(
            "{:<width$}  {:<7}  {:<5}  {}",
            r.name,
            r.pid,
            r.uid,
            r.path.display()
        );
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_folder_others_may_write_to_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("open");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_folder(&d).unwrap_err().contains("others may write"));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_folder(&d), Ok(()));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check_folder(&link).unwrap_err().contains("symbolic link"));
    }

    #[test]
    fn a_created_folder_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("mine");
        ensure_folder(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_folder(&d).unwrap();
    }

    #[cfg(feature = "cli")]
    #[test]
    fn masters_answering_in_a_folder_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(dir.path().join("b.sock")).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap());
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let found = running_in(dir.path());
        let names: Vec<&str> = found.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(found[0].pid, std::process::id() as i32);
    }
}
