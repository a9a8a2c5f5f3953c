//! The accept loop and the graceful drain.
//!
//! The main thread sits in `poll()` on every listener plus the SIGTERM pipe, so an outside
//! probe sees it waiting on the sockets. Each accepted connection gets its own thread.
//! On SIGTERM: close our listener descriptors (never `shutdown()`: the sockets are shared),
//! let connections finish with `Connection: close`, close idle ones after
//! `TW_DRAIN_IDLE_MS`, and exit 0 when none is left or after `TW_DRAIN_TIMEOUT_MS`.

use std::io::{self, ErrorKind};
use std::process;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::http;
use crate::knobs::{Knobs, Ready};
use crate::listeners::Listener;
use crate::ready;
use crate::signals::Term;

/// At most this many accepts per wake-up of one listener, so no listener starves another.
const ACCEPT_BURST: usize = 64;

/// State shared by the main thread and the connection threads.
pub struct Shared {
    /// Our pid, the body of every answer.
    pub pid: u32,
    /// How long a connection may stay idle once the drain started.
    pub drain_idle: Duration,
    /// The read timeout of connections: how often an idle one checks the drain.
    pub read_timeout: Duration,
    /// `TW_SYSCALLS_PER_REQUEST`.
    pub syscalls_per_request: u64,
    drain_timeout: Duration,
    drain_start: OnceLock<Instant>,
    open: Mutex<usize>,
    closed: Condvar,
}

impl Shared {
    /// The shared state for the whole process.
    pub fn new(pid: u32, knobs: &Knobs) -> &'static Shared {
        // Idle connections must notice the drain well within TW_DRAIN_IDLE_MS.
        let read_timeout =
            (knobs.drain_idle / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
        Box::leak(Box::new(Shared {
            pid,
            drain_idle: knobs.drain_idle,
            read_timeout,
            syscalls_per_request: knobs.syscalls_per_request,
            drain_timeout: knobs.drain_timeout,
            drain_start: OnceLock::new(),
            open: Mutex::new(0),
            closed: Condvar::new(),
        }))
    }

    /// Whether SIGTERM started the drain.
    pub fn draining(&self) -> bool {
        self.drain_start.get().is_some()
    }

    /// How long ago the drain started, if it did.
    pub fn drained_for(&self) -> Option<Duration> {
        self.drain_start.get().map(Instant::elapsed)
    }

    fn open(&self) -> MutexGuard<'_, usize> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts one open connection until dropped.
struct Counted(&'static Shared);

impl Counted {
    fn new(shared: &'static Shared) -> Counted {
        *shared.open() += 1;
        Counted(shared)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        *self.0.open() -= 1;
        self.0.closed.notify_all();
    }
}

/// Serves until SIGTERM, then drains and exits.
pub fn run(
    mut listeners: Vec<Listener>,
    term: &Term,
    ready_mode: Ready,
    shared: &'static Shared,
) -> ! {
    let pid = shared.pid;
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let details: Vec<String> = listeners
        .iter()
        .map(|l| format!("fd {} {}", l.fd, l.local))
        .collect();
    say!(
        "test-worker[{pid}]: listening on {} fd(s) {} ({})",
        listeners.len(),
        names.join(":"),
        details.join(", ")
    );
    ready::send(ready_mode, pid);
    // The moment the first wait on the sockets begins, for the benchmark's detection latency.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    say!(
        "test-worker[{pid}]: waiting at unix_us={}",
        since_epoch.as_micros()
    );

    // Listeners that stopped listening (someone shut the shared socket down) are left out
    // of the poll set instead of waking us forever.
    let mut alive = vec![true; listeners.len()];
    loop {
        let mut polled: Vec<usize> = (0..listeners.len()).filter(|&i| alive[i]).collect();
        let mut fds: Vec<libc::pollfd> = polled
            .iter()
            .map(|&i| pollfd(listeners[i].fd))
            .chain([pollfd(term.fd())])
            .collect();
        // SAFETY: fds is a valid array of fds.len() pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            say!("test-worker[{pid}]: poll failed: {err}");
            process::exit(1);
        }
        if fds.last().is_some_and(|t| t.revents != 0) && term.consume() {
            break;
        }
        for (slot, i) in polled.drain(..).enumerate() {
            if fds[slot].revents != 0 && !accept_burst(&listeners[i], shared) {
                alive[i] = false;
            }
        }
    }
    drain(&mut listeners, shared)
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Accepts what is pending; returns false if the listener no longer listens.
fn accept_burst(listener: &Listener, shared: &'static Shared) -> bool {
    for _ in 0..ACCEPT_BURST {
        match listener.accept() {
            Ok(conn) => {
                let counted = Counted::new(shared);
                let spawned = thread::Builder::new()
                    .name("conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _counted = counted;
                        http::serve(conn, shared);
                    });
                if let Err(e) = spawned {
                    say!("test-worker[{}]: cannot start a thread: {e}", shared.pid);
                }
            }
            // Another process sharing the listener won the race, or the client gave up.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                if e.kind() == ErrorKind::WouldBlock {
                    return true;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                say!(
                    "test-worker[{}]: fd {} ({}) no longer listens; leaving it",
                    shared.pid,
                    listener.fd,
                    listener.name
                );
                return false;
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                say!(
                    "test-worker[{}]: accept on fd {}: {e}",
                    shared.pid,
                    listener.fd
                );
                thread::sleep(Duration::from_millis(10));
                return true;
            }
        }
    }
    true
}

/// Stops accepting, waits for the connections, and exits 0.
pub fn drain(listeners: &mut Vec<Listener>, shared: &Shared) -> ! {
    let pid = shared.pid;
    let start = *shared.drain_start.get_or_init(Instant::now);
    for listener in listeners.drain(..) {
        listener.close();
    }
    say!("test-worker[{pid}]: draining");
    let deadline = start + shared.drain_timeout;
    let mut open = shared.open();
    while *open > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        open = shared
            .closed
            .wait_timeout(open, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    if *open > 0 {
        say!(
            "test-worker[{pid}]: drain timeout: {} connection(s) still open",
            *open
        );
    }
    say!("test-worker[{pid}]: exit");
    process::exit(0)
}
