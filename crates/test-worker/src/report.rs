//! `TW_REPORT=DIR`: what the worker inherited, written to `DIR/<pid>.env`.
//!
//! The process state is captured by [`Snapshot::take`], which `main` calls before it opens
//! any descriptor or touches any signal disposition; the file itself is written later, once
//! the listeners are taken.

use std::ffi::CStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The inherited process state.
pub struct Snapshot {
    /// Open descriptors, sorted, without the one used to list them.
    fds: Vec<i32>,
    pgid: i32,
    ppid: i32,
    /// `SigBlk` from `/proc/self/status` (the main thread's mask), hex as the kernel prints it.
    sigmask: String,
    /// `SigIgn` from `/proc/self/status`.
    sigign: String,
}

impl Snapshot {
    /// Captures the state. Opens one directory and one file, both closed before it returns.
    pub fn take() -> io::Result<Snapshot> {
        let fds = open_fds()?;
        let status = fs::read_to_string("/proc/self/status")?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        Ok(Snapshot {
            fds,
            // SAFETY: getpgid and getppid have no preconditions and cannot fail for pid 0.
            pgid: unsafe { libc::getpgid(0) },
            // SAFETY: as above.
            ppid: unsafe { libc::getppid() },
            sigmask: field("SigBlk:"),
            sigign: field("SigIgn:"),
        })
    }

    /// Writes `DIR/<pid>.env` atomically (`DIR/.<pid>.tmp`, then a rename).
    pub fn write(&self, dir: &Path, pid: u32) -> io::Result<PathBuf> {
        let mut out = Vec::new();
        let mut vars: Vec<_> = std::env::vars_os().collect();
        vars.sort();
        for (key, value) in vars {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        let fds: Vec<String> = self.fds.iter().map(i32::to_string).collect();
        writeln!(out, "FDS={}", fds.join(","))?;
        writeln!(out, "PGID={}", self.pgid)?;
        writeln!(out, "PPID_REAL={}", self.ppid)?;
        writeln!(out, "SIGMASK={}", self.sigmask)?;
        writeln!(out, "SIGIGN={}", self.sigign)?;

        let tmp = dir.join(format!(".{pid}.tmp"));
        let done = dir.join(format!("{pid}.env"));
        fs::write(&tmp, &out)?;
        fs::rename(&tmp, &done)?;
        Ok(done)
    }
}

/// Lists `/proc/self/fd` through libc, so that the directory's own descriptor is known and
/// left out (std's `read_dir` does not expose it).
fn open_fds() -> io::Result<Vec<i32>> {
    const DIR: &CStr = c"/proc/self/fd";
    // SAFETY: DIR is a valid NUL-terminated path; the result is checked for NULL.
    let dir = unsafe { libc::opendir(DIR.as_ptr()) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dir is a valid, open directory stream.
    let own = unsafe { libc::dirfd(dir) };
    let mut fds = Vec::new();
    loop {
        // SAFETY: dir is valid and only this thread uses it; the entry is read before the
        // next readdir call.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok())
            && fd != own
        {
            fds.push(fd);
        }
    }
    // SAFETY: dir is valid and not used after this.
    unsafe { libc::closedir(dir) };
    fds.sort_unstable();
    Ok(fds)
}
