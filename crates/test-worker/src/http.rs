//! A minimal but strict HTTP/1.x server for one connection.
//!
//! Every answer is `200 OK` with our pid as the body. Requests may arrive split across reads
//! or pipelined several to a read; `Content-Length` bodies are read and discarded. Anything
//! malformed gets a `400` and the connection is closed.

use std::io::{self, ErrorKind, Read, Write};
use std::process;
use std::thread;
use std::time::{Duration, Instant};

use crate::listeners::Conn;
use crate::server::Shared;

/// The longest request line we wait for before calling it garbage.
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The longest request head (request line plus headers).
const MAX_HEAD: usize = 64 * 1024;
/// How long a closing connection waits for the client's FIN after our last response, so that
/// unread bytes do not turn our close into a reset that could destroy the response.
const LINGER: Duration = Duration::from_millis(100);

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// The normal answer.
    Answer,
    /// `/slow?ms=N`: sleep, then answer.
    Slow(Duration),
    /// `/exit?code=N`: answer, then exit the process with this code.
    Exit(i32),
    /// `/memory?mb=N`: hold N MiB more than at start (touched, resident), then answer.
    Memory(u64),
    /// `/shutdown`: call shutdown() on the shared listening socket (fd 3), then answer: what
    /// a buggy app does to every process sharing it.
    Shutdown,
}

/// A parsed request head, owning nothing from the buffer.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    action: Action,
    /// `HEAD`: same headers, no body.
    head: bool,
    /// Whether the client allows the connection to stay open after this response.
    keep_alive: bool,
    /// HTTP/1.0, which needs an explicit `Connection: keep-alive` in the response.
    http10: bool,
    content_length: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Answer with this status line and close.
    Bad(&'static str),
    /// A complete head of this many bytes.
    Complete(Request, usize),
}

