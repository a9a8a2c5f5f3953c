//! A reload storm, whatever the manager: one reload asked for per second, each timed from
//! the request to the exit of the last worker that was alive just before it (pidfds taken
//! before the request, so no pid can be reused under us, and watched with poll).
//!
//! The caller runs the load around it; the manager is a [`Target`]: how to list its workers,
//! ask for a reload, and wait for the reloads to end. [`Sighup`] is master-process's.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::lines::{Log, Reloads, live_workers, settle};
use crate::master::Master;
use crate::process::{pidfds, wait_gone};
use crate::sys;

/// Longest wait for the old workers of one reload request.
pub const EXIT_WAIT: Duration = Duration::from_secs(60);

/// A manager to reload.
pub trait Target {
    /// Its workers now: their exits time the reload asked for next.
    fn workers(&mut self) -> BTreeSet<i32>;
    /// Whether a reload is in flight now, if that can be known.
    fn in_flight(&mut self) -> Option<bool>;
    /// Asks for reload number `index`, sent at `sent`.
    fn reload(&mut self, index: usize, sent: Instant) -> Result<(), String>;
    /// After the last request: waits until every reload asked for has ended; false if they
    /// had not within the target's own timeout.
    fn settle(&mut self) -> bool;
    /// Commands run to ask for reloads, by request index, once settled (pm2's).
    fn commands(&mut self) -> Vec<(usize, Cmd)> {
        Vec::new()
    }
}

/// What one command run to ask for a reload did (`pm2 reload app`).
#[derive(Debug, Clone)]
pub struct Cmd {
    /// From the request to its exit.
    pub took: Option<Duration>,
    /// Its exit code.
    pub code: Option<i32>,
    /// The manager refused it (a reload was already in progress).
    pub refused: bool,
    /// Its last lines.
    pub said: String,
}

/// One reload request.
#[derive(Debug)]
pub struct Request {
    /// Since the first request.
    pub at: Duration,
    /// A reload was in flight when it was sent, if known.
    pub in_flight: Option<bool>,
    /// The workers alive just before it.
    pub old: Vec<i32>,
    /// Until the last of them exited (`None`: not seen, or none to wait for).
    pub latency: Option<Duration>,
    /// The command that asked for it, if one did.
    pub cmd: Option<Cmd>,
}

impl Request {
    /// Whether the manager took it (pm2 refuses a reload while one is in progress).
    pub fn accepted(&self) -> bool {
        self.cmd.as_ref().is_none_or(|c| c.code == Some(0))
    }
}

/// Latencies (ms) of the accepted requests.
pub fn latencies<'a>(requests: impl IntoIterator<Item = &'a Request>) -> Vec<f64> {
    let accepted = requests.into_iter().filter(|r| r.accepted());
    accepted
        .filter_map(|r| Some(crate::measure::ms(r.latency?)))
        .collect()
}

/// master-process under SIGHUPs: its workers from its log and /proc, its reloads from its log.
pub struct Sighup<'a> {
    master: &'a Master,
    log: Arc<Log>,
    /// How long the reloads may take to end after the last SIGHUP.
    settle: Duration,
}

impl<'a> Sighup<'a> {
    /// `master`, its reloads given `settle` to end after the last SIGHUP.
    pub fn new(master: &'a Master, settle: Duration) -> Sighup<'a> {
        Sighup {
            master,
            log: Arc::clone(master.proc.log()),
            settle,
        }
    }
}

impl Target for Sighup<'_> {
    fn workers(&mut self) -> BTreeSet<i32> {
        let mut old = live_workers(&self.log.lines());
        old.extend(sys::children(self.master.pid()));
        old
    }

    fn in_flight(&mut self) -> Option<bool> {
        Some(Reloads::count(&self.log.lines()).in_flight())
    }

    fn reload(&mut self, _: usize, _: Instant) -> Result<(), String> {
        self.master.proc.signal(libc::SIGHUP)
    }

    fn settle(&mut self) -> bool {
        settle(&self.log, 0, self.settle)
    }
}

/// One storm.
#[derive(Debug)]
pub struct Storm {
    /// Every request, in order.
    pub requests: Vec<Request>,
    /// Every reload asked for had ended when the wait ended.
    pub settled: bool,
    /// From the first request until every reload had ended and its old workers exited (or
    /// their wait was given up).
    pub wall: Duration,
}

/// Sleeps until `at`.
pub fn sleep_until(at: Instant) {
    thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// Asks `target` for `count` reloads, one per second, then waits for them to end and, at most
/// `exit_grace` longer, for their old workers to exit.
pub fn run(target: &mut dyn Target, count: u64, exit_grace: Duration) -> Result<Storm, String> {
    let cancel = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut requests: Vec<Request> = Vec::new();
    let mut waiters: Vec<(Instant, JoinHandle<Option<Instant>>)> = Vec::new();
    for i in 0..count {
        sleep_until(t0 + Duration::from_secs(i));
        let fds = pidfds(target.workers());
        let in_flight = target.in_flight();
        let sent = Instant::now();
        target.reload(requests.len(), sent)?;
        let (old, fds): (Vec<i32>, Vec<OwnedFd>) = fds.into_iter().unzip();
        let cancel = Arc::clone(&cancel);
        waiters.push((
            sent,
            thread::spawn(move || wait_gone(fds, sent + EXIT_WAIT, &cancel)),
        ));
        let at = sent - t0;
        requests.push(Request {
            at,
            in_flight,
            old,
            latency: None,
            cmd: None,
        });
    }
    sleep_until(t0 + Duration::from_secs(count));
    let settled = target.settle();
    for (index, cmd) in target.commands() {
        if let Some(req) = requests.get_mut(index) {
            req.cmd = Some(cmd);
        }
    }
    // Old workers still draining get a little longer, then the waits are given up. A refused
    // request replaced nothing: its old workers are not waited for.
    let grace = Instant::now() + exit_grace;
    let pending = |w: &[(Instant, JoinHandle<_>)]| {
        w.iter()
            .zip(&requests)
            .any(|((_, w), r)| !w.is_finished() && r.accepted())
    };
    while Instant::now() < grace && pending(&waiters) {
        thread::sleep(Duration::from_millis(20));
    }
    cancel.store(true, Ordering::Relaxed);
    for (req, (sent, waiter)) in requests.iter_mut().zip(waiters) {
        let exited = waiter.join().unwrap_or(None);
        req.latency = exited.map(|t| t.saturating_duration_since(sent));
    }
    Ok(Storm {
        requests,
        settled,
        wall: t0.elapsed(),
    })
}
