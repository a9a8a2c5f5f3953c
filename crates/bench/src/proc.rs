//! Reading `/proc`: a process's memory, CPU time, threads, fds and children; the machine.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;

/// A `/proc/PID/status` line's value (`VmRSS:\t 1234 kB` gives `1234 kB`).
pub fn status_field(pid: i32, key: &str) -> io::Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// A `/proc/PID/status` value in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: i32, key: &str) -> io::Result<u64> {
    let value = status_field(pid, key)?;
    value
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("bad {key} value {value:?}")))
}

/// The number of threads.
pub fn threads(pid: i32) -> io::Result<u64> {
    let value = status_field(pid, "Threads")?;
    value
        .parse()
        .map_err(|_| io::Error::other(format!("bad Threads value {value:?}")))
}

/// The fields of `/proc/PID/stat` after the command name (field 3, the state, is index 0).
fn stat_fields(path: &str) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(path)?;
    let end = text
        .rfind(')')
        .ok_or_else(|| io::Error::other(format!("bad {path}")))?;
    Ok(text[end + 1..]
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn stat_u64(fields: &[String], index: usize) -> u64 {
    fields.get(index).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// The process group of a process.
pub fn pgid(pid: i32) -> io::Result<i32> {
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    f.get(2)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad /proc/{pid}/stat")))
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> io::Result<u64> {
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    Ok(stat_u64(&f, 11) + stat_u64(&f, 12))
}

/// CPU time actually run by every thread of a process, in ms with ns precision, from
/// `se.sum_exec_runtime` in `/proc/PID/task/*/sched` (`None` if the kernel does not show it).
/// Exact where utime + stime only move by whole clock ticks.
pub fn cpu_runtime_ms(pid: i32) -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("sched")) else {
            continue;
        };
        let value = text
            .lines()
            .find(|l| l.starts_with("se.sum_exec_runtime"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(ms) = value {
            total += ms;
            found = true;
        }
    }
    found.then_some(total)
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

/// Clock ticks per second.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Ticks to milliseconds.
pub fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / clk_tck() as f64
}

/// The number of open file descriptors.
pub fn fd_count(pid: i32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The children of a process, from `/proc/PID/task/*/children`.
pub fn children(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(&format!("/proc/{pid}/stat"))
        .map(|f| f.first().is_some_and(|s| s != "Z"))
        .unwrap_or(false)
}

/// The command line, arguments joined by spaces ("" if gone).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
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
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(
            (pid, num(19)),
            ProcCpu {
                comm: text[open + 1..close].to_owned(),
                ppid: f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                ticks: num(11) + num(12),
            },
        );
    }
    out
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
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
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
        assert!(threads(me).expect("Threads") >= 1);
        assert!(fd_count(me).expect("fds") >= 3);
        cpu_ticks(me).expect("stat");
        assert!(ctxt_switches(me).expect("ctxt switches").total() > 0);
        if let Some(ms) = cpu_runtime_ms(me) {
            assert!(ms > 0.0);
        }
        assert!(alive(me));
        assert!(machine().cpus >= 1);
    }
}