/// Serves one connection until it closes, fails, or is closed by the drain.
pub fn serve(mut conn: Conn, shared: &Shared) {
    // The read timeout only lets an idle connection notice that the drain started.
    if conn.set_read_timeout(Some(shared.read_timeout)).is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Answer every complete request already received (pipelining).
        loop {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            let blank = buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            buf.drain(..blank);
            match parse(&buf) {
                Parsed::Incomplete => break,
                Parsed::Bad(status) => {
                    let _ = conn.write_all(&error_response(status));
                    linger_close(conn);
                    return;
                }
                Parsed::Complete(request, head_len) => {
                    buf.drain(..head_len);
                    if !discard_body(&mut conn, &mut buf, &mut chunk, request.content_length) {
                        return;
                    }
                    match answer(&mut conn, &request, shared) {
                        Ok(true) => {}
                        Ok(false) => {
                            linger_close(conn);
                            return;
                        }
                        Err(_) => return,
                    }
                }
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {
                // Idle (not even part of a request) for too long since the drain started.
                let idle_too_long = shared.drained_for().is_some_and(|d| d >= shared.drain_idle);
                if buf.is_empty() && idle_too_long {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads and drops `len` body bytes, first from `buf`; bytes past the body stay in `buf`.
/// Returns false if the connection ended first.
fn discard_body(conn: &mut Conn, buf: &mut Vec<u8>, chunk: &mut [u8], len: u64) -> bool {
    let buffered = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
    buf.drain(..buffered);
    let mut left = len - buffered as u64;
    while left > 0 {
        match conn.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                let body = usize::try_from(left).unwrap_or(usize::MAX).min(n);
                left -= body as u64;
                buf.extend_from_slice(&chunk[body..n]);
            }
            // A request partially received is never cut, drain or not.
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Answers one request; returns whether the connection stays open.
fn answer(conn: &mut Conn, request: &Request, shared: &Shared) -> io::Result<bool> {
    match request.action {
        Action::Answer => {}
        Action::Memory(mib) => crate::misbehave::set_extra_memory(shared.pid, mib),
        Action::Shutdown => crate::misbehave::shut_down_listener(shared.pid),
        Action::Slow(pause) => {
            say!(
                "test-worker[{}]: slow request ({} ms)",
                shared.pid,
                pause.as_millis()
            );
            thread::sleep(pause)
        }
        Action::Exit(code) => {
            conn.write_all(&ok_response(shared.pid, request, Some("close")))?;
            say!(
                "test-worker[{}]: exiting with code {code} (/exit)",
                shared.pid
            );
            linger_close_ref(conn);
            process::exit(code);
        }
    }
    crate::costs::syscalls(shared.syscalls_per_request);
    // Once the drain started, every response closes its connection.
    let keep_alive = request.keep_alive && !shared.draining();
    let connection = match (keep_alive, request.http10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    };
    conn.write_all(&ok_response(shared.pid, request, connection))?;
    Ok(keep_alive)
}

fn ok_response(pid: u32, request: &Request, connection: Option<&str>) -> Vec<u8> {
    let body = format!("{pid}\n");
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(connection) = connection {
        out.push_str("Connection: ");
        out.push_str(connection);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if !request.head {
        out.push_str(&body);
    }
    out.into_bytes()
}

fn error_response(status: &str) -> Vec<u8> {
    let body = format!(
        "{}\n",
        status.split_once(' ').map_or(status, |(_, reason)| reason)
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends our FIN, then waits briefly for the client's before closing.
fn linger_close(mut conn: Conn) {
    linger_close_ref(&mut conn);
}

fn linger_close_ref(conn: &mut Conn) {
    let _ = conn.shutdown_write();
    let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match conn.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Parses the request head at the start of `buf`.
fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        // Reject garbage as soon as its first line is in, rather than waiting for more.
        return match buf.iter().position(|&b| b == b'\n') {
            Some(nl) if request_line(strip_cr(&buf[..nl])).is_none() => {
                Parsed::Bad("400 Bad Request")
            }
            None if buf.len() > MAX_REQUEST_LINE => Parsed::Bad("400 Bad Request"),
            _ if buf.len() > MAX_HEAD => Parsed::Bad("431 Request Header Fields Too Large"),
            _ => Parsed::Incomplete,
        };
    };
    if end > MAX_HEAD {
        return Parsed::Bad("431 Request Header Fields Too Large");
    }
    let mut lines = buf[..end].split(|&b| b == b'\n').map(strip_cr);
    let Some((method, target, minor)) = lines.next().and_then(request_line) else {
        return Parsed::Bad("400 Bad Request");
    };
    let mut close = false;
    let mut keep_alive = false;
    let mut content_length: Option<u64> = None;
    for line in lines {
        let Some((name, value)) = header(line) else {
            return Parsed::Bad("400 Bad Request");
        };
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Some(len) = decimal(value) else {
                return Parsed::Bad("400 Bad Request");
            };
            if content_length.is_some_and(|previous| previous != len) {
                return Parsed::Bad("400 Bad Request");
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Bad("501 Not Implemented");
        }
    }
    let Some(action) = route(target) else {
        return Parsed::Bad("400 Bad Request");
    };
    let http10 = minor == 0;
    let request = Request {
        action,
        head: method == b"HEAD",
        keep_alive: !close && (!http10 || keep_alive),
        http10,
        content_length: content_length.unwrap_or(0),
    };
    Parsed::Complete(request, end + 4)
}

/// `METHOD SP TARGET SP HTTP/1.x` → method, target, minor version.
fn request_line(line: &[u8]) -> Option<(&[u8], &[u8], u8)> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| (0x21..=0x7e).contains(&b))
    {
        return None;
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Some((method, target, minor - b'0'))
        }
        _ => None,
    }
}

/// `name: value` → name, value without surrounding whitespace.
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
    let value_ok = value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    // An empty name, whitespace before the colon or a folded line (leading space) is garbage.
    (!name.is_empty() && name.iter().all(|&b| is_tchar(b)) && value_ok).then_some((name, value))
}

/// Maps the request target to what it asks for; `None` if its parameters are bad.
fn route(target: &[u8]) -> Option<Action> {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &[][..]),
    };
    let param = |key: &[u8]| {
        query.split(|&b| b == b'&').find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == key).then(|| &pair[eq + 1..])
        })
    };
    match path {
        b"/slow" => decimal(param(b"ms")?).map(|ms| Action::Slow(Duration::from_millis(ms))),
        b"/memory" => decimal(param(b"mb")?).map(Action::Memory),
        b"/shutdown" => Some(Action::Shutdown),
        b"/exit" => {
            let code = decimal(param(b"code")?)?;
            u8::try_from(code).ok().map(|c| Action::Exit(i32::from(c)))
        }
        _ => Some(Action::Answer),
    }
}

fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strips optional whitespace (spaces and tabs) from both ends.
fn trim(s: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (Request, usize) {
        match parse(raw) {
            Parsed::Complete(request, len) => (request, len),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").0.keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        let (request, _) = complete(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n");
        assert!(request.keep_alive && request.http10);
    }

    #[test]
    fn pipelined_and_split() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(complete(two).1, 19);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HT"), Parsed::Incomplete);
    }

    #[test]
    fn routes_and_bodies() {
        let (request, _) = complete(b"POST /slow?x=1&ms=250 HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(request.action, Action::Slow(Duration::from_millis(250)));
        assert_eq!(request.content_length, 5);
        assert_eq!(
            complete(b"GET /exit?code=7 HTTP/1.1\r\n\r\n").0.action,
            Action::Exit(7)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for raw in [
            &b"hello\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /slow?ms=abc HTTP/1.1\r\n\r\n",
            b"GET /exit?code=300 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
