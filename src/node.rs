//! Node.js workers: the drain preload.
//!
//! An unchanged Node.js app that does not handle SIGTERM dies at once when the master retires
//! it, cutting its in-flight requests and keep-alive connections. With `--node-drain on` (the
//! command line's default) the master preloads, in every Node.js process of the worker trees
//! (`NODE_OPTIONS=--require`), the npm package's own drain (`packages/node/lib/drain.js`,
//! embedded here as it is): on SIGTERM, when the app listens for no SIGTERM itself, it stops
//! accepting, finishes what is in flight, answers later keep-alive requests with
//! `Connection: close`, closes idle connections and exits, before `MAX_KILL_TIMEOUT`. It also
//! makes `cluster.isMaster` false in workers, so that apps written for the reference
//! (`if (cluster.isMaster) { require('master-process').init(); return; }`) run.
//!
//! The files are written into the master's private runtime folder (the notify socket's),
//! readable by the workers' user.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The drain itself.
const DRAIN: &str = include_str!("../packages/node/lib/drain.js");
/// Whether the drain is wanted (`MASTER_PROCESS_NODE_DRAIN`), as the package reads it.
const DRAIN_WANTED: &str = include_str!("../packages/node/lib/drain-wanted.js");
/// The preload: the drain, and `cluster.isMaster` as the reference's workers had it.
const WORKER: &str = include_str!("../packages/node/lib/worker.js");

/// The files the preload is made of, as written into the master's folder.
pub const FILES: [&str; 3] = ["drain.js", "drain-wanted.js", "worker.js"];

/// Writes the preload into `dir`; returns the path to `--require`.
///
/// # Errors
/// The files cannot be written.
pub fn install_preload(dir: &Path) -> io::Result<PathBuf> {
    for (name, text) in FILES.into_iter().zip([DRAIN, DRAIN_WANTED, WORKER]) {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| {
                // Whatever the umask (a unit's `UMask=0077`), and whatever an old file had:
                // workers of another user (`--user`) must read it.
                f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                std::io::Write::write_all(&mut f, text.as_bytes())
            })?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(dir.join(FILES[2]))
}

/// `NODE_OPTIONS` with `--require PRELOAD` added to what the user set (quoted as Node.js
/// parses it).
pub fn node_options(existing: Option<&str>, preload: &Path) -> String {
    let quoted = preload
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let require = format!("--require \"{quoted}\"");
    match existing.map(str::trim).filter(|s| !s.is_empty()) {
        Some(user) => format!("{user} {require}"),
        None => require,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_is_added_to_what_the_user_set() {
        let p = Path::new("/run/x y/worker.js");
        assert_eq!(node_options(None, p), "--require \"/run/x y/worker.js\"");
        assert_eq!(
            node_options(Some("--max-old-space-size=512"), p),
            "--max-old-space-size=512 --require \"/run/x y/worker.js\""
        );
    }

    #[test]
    fn the_preload_files_are_written_readable_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file-creation mask; it is restored below
        // (each test runs in its own process under nextest).
        let old = unsafe { libc::umask(0o077) };
        let path = install_preload(dir.path());
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let path = path.unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("drain.js"));
        let mode = std::fs::metadata(dir.path().join("drain.js"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
