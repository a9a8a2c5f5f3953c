//! SIGTERM through a self-pipe, so the main thread can wait for it in `poll()` next to the
//! listeners, or in a plain blocking read while it is not serving.

use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use signal_hook::consts::SIGTERM;

/// The read end of the SIGTERM self-pipe.
pub struct Term {
    rx: UnixStream,
    /// The write end, kept open when SIGTERM is ignored so that reads block instead of
    /// seeing end-of-file (otherwise it belongs to the signal handler).
    _unused_tx: Option<UnixStream>,
}

impl Term {
    /// Routes SIGTERM to the pipe, or ignores it (`SIG_IGN`, inherited by children we spawn)
    /// when `ignore` is set; the pipe then never becomes readable.
    pub fn install(ignore: bool) -> io::Result<Term> {
        let (rx, tx) = UnixStream::pair()?;
        let unused_tx = if ignore {
            set_ignored(SIGTERM)?;
            Some(tx)
        } else {
            signal_hook::low_level::pipe::register(SIGTERM, tx)?;
            None
        };
        Ok(Term {
            rx,
            _unused_tx: unused_tx,
        })
    }

    /// The descriptor to poll for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Consumes the pending wake-ups after `poll()` reported the pipe readable.
    pub fn consume(&self) -> bool {
        let mut bytes = [0u8; 64];
        matches!((&self.rx).read(&mut bytes), Ok(n) if n > 0)
    }

    /// Blocks until SIGTERM (true) or until `timeout` has passed (false); `None` waits forever.
    /// This is a read, not a poll: a readiness probe must not mistake it for serving.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return false,
                },
                None => None,
            };
            if self.rx.set_read_timeout(left).is_err() {
                return false;
            }
            let mut bytes = [0u8; 64];
            match (&self.rx).read(&mut bytes) {
                Ok(n) if n > 0 => return true,
                Ok(_) => return false,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// Sets `signal` to `SIG_IGN`.
pub fn set_ignored(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for SIGTERM and SIGPIPE, and installing it
    // cannot break other code's assumptions at this point of start-up.
    if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Prints `test-worker[PID]: got SIGUSR2` on every SIGUSR2 (tests check that the master
/// forwards it) instead of dying of it.
pub fn log_usr2(pid: u32) -> io::Result<()> {
    let (mut rx, tx) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGUSR2, tx)?;
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while matches!(rx.read(&mut byte), Ok(1)) {
            say!("test-worker[{pid}]: got SIGUSR2");
        }
    });
    Ok(())
}
