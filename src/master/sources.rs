//! The descriptors the loop sleeps on, each named by what it stands for: adding a source of
//! events is one [`Source`] variant and one [`PollSet::add`].

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::control::ClientId;

/// What a descriptor in the poll set stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The signal self-pipe.
    Signals,
    /// The workers' notify socket.
    Notify,
    /// The control socket's listener.
    Control,
    /// A control client still sending its request.
    Client(ClientId),
    /// The metrics endpoint's listener.
    Metrics,
    /// A metrics client: a request to read, or an answer to write.
    MetricsClient(crate::metrics::ClientId),
    /// The adoption filter's notify fd of a worker tree.
    Adoption(super::adoption::TreeId),
    /// Listener `i`, watched for a hang-up only (a worker shut it down), never for the
    /// connections that arrive on it.
    Listener(usize),
}

/// A set of descriptors to wait on.
#[derive(Default)]
pub struct PollSet<'a> {
    sources: Vec<Source>,
    fds: Vec<PollFd<'a>>,
}

impl<'a> PollSet<'a> {
    /// Waits for `fd` to be readable, as `source`.
    pub fn add(&mut self, source: Source, fd: BorrowedFd<'a>) {
        self.add_for(source, fd, PollFlags::POLLIN);
    }

    /// Waits for `events` on `fd` (none: only what poll always reports, hang-ups and
    /// errors), as `source`.
    pub fn add_for(&mut self, source: Source, fd: BorrowedFd<'a>, events: PollFlags) {
        self.sources.push(source);
        self.fds.push(PollFd::new(fd, events));
    }

    /// Sleeps until a descriptor has an event or `until` (forever if `None`); returns the
    /// sources that have one. A signal that interrupts the sleep counts as [`Source::Signals`].
    ///
    /// # Errors
    /// `poll(2)` failed.
    pub fn wait(mut self, until: Option<Instant>) -> nix::Result<Vec<Source>> {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up: waking a little early would only spin until the deadline.
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut self.fds, timeout) {
            Ok(_) => Ok(self
                .sources
                .iter()
                .zip(&self.fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(s, _)| *s)
                .collect()),
            Err(Errno::EINTR) => Ok(vec![Source::Signals]),
            Err(e) => Err(e),
        }
    }
}
