//! The worker's handle: the inherited listeners, `ready()`, the indexes, the stop signal.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use nix::sys::socket::{self, AddressFamily, SockaddrLike, SockaddrStorage, sockopt};

use super::{Standalone, Stop};
use crate::error::{Error, Result};
use crate::socket::{self as sockets, ListenerSpec, UNNAMED};

/// This process's side of master-process: returned by [`init()`](crate::init) in a worker,
/// or when the app runs as one process.
///
/// Listeners are taken once each, by name or by position; a taken listener is
/// close-on-exec, so the worker's own children do not inherit it.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    reload_index: u64,
    slots: Vec<Slot>,
    standalone: Option<Standalone>,
    socket_mode: u32,
}

/// One listener: inherited (a descriptor), or to bind on demand (standalone).
#[derive(Debug)]
struct Slot {
    name: String,
    fd: Option<OwnedFd>,
    spec: Option<ListenerSpec>,
    taken: bool,
}

/// Which listener: by name (`LISTEN_FDNAMES`, `web` in `web=8080`) or position (0 is fd 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKey<'a> {
    /// By name.
    Name(&'a str),
    /// By position.
    Index(usize),
}

impl<'a> From<&'a str> for ListenerKey<'a> {
    fn from(name: &'a str) -> Self {
        ListenerKey::Name(name)
    }
}

impl From<usize> for ListenerKey<'_> {
    fn from(index: usize) -> Self {
        ListenerKey::Index(index)
    }
}

impl std::fmt::Display for ListenerKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerKey::Name(n) => write!(f, "listener {n:?}"),
            ListenerKey::Index(i) => write!(f, "listener #{i}"),
        }
    }
}

/// A listening socket of either kind.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream.
    Unix(UnixListener),
}

impl Worker {
    /// Takes the sockets passed by the master: `LISTEN_FDS`, strictly for this pid.
    pub(crate) fn inherit() -> Result<Worker> {
        let var = |name: &str| std::env::var(name).ok();
        use crate::env::{RELOAD_INDEX, WORKER_INDEX};
        let slots = sockets::take_listen_fds()?
            .into_iter()
            .map(|(name, fd)| Slot {
                name: name.unwrap_or_else(|| UNNAMED.into()),
                fd: Some(fd),
                spec: None,
                taken: false,
            })
            .collect();
        let number = |name: &str| -> Result<u64> {
            var(name).map_or(Ok(0), |v| {
                v.parse()
                    .map_err(|_| Error::invalid(name, v, "expected a number"))
            })
        };
        Ok(Worker {
            index: number(WORKER_INDEX)? as usize,
            reload_index: number(RELOAD_INDEX)?,
            slots,
            standalone: None,
            socket_mode: 0o664,
        })
    }

    /// A handle for an app that runs as one process: listeners are bound when taken.
    pub(crate) fn alone(why: Standalone, config: &crate::config::Config) -> Result<Worker> {
        let slots = config
            .listeners()
            .iter()
            .map(|spec| Slot {
                name: spec.name.clone().unwrap_or_else(|| UNNAMED.into()),
                fd: None,
                spec: Some(spec.clone()),
                taken: false,
            })
            .collect();
        let socket_mode = config.socket_mode;
        Ok(Worker {
            index: 0,
            reload_index: 0,
            slots,
            standalone: Some(why),
            socket_mode,
        })
    }

