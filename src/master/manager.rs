//! Telling the service manager (systemd) how the master is doing, when it was started with
//! `NOTIFY_SOCKET`: `READY=1` once the first workers serve; `RELOADING=1` with
//! `MONOTONIC_USEC` when a reload starts (what `Type=notify-reload` needs) and `READY=1` when
//! it ends; `STOPPING=1`; a one-line `STATUS=` with each; and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` from the master loop itself, so that a stuck loop stops the pings.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::notify;
use crate::supervisor::Notice;

/// The service manager the master reports to.
#[derive(Debug)]
pub struct ServiceManager {
    socket: OsString,
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
    warned: bool,
}

impl ServiceManager {
    /// The manager named by our `NOTIFY_SOCKET`, if any. The watchdog applies when
    /// `WATCHDOG_USEC` is set (and `WATCHDOG_PID`, if set, is our pid).
    pub fn from_env(now: Instant) -> Option<ServiceManager> {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        let ours = std::env::var("WATCHDOG_PID")
            .map_or(true, |p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && ours)
            .map(Duration::from_micros);
        let next_ping = watchdog.map(|w| now + w / 2);
        Some(ServiceManager {
            socket,
            watchdog,
            next_ping,
            warned: false,
        })
    }

    /// Sends `state` (`KEY=VALUE` lines); a failure is logged once.
    pub fn send(&mut self, state: &str) {
        match notify::send_to(&self.socket, state) {
            Ok(()) => debug!("service manager <- {}", state.replace('\n', " ")),
            Err(e) if !self.warned => {
                self.warned = true;
                warn!(
                    "cannot notify the service manager at {}: {e}",
                    self.socket.to_string_lossy()
                );
            }
            Err(_) => {}
        }
    }

    /// When the next watchdog ping is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Pings the watchdog if due.
    pub fn tick(&mut self, now: Instant) {
        if let (Some(at), Some(period)) = (self.next_ping, self.watchdog) {
            if at <= now {
                self.send("WATCHDOG=1");
                self.next_ping = Some(now + period / 2);
            }
        }
    }

    /// Reports a supervisor notice; `summary` is the one-line status.
    pub fn on_notice(&mut self, notice: &Notice, summary: &str) {
        let state = match notice {
            Notice::Running => format!("READY=1\nSTATUS={summary}"),
            Notice::ReloadStarted(_) => format!(
                "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={summary}",
                monotonic_usec()
            ),
            Notice::ReloadEnded(_) => format!("READY=1\nSTATUS={summary}"),
            Notice::Stopping => format!("STOPPING=1\nSTATUS={summary}"),
            Notice::Worker(_) => return,
        };
        self.send(&state);
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd wants it with `RELOADING=1`.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}
