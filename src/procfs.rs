//! Reading processes from `/proc`: the few fields the master needs, parsed by hand.
//!
//! `/proc/PID/stat` is parsed from the *last* `)`, because the command name between the
//! parentheses may itself contain spaces and parentheses.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// The fields of `/proc/PID/stat` the master uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Process state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// User CPU time, in clock ticks.
    pub utime: u64,
    /// System CPU time, in clock ticks.
    pub stime: u64,
    /// Number of threads.
    pub threads: u64,
    /// Start time after boot, in clock ticks.
    pub starttime: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses the text of `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Fields from 3 (state) on; field N is at index N - 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: u32::try_from(num(4)?).ok()?,
        pgrp: u32::try_from(num(5)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        threads: num(20)?,
        starttime: num(22)?,
        rss_pages: num(24)?,
    })
}

/// Reads and parses `/proc/PID/stat`.
pub fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
}

/// The nearest of `pid` and its ancestors for which `is_worker` holds, if any.
///
/// Used to attribute a notify message to the worker whose descendant sent it (`sh -c`,
/// `systemd-notify`). The walk stops at pid 1, at `stop_at` (the master) and after a few
/// dozen levels.
pub fn owning_ancestor(pid: u32, stop_at: u32, is_worker: impl Fn(u32) -> bool) -> Option<u32> {
    let mut p = pid;
    for _ in 0..32 {
        if is_worker(p) {
            return Some(p);
        }
        if p <= 1 || p == stop_at {
            return None;
        }
        p = read_stat(p).ok()?.ppid;
    }
    None
}

/// What a process and its descendants use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many processes were counted.
    pub processes: usize,
    /// Resident pages, summed.
    pub rss_pages: u64,
    /// User plus system CPU time, in clock ticks, summed.
    pub cpu_ticks: u64,
}

/// The resources used by `pid` and its descendants (those it has not reaped count; the
/// ones gone are not).
pub fn tree_usage(pid: u32) -> Usage {
    let mut usage = Usage::default();
    for p in process_tree(pid, 256) {
        if let Ok(stat) = read_stat(p) {
            usage.processes += 1;
            usage.rss_pages += stat.rss_pages;
            usage.cpu_ticks += stat.utime + stat.stime;
        }
    }
    usage
}

/// The size of a memory page, in bytes.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}

/// Clock ticks per second, the unit of CPU times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |v| v as u64)
}

/// A pidfd for process `pid` (`pidfd_open(2)`, Linux 5.3).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    pidfd_open_with(pid, 0)
}

/// A pidfd for `pid` with `flags` (`PIDFD_THREAD`, Linux 6.9, for a thread).
pub fn pidfd_open_with(pid: u32, flags: libc::c_long) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A duplicate, in this process, of descriptor `fd` of the process behind `pidfd`
/// (`pidfd_getfd(2)`, Linux 5.6; needs the right to ptrace that process). It shares that
/// process's open file description (`O_NONBLOCK` included).
pub fn pidfd_getfd(pidfd: std::os::fd::BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags, and returns a new
    // descriptor (close-on-exec) or -1.
    let dup = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd() as libc::c_long,
            fd as libc::c_long,
            0 as libc::c_long,
        )
    };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// Above this many threads, [`tasks`] lists the main thread only.
///
/// Listing `/proc/PID/task` fills the kernel's dentry cache with one entry per thread, and
/// the kernel pays for every one of them when the process is reaped: with thousands of
/// threads, `wait4` stalls for a noticeable fraction of a second. Thread-per-connection
/// servers reach such counts under load; their main thread is the one that matters here.
pub const TASK_LIST_LIMIT: u64 = 256;

/// The thread ids of `pid` worth looking at: all of them when there are at most
/// [`TASK_LIST_LIMIT`], else only the main thread (whose tid is `pid`).
pub fn tasks(pid: u32) -> Vec<u32> {
    match read_stat(pid) {
        Ok(stat) if stat.threads <= TASK_LIST_LIMIT => {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return Vec::new();
            };
            dir.flatten()
                .filter_map(|t| t.file_name().to_str()?.parse().ok())
                .collect()
        }
        Ok(_) => vec![pid],
        Err(_) => Vec::new(),
    }
}

/// The pids of `pid`'s children (`/proc/PID/task/TID/children`, over [`tasks`]).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for tid in tasks(pid) {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// `pid` and its descendants, parents first (at most `limit` processes).
pub fn process_tree(pid: u32, limit: usize) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() && tree.len() < limit {
        let kids = children(tree[i]);
        tree.extend(kids.into_iter().take(limit - tree.len()));
        i += 1;
    }
    tree
}

/// The inode of socket `fd` of process (or thread) `pid`, from `/proc/PID/fd/FD`
/// (`socket:[INODE]`): one `readlink`, cheaper than a duplicate.
pub fn socket_inode(pid: u32, fd: i64) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    parse_socket_link(link.as_os_str())
}

/// `socket:[123]` -> 123.
pub fn parse_socket_link(link: &std::ffi::OsStr) -> Option<u64> {
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn socket_links_give_their_inode() {
        use std::ffi::OsStr;
        assert_eq!(
            super::parse_socket_link(OsStr::new("socket:[4242]")),
            Some(4242)
        );
        assert_eq!(super::parse_socket_link(OsStr::new("pipe:[4242]")), None);
        assert_eq!(super::parse_socket_link(OsStr::new("socket:[x]")), None);
        assert_eq!(super::parse_socket_link(OsStr::new("/dev/null")), None);
    }

    use super::*;

    #[test]
    fn stat_is_parsed_from_the_last_parenthesis() {
        let text = "1234 (we ird) (name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    7 3 0 0 20 0 5 0 99 12345678 321 18446744073709551615 0 0 0 0 0 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgrp), (1, 1234));
        assert_eq!((s.utime, s.stime), (7, 3));
        assert_eq!(s.threads, 5);
        assert_eq!(s.starttime, 99);
        assert_eq!(s.rss_pages, 321);
    }

    #[test]
    fn garbage_stat_is_none_not_a_panic() {
        for t in [
            "",
            ")",
            "1 (x) S",
            "1 (x) S a b c",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 -5 19 20",
        ] {
            assert!(parse_stat(t).is_none(), "{t:?}");
        }
    }

    #[test]
    fn our_own_stat_reads() {
        let me = read_stat(std::process::id()).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.threads >= 1);
    }

    /// A child with `n` extra threads, ready to be looked at (not this process: tests
    /// running in our other threads must not see its threads come and go).
    fn threaded_child(n: u64) -> std::process::Child {
        use std::io::BufRead;
        let script = format!(
            "import threading, time\n\
             for _ in range({n}): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n\
             print('ready', flush=True)\n\
             time.sleep(60)"
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    }

    #[test]
    fn a_process_with_many_threads_lists_only_its_main_thread() {
        let mut child = threaded_child(TASK_LIST_LIMIT + 1);
        let pid = child.id();
        assert!(read_stat(pid).unwrap().threads > TASK_LIST_LIMIT);
        assert_eq!(tasks(pid), vec![pid]);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_process_with_few_threads_lists_them_all() {
        let mut child = threaded_child(3);
        let pid = child.id();
        let listed = tasks(pid);
        assert_eq!(listed.len() as u64, read_stat(pid).unwrap().threads);
        assert!(listed.len() >= 4 && listed.contains(&pid), "{listed:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn our_children_are_in_our_process_tree() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        assert!(children(me).contains(&child.id()));
        let tree = process_tree(me, 64);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_child_is_owned_by_us_through_its_parent() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        assert_eq!(owning_ancestor(child.id(), 0, |p| p == me), Some(me));
        assert_eq!(owning_ancestor(child.id(), me, |p| p == 999_999_999), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
