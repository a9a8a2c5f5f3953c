//! How the master learns that a new worker serves.
//!
//! A worker is *ready* when the master may retire the worker it replaces. Each
//! [`ReadyMode`] is a different source of that fact:
//!
//! - [`ReadyMode::Listening`] (the default): the master sees, in `/proc`, a thread of the
//!   worker (or of its descendants) waiting on the listening socket, or connections it has
//!   accepted from it ([`listening`]). No change to the app: the reference's semantics
//!   (Node's `listening` event) for any server.
//! - [`ReadyMode::Notify`]: the worker says so, with `READY=1` on `NOTIFY_SOCKET` (the
//!   systemd protocol, see [`crate::notify`]). Exact, but the app must speak it.
//! - [`ReadyMode::Delay`]: the worker stayed alive for a while (einhorn's and
//!   Server::Starter's timer). Works with anything, proves little.
//!
//! Each mode is the only source of readiness: a `READY=1` counts under `notify` alone. Some
//! servers send it before they can serve (gunicorn's arbiter, before its workers have loaded
//! the app), and a new worker believed ready too soon retires the old ones for a release
//! that may never serve. The supervisor turns the mode into deadlines
//! ([`ReadyMode::delay`]); sources of readiness that need the OS (the notify socket, the
//! `/proc` probe) live in the master loop and reach the supervisor as events.

pub mod listening;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::TimeSpan;
use crate::error::{Error, Result};

/// With several listeners, which ones a worker must serve to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coverage {
    /// Every listener (the default).
    #[default]
    All,
    /// At least one.
    Any,
}

/// How the master decides that a new worker is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// The master sees the worker serve the listening sockets (`/proc`).
    Listening(Coverage),
    /// The worker sends `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// The worker is ready once it has stayed alive this long.
    Delay(Duration),
}

impl ReadyMode {
    /// The time after start at which a worker that is still alive counts as ready, if any.
    pub fn delay(self) -> Option<Duration> {
        match self {
            ReadyMode::Delay(d) => Some(d),
            ReadyMode::Notify | ReadyMode::Listening(_) => None,
        }
    }

    /// What to tell a user whose worker was not ready in time, in this mode.
    pub fn timeout_hint(self) -> &'static str {
        match self {
            ReadyMode::Notify => "--ready notify: it must send READY=1 on NOTIFY_SOCKET",
            ReadyMode::Listening(_) => {
                "--ready listening: it was never seen waiting on the listening socket(s); a \
                 server using io_uring, or one that changed its user, cannot be seen: use \
                 --ready notify or --ready delay:DURATION"
            }
            ReadyMode::Delay(_) => "--ready delay: it did not stay alive long enough",
        }
    }
}

impl Default for ReadyMode {
    fn default() -> Self {
        ReadyMode::Listening(Coverage::All)
    }
}

impl FromStr for ReadyMode {
    type Err = Error;

    /// Parses `listening` (`listening:all`), `listening:any`, `notify` or `delay:DUR`
    /// (`delay:2s`, `delay:500`).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "notify" => return Ok(ReadyMode::Notify),
            "listening" | "listening:all" => return Ok(ReadyMode::Listening(Coverage::All)),
            "listening:any" => return Ok(ReadyMode::Listening(Coverage::Any)),
            _ => {}
        }
        if let Some(d) = t.strip_prefix("delay:") {
            return TimeSpan::parse("--ready", d).map(ReadyMode::Delay);
        }
        Err(Error::invalid(
            "--ready",
            s,
            "expected `notify` or `delay:DURATION` (e.g. delay:2s)",
        ))
    }
}

impl fmt::Display for ReadyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyMode::Listening(Coverage::All) => f.write_str("listening"),
            ReadyMode::Listening(Coverage::Any) => f.write_str("listening:any"),
            ReadyMode::Notify => f.write_str("notify"),
            ReadyMode::Delay(d) => write!(f, "delay:{}", humantime::format_duration(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        assert_eq!("notify".parse::<ReadyMode>().unwrap(), ReadyMode::Notify);
        let d = "delay:1500".parse::<ReadyMode>().unwrap();
        assert_eq!(d, ReadyMode::Delay(Duration::from_millis(1500)));
        assert_eq!(d.to_string(), "delay:1s 500ms");
        assert_eq!(d.to_string().parse::<ReadyMode>().unwrap(), d);
        assert_eq!(
            "listening".parse::<ReadyMode>().unwrap(),
            ReadyMode::Listening(Coverage::All)
        );
        assert_eq!(
            "LISTENING:any".parse::<ReadyMode>().unwrap().to_string(),
            "listening:any"
        );
        assert_eq!(ReadyMode::default(), ReadyMode::Listening(Coverage::All));
        assert!("listen".parse::<ReadyMode>().is_err());
        assert!("delay:-1".parse::<ReadyMode>().is_err());
    }
}
