//! What every section measures the same way: a process's CPU time and wakeups between two
//! instants, and a loadgen load.

use std::net::SocketAddr;
use std::time::Duration;

use loadgen::Mode;

use crate::sys::{self, Switches};

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Turns an I/O error about the master into a section error.
pub fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("master's {what}: {e}")
}

/// A process's CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    ticks: u64,
    runtime_ms: Option<f64>,
    switches: Switches,
}

impl Cpu {
    /// Reads them from /proc.
    pub fn read(pid: i32) -> Result<Cpu, String> {
        Ok(Cpu {
            ticks: sys::cpu_ticks(pid).map_err(io("/proc stat"))?,
            runtime_ms: sys::cpu_runtime_ms(pid),
            switches: sys::ctxt_switches(pid).map_err(io("context switches"))?,
        })
    }

    /// The context switches.
    pub fn switches(&self) -> Switches {
        self.switches
    }

    /// What the process used since it started.
    pub fn since_start(&self) -> Spent {
        Spent {
            ticks: self.ticks,
            runtime_ms: self.runtime_ms,
            switches: self.switches,
        }
    }

    /// What the process used since `earlier`.
    pub fn since(&self, earlier: &Cpu) -> Spent {
        Spent {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            runtime_ms: earlier.runtime_ms.zip(self.runtime_ms).map(|(a, b)| b - a),
            switches: self.switches.since(earlier.switches),
        }
    }
}

/// CPU time and wakeups between two [`Cpu`] readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// The scheduler's exact runtime (`se.sum_exec_runtime`), if the kernel shows it.
    pub runtime_ms: Option<f64>,
    /// Context switches: wakeups.
    pub switches: Switches,
}

impl Spent {
    /// utime + stime, in ms (moves by whole clock ticks).
    pub fn ticks_ms(&self) -> f64 {
        sys::ticks_ms(self.ticks)
    }

    /// The exact runtime if known, else utime + stime.
    pub fn cpu_ms(&self) -> f64 {
        self.runtime_ms.unwrap_or(self.ticks_ms())
    }
}

/// Starts loadgen against `addr` (2 s deadline per request) and waits for its first 200
/// requests.
pub fn load(addr: SocketAddr, connections: usize, mode: Mode) -> Result<loadgen::Load, String> {
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(addr));
    cfg.connections = connections;
    cfg.mode = mode;
    cfg.request_timeout = Duration::from_secs(2);
    let load = loadgen::start(cfg);
    if !load.wait_for_requests(200, Duration::from_secs(10)) {
        return Err(format!(
            "the load did not reach 200 requests in 10 s: {}",
            load.stop()
        ));
    }
    Ok(load)
}

/// The report's key and name of a loadgen mode.
pub fn mode_key(mode: Mode) -> &'static str {
    match mode {
        Mode::Close => "close",
        Mode::KeepAlive => "keepalive",
    }
}

/// The report's name of a loadgen mode.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Close => "new connection",
        Mode::KeepAlive => "keep-alive",
    }
}
