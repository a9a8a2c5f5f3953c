//! The metrics endpoint: a tiny HTTP/1.x server in the master's loop that answers
//! `GET /metrics` and nothing else, never blocking: every socket is non-blocking, a request
//! is read as it arrives, an answer is written as the client takes it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::socket::stream::{Step, read_some, write_some};
use crate::socket::{ListenAddr, Listener, ListenerSpec};

/// Connections served at once; beyond, the oldest is dropped.
pub const MAX_CLIENTS: usize = 16;
/// The longest request head accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request and take its answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected client, by number.
pub type ClientId = u64;

/// What the loop must do for the endpoint: which fds to poll and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Readable: a request (or its end) to read.
    Read,
    /// Writable: the rest of an answer to write.
    Write,
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct Client {
    id: ClientId,
    stream: Stream,
    request: Vec<u8>,
    /// The answer, once the request is complete; `written` bytes of it are sent.
    answer: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// The endpoint.
#[derive(Debug)]
pub struct Server {
    /// The bound socket (and, for a unix path, its file, removed when dropped).
    listener: Listener,
    unix: bool,
    clients: Vec<Client>,
    next_id: ClientId,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `GET /metrics` (or `HEAD`): the exposition.
    Metrics {
        /// `HEAD`: the head only.
        head_only: bool,
    },
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    NotAllowed,
    /// Not HTTP: 400.
    Bad,
}

impl Server {
    /// Binds `spec` (a TCP address, or a unix socket path with mode 0660).
    ///
    /// # Errors
    /// It cannot be bound.
    pub fn bind(spec: &ListenerSpec) -> Result<Server> {
        let listener = Listener::bind(spec, 0o660, 64).map_err(|e| match e {
            Error::Bind { reason, source, .. } => Error::Bind {
                spec: format!("--metrics {spec}"),
                reason,
                source,
            },
            other => other,
        })?;
        let unix = matches!(spec.addr, ListenAddr::Unix(_));
        nix::fcntl::fcntl(
            listener.fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| Error::io("cannot make the metrics socket non-blocking", e))?;
        Ok(Server {
            listener,
            unix,
            clients: Vec::new(),
            next_id: 1,
        })
    }

    /// What it listens on.
    pub fn local(&self) -> &str {
        self.listener.local()
    }

    /// The listener, to poll for connections.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.fd()
    }

    /// The clients to poll, and for what.
    pub fn client_fds(&self) -> impl Iterator<Item = (ClientId, BorrowedFd<'_>, Interest)> {
        self.clients.iter().map(|c| {
            let interest = if c.answer.is_some() {
                Interest::Write
            } else {
                Interest::Read
            };
            (c.id, c.stream.fd(), interest)
        })
    }

    /// When the next client runs out of time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.deadline).min()
    }

    /// Accepts every pending connection (dropping the oldest beyond [`MAX_CLIENTS`]).
    pub fn accept(&mut self, now: Instant) {
        use nix::sys::socket::{SockFlag, accept4};
        use std::os::fd::{AsRawFd, FromRawFd};
        loop {
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            let raw = match accept4(self.listener.fd().as_raw_fd(), flags) {
                Ok(raw) => raw,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            // SAFETY: accept4 just created this descriptor for us; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let stream = if self.unix {
                Stream::Unix(UnixStream::from(fd))
            } else {
                Stream::Tcp(TcpStream::from(fd))
            };
            if self.clients.len() >= MAX_CLIENTS {
                self.clients.remove(0);
            }
            self.clients.push(Client {
                id: self.next_id,
                stream,
                request: Vec::new(),
                answer: None,
                written: 0,
                deadline: now + CLIENT_TIMEOUT,
            });
            self.next_id += 1;
        }
    }

    /// Reads what client `id` sent; once its request head is complete, returns what it asks.
    /// A client with its answer on the way is not read again: more bytes from it are no
    /// second request, and its end of sending (a half-close) does not cut the answer.
    pub fn read(&mut self, id: ClientId) -> Option<Asked> {
        let pos = self.clients.iter().position(|c| c.id == id)?;
        let client = &mut self.clients[pos];
        if client.answer.is_some() {
            return None;
        }
        loop {
            match read_some(&mut client.stream, &mut client.request) {
                Step::Moved(_) => {
                    if let Some(asked) = parse(&client.request) {
                        return Some(asked);
                    }
                    if client.request.len() > MAX_REQUEST {
                        return Some(Asked::Bad);
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

    /// Sets client `id`'s answer and starts writing it.
    pub fn answer(&mut self, id: ClientId, status: &str, body: &str, head_only: bool) {
        let Some(client) = self.clients.iter_mut().find(|c| c.id == id) else {
            return;
        };
        let mut text = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            if status.starts_with("200") {
                "text/plain; version=0.0.4; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            },
            body.len()
        )
        .into_bytes();
        if !head_only {
            text.extend_from_slice(body.as_bytes());
        }
        client.answer = Some(text);
        self.write(id);
    }

    /// Writes what client `id` can take of its answer; drops it once all is sent.
    pub fn write(&mut self, id: ClientId) {
        let Some(pos) = self.clients.iter().position(|c| c.id == id) else {
            return;
        };
        let client = &mut self.clients[pos];
        let Some(answer) = client.answer.as_ref() else {
            return;
        };
        while client.written < answer.len() {
            match write_some(&mut client.stream, &answer[client.written..]) {
                Step::Moved(n) => client.written += n,
                Step::Pending => return,
                Step::Gone => break,
            }
        }
        self.clients.remove(pos);
    }

    /// Drops the clients that ran out of time.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|c| c.deadline > now);
    }
}

/// What a request head asks for, once it is complete (`\r\n\r\n` seen).
pub fn parse(request: &[u8]) -> Option<Asked> {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&request[..end]).ok();
    let Some(line) = head.and_then(|h| h.lines().next()) else {
        return Some(Asked::Bad);
    };
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Some(Asked::Bad);
    };
    if !version.starts_with("HTTP/1.") || words.next().is_some() {
        return Some(Asked::Bad);
    }
    let path = target.split('?').next().unwrap_or_default();
    Some(match (method, path) {
        ("GET", "/metrics") => Asked::Metrics { head_only: false },
        ("HEAD", "/metrics") => Asked::Metrics { head_only: true },
        ("GET" | "HEAD", _) => Asked::NotFound,
        _ => Asked::NotAllowed,
    })
}
