//! Signals: our own [`Signal`] type, and the self-pipe that turns delivered signals into
//! readable events for the master's `poll(2)` loop.
//!
//! Handlers only set a flag and write a byte to a pipe (signal-hook's async-signal-safe
//! actions); all the work happens in the loop. Nothing is blocked in the signal mask, so
//! workers inherit no blocked signals, and in library mode `init()` leaves the mask alone.

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::SigId;

/// The signals master-process deals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// SIGHUP: reload.
    Hangup,
    /// SIGINT: stop (Ctrl-C).
    Interrupt,
    /// SIGQUIT.
    Quit,
    /// SIGKILL: cannot be caught.
    Kill,
    /// SIGUSR1.
    User1,
    /// SIGUSR2: forwarded to workers (profiling, as in the reference).
    User2,
    /// SIGTERM: graceful stop.
    Terminate,
    /// SIGCHLD: a child changed state.
    Child,
    /// SIGCONT.
    Continue,
    /// SIGWINCH.
    WindowChange,
    /// SIGTTIN.
    TtyIn,
    /// SIGTTOU.
    TtyOut,
}

/// The signals the master handles (and blocks around an upgrade's exec).
pub const MASTER_SIGNALS: [Signal; 5] = [
    Signal::Child,
    Signal::Terminate,
    Signal::Interrupt,
    Signal::Hangup,
    Signal::User2,
];

const ALL: [Signal; 12] = [
    Signal::Hangup,
    Signal::Interrupt,
    Signal::Quit,
    Signal::Kill,
    Signal::User1,
    Signal::User2,
    Signal::Terminate,
    Signal::Child,
    Signal::Continue,
    Signal::WindowChange,
    Signal::TtyIn,
    Signal::TtyOut,
];

impl Signal {
    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hangup => libc::SIGHUP,
            Signal::Interrupt => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Kill => libc::SIGKILL,
            Signal::User1 => libc::SIGUSR1,
            Signal::User2 => libc::SIGUSR2,
            Signal::Terminate => libc::SIGTERM,
            Signal::Child => libc::SIGCHLD,
            Signal::Continue => libc::SIGCONT,
            Signal::WindowChange => libc::SIGWINCH,
            Signal::TtyIn => libc::SIGTTIN,
            Signal::TtyOut => libc::SIGTTOU,
        }
    }

    /// The signal with this number, if it is one of ours.
    pub fn from_number(n: i32) -> Option<Signal> {
        ALL.into_iter().find(|s| s.number() == n)
    }

    /// The conventional name, e.g. `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::User1 => "SIGUSR1",
            Signal::User2 => "SIGUSR2",
            Signal::Terminate => "SIGTERM",
            Signal::Child => "SIGCHLD",
            Signal::Continue => "SIGCONT",
            Signal::WindowChange => "SIGWINCH",
            Signal::TtyIn => "SIGTTIN",
            Signal::TtyOut => "SIGTTOU",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of any signal number, for exit statuses (`SIGSEGV`, or `signal 40`).
pub fn signal_name(n: i32) -> String {
    match nix::sys::signal::Signal::try_from(n) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {n}"),
    }
}

impl FromStr for Signal {
    type Err = String;

    /// Accepts `HUP`, `SIGHUP`, `sighup` or `1`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(|| format!("unsupported signal number {n}"));
        }
        let upper = t.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        ALL.into_iter()
            .find(|sig| &sig.name()[3..] == name)
            .ok_or_else(|| format!("unknown signal {t:?}; expected a name such as HUP or SIGUSR2"))
    }
}

/// Delivered signals, made readable by `poll(2)`.
///
/// Each watched signal sets its own flag, then writes a byte to a shared socket pair. The
/// loop polls [`SignalPipe::fd`]; when readable, [`SignalPipe::drain`] empties the pipe
/// first and then reads the flags, so a signal that arrives meanwhile wakes the loop again.
#[derive(Debug)]
pub struct SignalPipe {
    read: UnixStream,
    flags: Vec<(Signal, Arc<AtomicBool>)>,
    ids: Vec<SigId>,
}

impl SignalPipe {
    /// Installs handlers for `signals`.
    pub fn install(signals: &[Signal]) -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut pipe = SignalPipe {
            read,
            flags: Vec::new(),
            ids: Vec::new(),
        };
        for &sig in signals {
            let flag = Arc::new(AtomicBool::new(false));
            // Registration order is execution order: the flag is set before the byte is written.
            pipe.ids.push(signal_hook::flag::register(
                sig.number(),
                Arc::clone(&flag),
            )?);
            let w: OwnedFd = write.try_clone()?.into();
            pipe.ids
                .push(signal_hook::low_level::pipe::register(sig.number(), w)?);
            pipe.flags.push((sig, flag));
        }
        Ok(pipe)
    }

    /// The read end, to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals delivered since the last call, in the order they were installed.
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
        self.flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(sig, _)| *sig)
            .collect()
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_short_forms_parse() {
        assert_eq!("HUP".parse::<Signal>().unwrap(), Signal::Hangup);
        assert_eq!("sigusr2".parse::<Signal>().unwrap(), Signal::User2);
        assert_eq!("15".parse::<Signal>().unwrap(), Signal::Terminate);
        assert!("SIGFOO".parse::<Signal>().is_err());
        assert!("999".parse::<Signal>().is_err());
        for s in ALL {
            assert_eq!(Signal::from_number(s.number()), Some(s));
            assert_eq!(s.name().parse::<Signal>().unwrap(), s);
        }
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
    }
}
