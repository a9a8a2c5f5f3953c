//! What else used the CPUs during the run. On a 2-core machine anything else running skews
//! throughput figures, so the report says how much CPU other processes took.
//!
//! A thread samples every process in /proc twice a second and keeps, per process, the CPU
//! time it used since the run began (or since it was born). Bench's own descendants (wrk,
//! the servers, the master and its workers), the descendants of the daemons bench started
//! that detached themselves ([`adopt`]: pm2's daemon and its workers) and kernel threads
//! (which largely carry our own loopback traffic) are left out. Processes that live less than a sampling interval are
//! missed; the system-wide figures from /proc/stat are given beside it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::sys::{self, ProcCpu, SystemCpu};

const INTERVAL: Duration = Duration::from_millis(500);

type Key = (i32, u64);

/// Stops counting a pid given to [`adopt`] (once that daemon is gone, its pid may be
/// reused); what was already seen of it stays bench's own.
pub fn disown(pid: i32) {
    ADOPTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|&p| p != pid);
}

/// Detached daemons of ours (not descendants of bench), see [`adopt`].
static ADOPTED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Counts `pid` (a daemon bench started that detached itself, e.g. pm2's) and its
/// descendants as bench's own from now on.
pub fn adopt(pid: i32) {
    ADOPTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pid);
}

/// Other processes' CPU use over the run.
#[derive(Debug, Clone, Default)]
pub struct Others {
    /// CPU-seconds used by other user-space processes.
    pub cpu_s: f64,
    /// The busiest of them (at least 0.5 s): `name (pid)`, seconds.
    pub busiest: Vec<(String, f64)>,
    /// CPU-seconds of all processes (user + nice + system) per /proc/stat.
    pub system_s: f64,
    /// CPU-seconds in interrupts and softirqs per /proc/stat.
    pub irq_s: f64,
    /// Wall-clock seconds watched.
    pub wall_s: f64,
}

impl Others {
    /// Their share of all CPUs' time, in percent.
    pub fn share(&self, cpus: usize) -> f64 {
        self.cpu_s * 100.0 / (self.wall_s * cpus.max(1) as f64).max(f64::MIN_POSITIVE)
    }
}

/// A running watch; [`Watch::finish`] stops it.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<HashMap<Key, (String, u64)>>,
    sys_before: SystemCpu,
    started: Instant,
}

/// Whether `pid` descends from one of `roots` or is a kernel thread (child of kthreadd,
/// pid 2).
fn excluded(pid: i32, roots: &[i32], snap: &HashMap<i32, i32>) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == 2 || roots.contains(&p) {
            return true;
        }
        match snap.get(&p) {
            Some(&parent) if parent > 0 => p = parent,
            _ => return false,
        }
    }
    false
}

impl Watch {
    /// Starts watching.
    pub fn start() -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let baseline: HashMap<Key, u64> = sys::processes()
            .into_iter()
            .map(|(k, p)| (k, p.ticks))
            .collect();
        let handle = thread::spawn(move || {
            let me = std::process::id() as i32;
            let mut used: HashMap<Key, (String, u64)> = HashMap::new();
            let mut ours: HashSet<Key> = HashSet::new();
            loop {
                let done = flag.load(Ordering::Relaxed);
                let snap = sys::processes();
                let parents: HashMap<i32, i32> = snap.iter().map(|(k, p)| (k.0, p.ppid)).collect();
                let mut roots = vec![me];
                roots.extend(
                    ADOPTED
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .iter(),
                );
                for (key, ProcCpu { comm, ticks, .. }) in snap {
                    if ours.contains(&key) || excluded(key.0, &roots, &parents) {
                        // Once ours, always ours (a worker outlives its master briefly).
                        ours.insert(key);
                        continue;
                    }
                    let since = ticks.saturating_sub(baseline.get(&key).copied().unwrap_or(0));
                    used.insert(key, (comm, since));
                }
                if done {
                    return used;
                }
                thread::sleep(INTERVAL);
            }
        });
        Watch {
            stop,
            handle,
            sys_before: sys::system_cpu(),
            started: Instant::now(),
        }
    }

    /// Stops watching and sums up.
    pub fn finish(self) -> Others {
        self.stop.store(true, Ordering::Relaxed);
        let used = self.handle.join().unwrap_or_default();
        let sys = sys::system_cpu();
        let secs = |ticks: u64| sys::ticks_ms(ticks) / 1000.0;
        let mut busiest: Vec<(String, f64)> = used
            .iter()
            .map(|(key, (comm, ticks))| (format!("{comm} ({})", key.0), secs(*ticks)))
            .filter(|(_, s)| *s >= 0.5)
            .collect();
        busiest.sort_by(|a, b| b.1.total_cmp(&a.1));
        busiest.truncate(5);
        Others {
            cpu_s: secs(used.values().map(|(_, t)| t).sum()),
            busiest,
            system_s: secs(sys.busy.saturating_sub(self.sys_before.busy)),
            irq_s: secs(sys.other.saturating_sub(self.sys_before.other)),
            wall_s: self.started.elapsed().as_secs_f64(),
        }
    }
}
