//! What bench reads from `/proc` and the system: `/proc/PID/stat`, children and pidfds come
//! from the main crate's `procfs` module; here is what the master itself never needs (memory
//! from `/proc/PID/status`, the scheduler's exact runtime, context switches, descriptors, the
//! whole machine's CPU time and description).

use std::collections::HashMap;
use std::fs;
use std::io;

pub use master_process::__internal::procfs;

/// `/proc/PID/stat`, parsed by the main crate.
pub fn stat(pid: i32) -> io::Result<procfs::Stat> {
    procfs::read_stat(pid.unsigned_abs())
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> io::Result<u64> {
    stat(pid).map(|s| s.utime + s.stime)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_ok_and(|s| s.state != 'Z')
}

/// The children of a process.
pub fn children(pid: i32) -> Vec<i32> {
    let kids = procfs::children(pid.unsigned_abs());
    kids.into_iter()
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

/// Ticks to milliseconds.
pub fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / procfs::clock_ticks_per_second() as f64
}

/// The master's memory budget (VmRSS and VmHWM), kB: 4 MiB, as for 128 workers (issue
/// 16). Most of a master's VmRSS is the text of libc and of its binary, pages shared with
/// every process that maps them (`RssFile`, about 2.6 MB); its own memory is `RssAnon`,
/// reported beside it.
pub const RSS_BUDGET_KB: u64 = 4 * 1024;
/// [`RSS_BUDGET_KB`] as a target.
pub const RSS_BUDGET: &str = "<= 4096 kB (4 MiB)";

/// A `/proc/PID/status` value in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: i32, key: &str) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'));
    let value = value.ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))?;
    let kb = value.trim().trim_end_matches("kB").trim();
    kb.parse()
        .map_err(|_| io::Error::other(format!("bad {key} value {value:?}")))
}

/// CPU time actually run by every thread of a process, in ms with ns precision, from
/// `se.sum_exec_runtime` in `/proc/PID/task/*/sched` (`None` if the kernel does not show it).
/// Exact where utime + stime only move by whole clock ticks.
pub fn cpu_runtime_ms(pid: i32) -> Option<f64> {
    let mut total = None;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("sched")) else {
            continue;
        };
        let line = text.lines().find(|l| l.starts_with("se.sum_exec_runtime"));
        if let Some(ms) = line.and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += ms;
        }
    }
    total
}

/// Context switches of a process, summed over its threads (`/proc/PID/task/*/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// `voluntary_ctxt_switches`: it went to sleep (a blocking call, e.g. poll).
    pub voluntary: u64,
    /// `nonvoluntary_ctxt_switches`: it was preempted.
    pub involuntary: u64,
}

impl Switches {
    /// Both kinds: each is the process running and then stopping, so a total that does not
    /// move means it did not wake up.
    pub fn total(self) -> u64 {
        self.voluntary + self.involuntary
    }

    /// What happened since `earlier`.
    pub fn since(self, earlier: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }
}

/// The context switches of every thread of a process.
pub fn ctxt_switches(pid: i32) -> io::Result<Switches> {
    let mut total = Switches::default();
    for task in fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        for line in text.lines() {
            let (slot, value) = if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                (&mut total.voluntary, v)
            } else if let Some(v) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                (&mut total.involuntary, v)
            } else {
                continue;
            };
            *slot += value
                .trim()
                .parse::<u64>()
                .map_err(|_| io::Error::other(format!("bad context switch count {value:?}")))?;
        }
    }
    Ok(total)
}

/// The number of open file descriptors.
pub fn fd_count(pid: i32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The command line, arguments joined by spaces ("" if gone).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every pid in `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// System-wide CPU time from `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCpu {
    /// user + nice + system (process time, without interrupts).
    pub busy: u64,
    /// irq + softirq + steal.
    pub other: u64,
    /// Everything, idle included.
    pub total: u64,
}

/// Reads the `cpu` line of `/proc/stat`.
pub fn system_cpu() -> SystemCpu {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return SystemCpu::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    SystemCpu {
        busy: at(0) + at(1) + at(2),
        other: at(5) + at(6) + at(7),
        total: (0..8).map(at).sum(),
    }
}

/// One process in a [`processes`] snapshot.
#[derive(Debug, Clone)]
pub struct ProcCpu {
    /// Command name.
    pub comm: String,
    /// Parent pid.
    pub ppid: i32,
    /// utime + stime in ticks.
    pub ticks: u64,
}

/// Every process, keyed by (pid, start time) so that a reused pid is another process.
pub fn processes() -> HashMap<(i32, u64), ProcCpu> {
    let one = |pid: i32| {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let s = procfs::parse_stat(&text)?;
        let comm = text[text.find('(')? + 1..text.rfind(')')?].to_owned();
        let ppid = i32::try_from(s.ppid).ok()?;
        Some((
            (pid, s.starttime),
            ProcCpu {
                comm,
                ppid,
                ticks: s.utime + s.stime,
            },
        ))
    };
    pids().into_iter().filter_map(one).collect()
}

/// What the report says about the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub model: String,
    /// `sysname release machine` from uname(2).
    pub kernel: String,
    /// MemTotal in kB.
    pub mem_total_kb: u64,
    /// net.ipv4.tcp_tw_reuse (matters for new-connection runs).
    pub tcp_tw_reuse: String,
    /// net.ipv4.ip_local_port_range.
    pub port_range: String,
}

fn uname() -> String {
    // SAFETY: a zeroed utsname is valid for uname(2) to fill.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_owned();
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {} {}", s(&u.sysname), s(&u.release), s(&u.machine))
}

fn sysctl(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Reads the machine's description.
pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    Machine {
        cpus: usize::try_from(online).unwrap_or(0),
        model,
        kernel: uname(),
        mem_total_kb,
        tcp_tw_reuse: sysctl("/proc/sys/net/ipv4/tcp_tw_reuse"),
        port_range: sysctl("/proc/sys/net/ipv4/ip_local_port_range"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id() as i32;
        assert!(status_kb(me, "VmRSS").expect("VmRSS") > 0);
        assert!(fd_count(me).expect("fds") >= 3);
        cpu_ticks(me).expect("stat");
        assert!(ctxt_switches(me).expect("ctxt switches").total() > 0);
        if let Some(ms) = cpu_runtime_ms(me) {
            assert!(ms > 0.0);
        }
        assert!(alive(me));
        assert!(processes().keys().any(|&(pid, _)| pid == me));
        assert!(machine().cpus >= 1);
    }
}
