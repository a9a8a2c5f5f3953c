//! The master's side of the control socket: accept, authenticate, read one request line,
//! answer (now, or when what the client waits for happens), close.
//!
//! Everything is non-blocking and driven by the master's `poll` loop. A client that sends
//! nothing useful within [`REQUEST_TIMEOUT`], sends too much, or is not of our user is
//! answered with an error and dropped; at most [`MAX_CLIENTS`] are served at once.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt};

use super::{MAX_LINE, Record, Request};
use crate::error::{Error, Result};
use crate::socket::file::{self, Identity, SocketFile};
use crate::socket::stream::{Step, read_some, write_some};

/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once; beyond, the idlest is dropped (or, if all wait for an
/// answer, the newcomer is turned away).
pub const MAX_CLIENTS: usize = 64;
/// How long accepting pauses when the master is out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// How long writing an answer may block the master.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A connected client, by number.
pub type ClientId = u64;

/// What a client waits for before its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The end of the reload with this `RELOAD_INDEX`.
    Reload(u64),
    /// The master's exit.
    Stop,
    /// Every event, as it happens, until either side closes (`master-process events`).
    Events,
}

/// The most a slow events client may have waiting to be written before it is dropped.
const MAX_OUTBOX: usize = 1024 * 1024;

#[derive(Debug)]
struct Client {
    id: ClientId,
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
    waiting: Option<Wait>,
    /// Events written as the client takes them (`Wait::Events`).
    outbox: Vec<u8>,
}

/// The control socket and its clients.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    /// The socket file, removed when the server is dropped (if still ours).
    file: SocketFile,
    clients: Vec<Client>,
    next_id: ClientId,
    uid: u32,
    /// Accepting is paused until then (out of descriptors).
    paused_until: Option<Instant>,
}

impl Server {
    /// Binds the control socket at `path`, mode 0600. A stale socket there is replaced; a
    /// live one means another master runs: an error. Nothing else there is ever removed.
    ///
    /// # Errors
    /// The path is taken or cannot be used.
    pub fn bind(path: &Path) -> Result<Server> {
        let what = format!("control socket {}", path.display());
        let (fd, file) = file::bind_unix(&what, path, 0o600, 128).map_err(|e| match e {
            Error::Bind { reason, source, .. } if reason.starts_with("already in use") => {
                Error::Bind {
                    spec: what.clone(),
                    reason: "another master is running with this control socket; stop it, or \
                             give this one another --name (or --control PATH)"
                        .into(),
                    source,
                }
            }
            other => other,
        })?;
        Ok(Server::adopt(fd, file))
    }

    /// Takes over a bound control socket (also that of a master upgraded in place).
    pub fn adopt(fd: OwnedFd, file: SocketFile) -> Server {
        let listener = UnixListener::from(fd);
        let _ = listener.set_nonblocking(true);
        Server {
            listener,
            file,
            clients: Vec::new(),
            next_id: 1,
            uid: nix::unistd::geteuid().as_raw(),
            paused_until: None,
        }
    }

    /// Adds a client that waits for `wait` (one handed over by a master upgraded in place).
    pub fn adopt_client(&mut self, stream: UnixStream, wait: Wait) -> ClientId {
        let id = self.next_id;
        self.next_id += 1;
        let _ = stream.set_nonblocking(true);
        self.clients.push(Client {
            id,
            stream,
            buf: Vec::new(),
            deadline: Instant::now(),
            waiting: Some(wait),
            outbox: Vec::new(),
        });
        id
    }

    /// Takes a waiting client out, to hand it over.
    pub fn take_client(&mut self, id: ClientId) -> Option<UnixStream> {
        let pos = self.clients.iter().position(|c| c.id == id)?;
        Some(self.clients.remove(pos).stream)
    }

    /// The socket's path.
    pub fn path(&self) -> Option<&Path> {
        self.file.identity().map(|f| f.path.as_path())
    }

    /// The listener and its file, to hand over.
    pub fn handover(&self) -> (BorrowedFd<'_>, Option<&Identity>) {
        (self.listener.as_fd(), self.file.identity())
    }

    /// The descriptors to poll: the listener, each client still sending, and each events
    /// client (to learn that it left, and to write what it has not taken yet); with whether
    /// to wait for room to write.
    pub fn poll_fds(&self, now: Instant) -> Vec<(Option<ClientId>, BorrowedFd<'_>, bool)> {
        let mut fds = Vec::new();
        if self.paused_until.is_none_or(|t| t <= now) {
            fds.push((None, self.listener.as_fd(), false));
        }
        fds.extend(
            self.clients
                .iter()
                .filter(|c| matches!(c.waiting, None | Some(Wait::Events)))
                .map(|c| (Some(c.id), c.stream.as_fd(), !c.outbox.is_empty())),
        );
        fds
    }