    /// Takes a TCP listener.
    ///
    /// # Errors
    /// No such listener, already taken, or not a TCP socket (it then stays available).
    ///
    /// ```no_run
    /// let mut worker = master_process::init();
    /// let listener: std::net::TcpListener = worker.tcp_listener("web")?;
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn tcp_listener<'a>(&mut self, key: impl Into<ListenerKey<'a>>) -> Result<TcpListener> {
        let is_tcp = |f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6);
        self.take_kind(key.into(), is_tcp, "a TCP")
            .map(TcpListener::from)
    }

    /// Takes a unix stream listener.
    ///
    /// # Errors
    /// No such listener, already taken, or not a unix socket (it then stays available).
    ///
    /// ```no_run
    /// let mut worker = master_process::init();
    /// let listener: std::os::unix::net::UnixListener = worker.unix_listener(0)?;
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn unix_listener<'a>(&mut self, key: impl Into<ListenerKey<'a>>) -> Result<UnixListener> {
        let is_unix = |f| f == AddressFamily::Unix;
        self.take_kind(key.into(), is_unix, "a unix")
            .map(UnixListener::from)
    }

    /// Takes a listener, whatever its kind.
    ///
    /// # Errors
    /// No such listener, or already taken.
    ///
    /// ```no_run
    /// let mut worker = master_process::init();
    /// match worker.listener(0)? {
    ///     master_process::Listener::Tcp(l) => { let _ = l; }
    ///     master_process::Listener::Unix(l) => { let _ = l; }
    /// }
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn listener<'a>(&mut self, key: impl Into<ListenerKey<'a>>) -> Result<Listener> {
        let key = key.into();
        let any = |f| {
            matches!(
                f,
                AddressFamily::Unix | AddressFamily::Inet | AddressFamily::Inet6
            )
        };
        let fd = self.take_kind(key, any, "a TCP or unix")?;
        Ok(match family(&fd) {
            Some(AddressFamily::Unix) => Listener::Unix(UnixListener::from(fd)),
            _ => Listener::Tcp(TcpListener::from(fd)),
        })
    }

    /// The names of the listeners, in order (`unknown` for unnamed ones).
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// for name in worker.listener_names() {
    ///     println!("{name}");
    /// }
    /// ```
    pub fn listener_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Tells the master this worker serves: `READY=1` on `NOTIFY_SOCKET`, with the
    /// master-process version this worker was built with. Call it once the listeners are
    /// taken and the app can answer. Does nothing when the app runs as one process.
    ///
    /// # Errors
    /// The notify socket cannot be reached.
    ///
    /// ```no_run
    /// let mut worker = master_process::init();
    /// let listener = worker.tcp_listener(0)?;
    /// worker.ready()?;
    /// # let _ = listener;
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn ready(&self) -> Result<()> {
        if self.standalone.is_some() {
            return Ok(());
        }
        let state = format!(
            "READY=1\nMASTER_PROCESS_VERSION={}",
            env!("CARGO_PKG_VERSION")
        );
        crate::notify::notify(&state)
            .map_err(|e| Error::io("cannot send READY=1 to the master", e))?;
        Ok(())
    }

    /// This worker's slot, `WORKER_INDEX` (0 when the app runs as one process).
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// println!("worker #{}", worker.worker_index());
    /// ```
    pub fn worker_index(&self) -> usize {
        self.index
    }

    /// How many reloads came before this worker, `RELOAD_INDEX` (0 when the app runs as one
    /// process).
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// println!("generation {}", worker.reload_index());
    /// ```
    pub fn reload_index(&self) -> u64 {
        self.reload_index
    }

    /// Why the app runs as one process, or `None` under a master.
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// if let Some(why) = worker.standalone() {
    ///     eprintln!("running alone: {why:?}");
    /// }
    /// ```
    pub fn standalone(&self) -> Option<Standalone> {
        self.standalone
    }

    /// The graceful stop signal: set when SIGTERM (or, running alone, SIGINT) arrives.
    /// The first call installs the handler; until then SIGTERM keeps its default effect.
    ///
    /// # Errors
    /// The signal handler cannot be installed.
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// let stop = worker.stop()?;
    /// std::thread::spawn(move || { stop.wait(); /* stop accepting, drain, exit */ });
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn stop(&self) -> Result<Stop> {
        Stop::install(self.standalone.is_some()).map_err(|e| Error::io("cannot handle SIGTERM", e))
    }

    fn position(&self, key: ListenerKey<'_>) -> Result<usize> {
        let found = match key {
            ListenerKey::Name(name) => self.slots.iter().position(|s| s.name == name),
            ListenerKey::Index(i) => (i < self.slots.len()).then_some(i),
        };
        found.ok_or_else(|| Error::Activation {
            reason: format!(
                "no {key}: the listeners are [{}]",
                self.slots
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Running alone, binds the listener on first use.
    fn ensure_bound(&mut self, pos: usize, key: ListenerKey<'_>) -> Result<()> {
        let slot = &mut self.slots[pos];
        if slot.taken {
            return Err(taken(key));
        }
        if let (None, Some(spec)) = (&slot.fd, &slot.spec) {
            let bound = sockets::Listener::bind(spec, self.socket_mode, sockets::somaxconn())?;
            let fd = bound
                .into_fd()
                .map_err(|e| Error::io(format!("cannot take {spec}"), e))?;
            slot.fd = Some(fd);
        }
        Ok(())
    }

    /// Takes listener `key` if its address family passes `accepts`; otherwise it stays.
    fn take_kind(
        &mut self,
        key: ListenerKey<'_>,
        accepts: impl Fn(AddressFamily) -> bool,
        kind: &str,
    ) -> Result<OwnedFd> {
        let pos = self.position(key)?;
        self.ensure_bound(pos, key)?;
        let slot = &mut self.slots[pos];
        let fd = slot.fd.as_ref().ok_or_else(|| taken(key))?;
        if !family(fd).is_some_and(accepts) {
            return Err(wrong_kind(key, kind));
        }
        slot.taken = true;
        slot.fd.take().ok_or_else(|| taken(key))
    }
}

fn taken(key: ListenerKey<'_>) -> Error {
    Error::Activation {
        reason: format!("{key} was already taken"),
    }
}

fn wrong_kind(key: ListenerKey<'_>, kind: &str) -> Error {
    Error::Activation {
        reason: format!("{key} is not {kind} listening socket"),
    }
}

fn family(fd: &OwnedFd) -> Option<AddressFamily> {
    let listening = socket::getsockopt(fd, sockopt::AcceptConn).ok()?;
    if !listening {
        return None;
    }
    socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()?
        .family()
}
