//! The master's side of adoption (see [`crate::adopt`]): the sockets it holds for the
//! engine, one notifier per worker tree, and what it tells the user.
//!
//! Every worker tree gets the filter when it is spawned; its notify fd is polled by the
//! loop until no process of the tree is left (`POLLHUP`), not merely until the worker exits:
//! a daemonised descendant still binds through it. A claimed `PORT` replaces the listener in
//! the [`ListenerSet`], so that `LISTEN_FDS`, readiness, status and an upgrade all see the
//! socket the app asked for.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::{debug, info, warn};

use crate::adopt::{
    self, ChildFilter, Decision, HeldAddr, HeldSockets, Notifier, Received, Syscall,
};
use crate::socket::{ListenerSet, Origin};
use crate::worker::Pid;

/// Calls handled per wake and tree at most: a tree that binds in a loop cannot starve the
/// loop (the rest wait for the next turn).
const BURST: usize = 64;

/// What the loop must hear about after a notifier was handled.
#[derive(Debug)]
pub enum Event {
    /// A worker's bind claimed listener `listener` (`PORT` alone): its socket changed.
    Claimed {
        /// The listener.
        listener: usize,
        /// The new socket.
        fd: OwnedFd,
        /// What it is bound to.
        addr: std::net::SocketAddr,
    },
    /// A worker's bind of a held address was refused.
    Refused {
        /// The worker heading the tree.
        worker: Pid,
        /// Why, in one line.
        reason: String,
    },
}

/// A worker tree under the filter, named for as long as any process of it lives: its
/// worker's pid may be reused by a new worker meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeId(u64);

/// One worker tree under the filter.
#[derive(Debug)]
struct Tree {
    id: TreeId,
    /// The worker that heads it, until it is reaped (what it left behind may live on).
    head: Option<Pid>,
    notifier: Notifier,
}

/// Adoption for the master's listeners.
#[derive(Debug)]
pub struct Adoption {
    held: HeldSockets,
    trees: Vec<Tree>,
    /// A unix listener is held: `unlink` is trapped too.
    trap_unlink: bool,
    /// What was logged already: each line once, whichever worker it was about.
    told: HashSet<String>,
    /// Binds adopted, by listener.
    adopted: Vec<u64>,
    next_tree: u64,
}

impl Adoption {
    /// Adoption of `listeners`, or why it is off (the line logged).
    pub fn new(listeners: &ListenerSet) -> Result<Adoption, String> {
        if let Err(why) = adopt::support() {
            warn!(
                "adoption is off: {why}; workers get the sockets with LISTEN_FDS only (an app \
                 that binds its port itself fails with EADDRINUSE)"
            );
            return Err(why.to_string());
        }
        let mut adoption = Adoption {
            held: HeldSockets::new(),
            trees: Vec::new(),
            trap_unlink: false,
            told: HashSet::new(),
            adopted: vec![0; listeners.iter().count()],
            next_tree: 0,
        };
        for (i, l) in listeners.iter().enumerate() {
            if let Err(e) = adoption.hold(i, listeners) {
                warn!(
                    "adoption: cannot hold {}: {e}; an app's own bind of it is not adopted",
                    l.local()
                );
            }
        }
        Ok(adoption)
    }

    /// Holds (again) listener `i` of `listeners` for the engine.
    pub fn hold(&mut self, i: usize, listeners: &ListenerSet) -> io::Result<()> {
        let Some(l) = listeners.get(i) else {
            return Ok(());
        };
        self.held.hold(i, l.fd().try_clone_to_owned()?)?;
        self.held
            .set_claimable(i, matches!(l.origin(), Origin::Port(_)));
        self.trap_unlink = self
            .held
            .held()
            .iter()
            .any(|h| matches!(h.addr, HeldAddr::Unix { .. }));
        Ok(())
    }

    /// The filter for the next worker, and the master's end of its channel.
    pub fn filter(&self) -> io::Result<(ChildFilter, OwnedFd)> {
        ChildFilter::new(self.trap_unlink)
    }

    /// Worker `worker` was spawned with the filter whose channel is `channel`.
    pub fn spawned(&mut self, worker: Pid, channel: OwnedFd) {
        match adopt::receive(channel.as_fd()) {
            Ok(Received::Listener(fd)) => match Notifier::new(fd) {
                Ok(notifier) => self.watch(Some(worker), notifier),
                Err(e) => self.tell(
                    Some(worker),
                    None,
                    format!("adoption: cannot watch a worker: {e}"),
                ),
            },
            Ok(Received::Unavailable(why)) => self.tell(
                Some(worker),
                None,
                format!("adoption is off for this worker (and those like it): {why}"),
            ),
            Err(e) => self.tell(
                Some(worker),
                None,
                format!("adoption: no word from a worker: {e}"),
            ),
        }
    }