    /// Sends `record` to events client `id`.
    pub fn send(&mut self, id: ClientId, record: &Record) {
        self.send_line(id, &line_of(record));
    }

    /// Queues `line` for client `id` and writes what it can take.
    fn send_line(&mut self, id: ClientId, line: &[u8]) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
            c.outbox.extend_from_slice(line);
        }
        self.flush(id);
    }

    /// Whether some client follows the events.
    pub fn has_subscribers(&self) -> bool {
        self.clients.iter().any(|c| c.waiting == Some(Wait::Events))
    }

    /// Sends `record` to every events client; one that lets too much pile up is dropped.
    pub fn publish(&mut self, record: &Record) {
        let line = line_of(record);
        for id in self.waiting(|w| w == Wait::Events) {
            self.send_line(id, &line);
        }
    }

    /// Writes what events client `id` can take; drops it if it left or fell too far behind.
    fn flush(&mut self, id: ClientId) {
        let Some(pos) = self.clients.iter().position(|c| c.id == id) else {
            return;
        };
        let c = &mut self.clients[pos];
        while !c.outbox.is_empty() {
            match write_some(&mut c.stream, &c.outbox) {
                Step::Moved(n) => {
                    c.outbox.drain(..n);
                }
                Step::Pending => break,
                Step::Gone => {
                    self.clients.remove(pos);
                    return;
                }
            }
        }
        if c.outbox.len() > MAX_OUTBOX {
            tracing::warn!("control: an events client does not keep up; dropping it");
            self.clients.remove(pos);
        }
    }

    /// When the next client runs out of time to send its request, or accepting resumes.
    pub fn next_deadline(&self) -> Option<Instant> {
        let resume = self.paused_until.filter(|t| *t > Instant::now());
        self.clients
            .iter()
            .filter(|c| c.waiting.is_none())
            .map(|c| c.deadline)
            .chain(resume)
            .min()
    }

    /// Accepts every pending connection.
    pub fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // The connection stays queued and the listener readable: stop polling it
                    // for a while rather than spin.
                    tracing::warn!(
                        "control: cannot accept a client ({e}); trying again in a second"
                    );
                    self.paused_until = Some(now + ACCEPT_RETRY);
                    return;
                }
                Err(_) => return,
            };
            let id = self.next_id;
            self.next_id += 1;
            let mut client = Client {
                id,
                stream,
                buf: Vec::new(),
                deadline: now + REQUEST_TIMEOUT,
                waiting: None,
                outbox: Vec::new(),
            };
            if let Err(why) = self.admit(&client) {
                tracing::warn!("control: {why}");
                answer(&mut client, &[error_record(&why)]);
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS && !self.evict_idle() {
                let why = format!("too many control clients waiting (at most {MAX_CLIENTS})");
                tracing::warn!("control: {why}");
                answer(&mut client, &[error_record(&why)]);
                continue;
            }
            if client.stream.set_nonblocking(true).is_ok() {
                self.clients.push(client);
            }
        }
    }

    /// Makes room by dropping the client that has been idle longest (connected, its
    /// request not sent yet); returns false if every client waits for an answer.
    fn evict_idle(&mut self) -> bool {
        let oldest = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.waiting.is_none())
            .min_by_key(|(_, c)| c.deadline)
            .map(|(pos, _)| pos);
        match oldest {
            Some(pos) => {
                tracing::debug!("control: too many clients; dropping the idlest");
                self.refuse(
                    pos,
                    "dropped: too many control clients, and this one sent nothing",
                );
                true
            }
            None => false,
        }
    }

    /// Refuses peers of another user (root excepted).
    fn admit(&self, client: &Client) -> std::result::Result<(), String> {
        let cred = socket::getsockopt(&client.stream, sockopt::PeerCredentials)
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        let uid = cred.uid();
        if uid != self.uid && uid != 0 {
            return Err(format!(
                "permission denied: request from uid {uid} (pid {}) refused",
                cred.pid()
            ));
        }
        Ok(())
    }

    /// Reads what client `id` sent; returns its request once its line is complete. A bad
    /// request is answered with an error and the client dropped.
    pub fn read(&mut self, id: ClientId) -> Option<Request> {
        let pos = self.clients.iter().position(|c| c.id == id)?;
        if self.clients[pos].waiting == Some(Wait::Events) {
            self.flush(id);
            self.drop_if_gone(id);
            return None;
        }
        let client = &mut self.clients[pos];
        loop {
            match read_some(&mut client.stream, &mut client.buf) {
                Step::Moved(_) => {
                    let end = client.buf.iter().position(|&b| b == b'\n');
                    if end.map_or(client.buf.len(), |e| e + 1) > MAX_LINE {
                        self.refuse(pos, &format!("request longer than {MAX_LINE} bytes"));
                        return None;
                    }
                    if let Some(end) = end {
                        let line = client.buf[..end].to_vec();
                        return self.parse(pos, &line);
                    }
                }
                Step::Pending => return None,
                Step::Gone => {
                    self.clients.remove(pos);
                    return None;
                }
            }
        }
    }

    /// Drops an events client that closed its side (anything it sends is ignored).
    fn drop_if_gone(&mut self, id: ClientId) {
        let Some(pos) = self.clients.iter().position(|c| c.id == id) else {
            return;
        };
        let mut ignored = Vec::new();
        loop {
            match read_some(&mut self.clients[pos].stream, &mut ignored) {
                Step::Moved(_) => ignored.clear(),
                Step::Pending => return,
                Step::Gone => {
                    self.clients.remove(pos);
                    return;
                }
            }
        }
    }

    fn parse(&mut self, pos: usize, line: &[u8]) -> Option<Request> {
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim_end_matches('\r'),
            Err(_) => {
                self.refuse(pos, "request is not UTF-8");
                return None;
            }
        };
        match Request::parse(text) {
            Ok(request) => {
                tracing::debug!("control: {}", request.line());
                Some(request)
            }
            Err(why) => {
                self.refuse(pos, &why);
                None
            }
        }
    }

    fn refuse(&mut self, pos: usize, why: &str) {
        tracing::debug!("control: bad request: {why}");
        let mut client = self.clients.remove(pos);
        answer(&mut client, &[error_record(why)]);
    }

    /// Answers client `id` with `records` and an `end` line, and keeps its connection open
    /// until this process exits (`stop --wait`: the client learns of the exit by the close).
    pub fn respond_at_exit(&mut self, id: ClientId, records: &[Record]) {
        if let Some(pos) = self.clients.iter().position(|c| c.id == id) {
            let client = self.clients.remove(pos);
            let mut text = String::new();
            for r in records.iter().chain([&Record::new("end")]) {
                text.push_str(&r.encode());
                text.push('\n');
            }
            let mut stream = client.stream;
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let _ = stream.write_all(text.as_bytes());
            // Closed by the kernel when the process exits, not before.
            std::mem::forget(stream);
        }
    }

    /// Answers client `id` with `records` and an `end` line, and drops it.
    pub fn respond(&mut self, id: ClientId, records: &[Record]) {
        if let Some(pos) = self.clients.iter().position(|c| c.id == id) {
            let mut client = self.clients.remove(pos);
            let mut all = records.to_vec();
            all.push(Record::new("end"));
            answer(&mut client, &all);
        }
    }

    /// Answers client `id` with an error, and drops it.
    pub fn fail(&mut self, id: ClientId, why: &str) {
        if let Some(pos) = self.clients.iter().position(|c| c.id == id) {
            let mut client = self.clients.remove(pos);
            answer(&mut client, &[error_record(why)]);
        }
    }

    /// Client `id` gets its answer when `wait` happens (events clients: from now on).
    pub fn wait(&mut self, id: ClientId, wait: Wait) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
            c.waiting = Some(wait);
        }
    }

    /// The clients waiting for something that `pred` accepts.
    pub fn waiting(&self, pred: impl Fn(Wait) -> bool) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|c| c.waiting.is_some_and(&pred))
            .map(|c| c.id)
            .collect()
    }

    /// Drops the clients that did not send their request in time.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|c| c.waiting.is_none() && c.deadline <= now)
            .map(|c| c.id)
            .collect();
        for id in late {
            self.fail(id, "no complete request in time");
        }
    }
}

/// Answers a connection that is not one of the server's clients (a client handed over by
/// an upgrade) with an error, and closes it.
pub fn fail_stream(stream: UnixStream, why: &str) {
    let mut client = Client {
        id: 0,
        stream,
        buf: Vec::new(),
        deadline: Instant::now(),
        waiting: None,
        outbox: Vec::new(),
    };
    answer(&mut client, &[error_record(why)]);
}

fn error_record(why: &str) -> Record {
    Record::new("error").with("message", why)
}

/// Writes the records to the client, blocking at most [`WRITE_TIMEOUT`]; errors are ignored
/// (the client went away).
fn answer(client: &mut Client, records: &[Record]) {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.encode());
        text.push('\n');
    }
    let _ = client.stream.set_nonblocking(false);
    let _ = client.stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = client.stream.write_all(text.as_bytes());
    let _ = socket::shutdown(client.stream.as_raw_fd(), socket::Shutdown::Both);
}

/// `record` as one line of the protocol.
fn line_of(record: &Record) -> Vec<u8> {
    let mut line = record.encode().into_bytes();
    line.push(b'\n');
    line
}