    fn watch(&mut self, head: Option<Pid>, notifier: Notifier) {
        self.next_tree += 1;
        self.trees.push(Tree {
            id: TreeId(self.next_tree),
            head,
            notifier,
        });
    }

    /// Worker `pid` was reaped: its tree (what it left behind) heads nowhere now, and a new
    /// worker that gets the same pid is not taken for it.
    pub fn exited(&mut self, pid: Pid) {
        for t in self.trees.iter_mut().filter(|t| t.head == Some(pid)) {
            t.head = None;
        }
    }

    /// The notify fds to poll, one per tree.
    pub fn fds(&self) -> impl Iterator<Item = (TreeId, BorrowedFd<'_>)> {
        self.trees.iter().map(|t| (t.id, t.notifier.fd()))
    }

    /// Handles what tree `id` asks; drops the tree once no process of it is left. A refusal
    /// in a tree whose worker is gone is told, but fails no worker.
    pub fn handle(&mut self, id: TreeId) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(pos) = self.trees.iter().position(|t| t.id == id) else {
            return events;
        };
        let head = self.trees[pos].head;
        let mut handled = 0;
        while handled < BURST {
            let Some(h) = self.trees[pos].notifier.handle(&mut self.held) else {
                break;
            };
            handled += 1;
            match h.decision {
                Decision::Adopt { listener } | Decision::AlreadyAdopted { listener } => {
                    if h.syscall == Syscall::Bind {
                        if let Some(n) = self.adopted.get_mut(listener) {
                            *n += 1;
                        }
                    }
                }
                Decision::Claim { listener, addr, .. }
                    if !matches!(h.answer, adopt::Answer::Undone(_)) =>
                {
                    if let Some(fd) = self
                        .held
                        .fd(listener)
                        .and_then(|fd| fd.try_clone_to_owned().ok())
                    {
                        if let Some(n) = self.adopted.get_mut(listener) {
                            *n += 1;
                        }
                        info!("PORT: the app binds {addr}; serving exactly that from now on");
                        events.push(Event::Claimed { listener, fd, addr });
                    }
                }
                Decision::Refuse { reason, .. } => {
                    let reason = reason.to_string();
                    self.tell(head, Some(h.tid), format!("bind refused: {reason}"));
                    if let Some(worker) = head {
                        events.push(Event::Refused { worker, reason });
                    }
                }
                Decision::Claim { .. }
                | Decision::KeepListen { .. }
                | Decision::KeepUnlink { .. }
                | Decision::Continue => {}
            }
        }
        if handled == 0 && hung_up(self.trees[pos].notifier.fd()) {
            self.trees.remove(pos);
        }
        events
    }

    /// A worker served: the addresses of `PORT` are settled.
    pub fn settle(&mut self) {
        self.held.settle();
    }

    /// Whether some `PORT` listener is still claimable.
    pub fn unsettled(&self) -> bool {
        self.held.held().iter().any(|h| h.claimable)
    }

    /// Binds adopted so far, by listener.
    pub fn adopted(&self) -> &[u64] {
        &self.adopted
    }

    /// Logs `line` about worker tree `worker` (thread `tid` of it) as a warning, the first
    /// time only: every worker of a release hits the same refusal, and a crash loop repeats it.
    /// The worker and the thread are fields of the line, not part of what is compared.
    fn tell(&mut self, worker: Option<Pid>, tid: Option<u32>, line: String) {
        if self.told.contains(&line) {
            debug!(pid = worker, tid, "{line}");
        } else {
            warn!(pid = worker, tid, "{line}");
            self.told.insert(line);
        }
    }

    /// The O_NONBLOCK mode each listener's adopters fixed, by listener.
    pub fn nonblock(&self, i: usize) -> Option<bool> {
        self.held
            .held()
            .iter()
            .find(|h| h.listener == i)
            .and_then(|h| h.nonblock)
    }

    /// Restores what an earlier image knew: the notify fd of each worker tree, and each
    /// listener's O_NONBLOCK mode.
    pub fn restore(&mut self, trees: Vec<(Option<Pid>, OwnedFd)>, nonblock: &[Option<bool>]) {
        for (head, fd) in trees {
            match Notifier::new(fd) {
                Ok(notifier) => self.watch(head, notifier),
                Err(e) => warn!("adoption: cannot watch a worker tree again: {e}"),
            }
        }
        for (i, &mode) in nonblock.iter().enumerate() {
            self.held.restore_nonblock(i, mode);
        }
    }

    /// The worker trees' notify fds, for a handover.
    pub fn handover(&self) -> Vec<(Option<Pid>, i32)> {
        self.trees
            .iter()
            .map(|t| (t.head, t.notifier.fd().as_raw_fd()))
            .collect()
    }
}

/// Whether `fd` reports a hang-up with nothing to read.
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut pfd, PollTimeout::ZERO).unwrap_or(0) > 0
        && pfd[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP) && !r.contains(PollFlags::POLLIN))
}
