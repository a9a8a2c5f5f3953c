//! A small, strict-enough HTTP/1.x response parser.
//!
//! The parser is incremental in the simplest possible way: [`parse_response`]
//! is called on everything received so far and either says "incomplete",
//! returns a complete response together with the number of bytes it used,
//! or reports a protocol error. Responses here are tiny (a pid and a newline),
//! so re-parsing from the start after each read costs nothing measurable.

use std::io::{self, Read};
use std::time::Instant;

/// Largest status line + headers accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (any framing).
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// Status code of the final (non-1xx) response.
    pub status: u16,
    /// True if the connection cannot be reused after this response
    /// (`Connection: close`, HTTP/1.0 without keep-alive, or a body
    /// delimited by the end of the connection).
    pub close: bool,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

/// Outcome of one parse attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// A full response; the second field is how many bytes of the buffer it
    /// used (any rest belongs to something the server sent after it).
    Complete(Response, usize),
}

/// Parses the bytes received so far. `eof` tells that the peer has closed
/// its side, which completes a body that is delimited by the connection's end.
pub(crate) fn parse_response(buf: &[u8], eof: bool) -> Result<Parse, String> {
    let mut start = 0;
    loop {
        match parse_one(&buf[start..], eof)? {
            One::Incomplete => return Ok(Parse::Incomplete),
            One::Interim(used) => start += used,
            One::Final(resp, used) => return Ok(Parse::Complete(resp, start + used)),
        }
    }
}

enum One {
    Incomplete,
    /// A 1xx interim response of this many bytes, to skip.
    Interim(usize),
    Final(Response, usize),
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilEof,
}

fn parse_one(buf: &[u8], eof: bool) -> Result<One, String> {
    const PREFIX: &[u8] = b"HTTP/";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(format!(
            "not an HTTP response: starts with {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(32)])
        ));
    }
    let Some((lines, head_len)) = split_head(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
        return Ok(One::Incomplete);
    };
    if head_len > MAX_HEAD {
        return Err(format!("response head larger than {MAX_HEAD} bytes"));
    }
    let mut lines = lines.into_iter();
    let status_line = lines.next().unwrap_or_default();
    let (minor, status) = parse_status_line(status_line)?;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "malformed header line {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(format!(
                "malformed header name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        let value = value.trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            let len: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if content_length.is_some_and(|old| old != len) {
                return Err("conflicting Content-Length headers".to_owned());
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding decides the framing; anything other than
            // chunked as the last coding means "until EOF" (RFC 9112 6.3).
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = last.eq_ignore_ascii_case("chunked");
            if !chunked {
                // Non-chunked transfer coding: body runs to EOF.
                content_length = None;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    conn_keep_alive = true;
                }
            }
        }
    }

    if (100..200).contains(&status) {
        if status == 101 {
            return Err("unexpected 101 Switching Protocols".to_owned());
        }
        return Ok(One::Interim(head_len));
    }

    let framing = if status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(len) = content_length {
        Framing::Length(len)
    } else {
        Framing::UntilEof
    };
    let mut close = conn_close || (minor == 0 && !conn_keep_alive);

    let rest = &buf[head_len..];
    let (body, body_len) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(len) => {
            if len > MAX_BODY {
                return Err(format!("Content-Length {len} larger than {MAX_BODY}"));
            }
            if rest.len() < len {
                return Ok(One::Incomplete);
            }
            (rest[..len].to_vec(), len)
        }
        Framing::Chunked => match parse_chunked(rest)? {
            Some(done) => done,
            None => return Ok(One::Incomplete),
        },
        Framing::UntilEof => {
            close = true;
            if rest.len() > MAX_BODY {
                return Err(format!("body larger than {MAX_BODY} bytes"));
            }
            if !eof {
                return Ok(One::Incomplete);
            }
            (rest.to_vec(), rest.len())
        }
    };
    Ok(One::Final(
        Response {
            status,
            close,
            body,
        },
        head_len + body_len,
    ))
}

/// Finds the end of the head (an empty line). Returns the lines before it,
/// without their line endings, and the head's length including the empty
/// line. Bare `\n` line endings are tolerated.
fn split_head(buf: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let mut lines = Vec::new();
    let mut pos = 0;
    while let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') {
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            return Some((lines, pos));
        }
        lines.push(line);
    }
    None
}

/// Parses `HTTP/1.x NNN reason`; returns the minor version and the status.
fn parse_status_line(line: &[u8]) -> Result<(u8, u16), String> {
    let bad = || format!("malformed status line {:?}", String::from_utf8_lossy(line));
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(bad()),
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if status < 100 {
        return Err(bad());
    }
    Ok((minor, status))
}

/// Decodes a chunked body. `Ok(None)` means incomplete. On success returns
/// the body and the number of bytes the chunked encoding (with trailers) used.
fn parse_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() - pos > 1024 {
                return Err("chunk size line too long".to_owned());
            }
            return Ok(None);
        };
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        let size_text = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_text = std::str::from_utf8(size_text)
            .map_err(|_| "bad chunk size".to_owned())?
            .trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
                    if buf.len() - pos > MAX_HEAD {
                        return Err("chunked trailers too large".to_owned());
                    }
                    return Ok(None);
                };
                let line = &buf[pos..pos + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                pos += nl + 1;
                if line.is_empty() {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(format!("chunked body larger than {MAX_BODY} bytes"));
        }
        if buf.len() - pos < size {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        // The CRLF after the chunk data.
        match &buf[pos..] {
            [] | [b'\r'] => return Ok(None),
            [b'\r', b'\n', ..] => pos += 2,
            [b'\n', ..] => pos += 1,
            _ => return Err("missing CRLF after chunk data".to_owned()),
        }
    }
}

/// A byte stream whose reads can be bounded by a deadline.
pub(crate) trait DeadlineRead: Read {
    /// Arms the stream so that the next read gives up at `deadline`.
    fn arm_read(&mut self, deadline: Instant) -> io::Result<()>;
}

/// Why reading a response failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The deadline passed; this many bytes of the response had arrived.
    Timeout(usize),
    /// The peer closed the connection before a complete response; this many
    /// bytes of it had arrived.
    Eof(usize),
    /// A read failed; this many bytes had arrived.
    Io(io::Error, usize),
    /// The bytes were not a valid response.
    Parse(String),
}

/// Reads one response from `stream`, using `buf` for bytes received but not
/// yet used (it may hold bytes on entry and keeps any surplus on return).
pub(crate) fn read_response<S: DeadlineRead>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Response, ReadError> {
    let mut chunk = [0u8; 8192];
    loop {
        if !buf.is_empty() {
            match parse_response(buf, false).map_err(ReadError::Parse)? {
                Parse::Complete(resp, used) => {
                    buf.drain(..used);
                    return Ok(resp);
                }
                Parse::Incomplete => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(ReadError::Timeout(buf.len()));
        }
        if let Err(e) = stream.arm_read(deadline) {
            return Err(ReadError::Io(e, buf.len()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                if buf.is_empty() {
                    return Err(ReadError::Eof(0));
                }
                return match parse_response(buf, true).map_err(ReadError::Parse)? {
                    Parse::Complete(resp, used) => {
                        buf.drain(..used);
                        Ok(resp)
                    }
                    Parse::Incomplete => Err(ReadError::Eof(buf.len())),
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Timeout(buf.len()));
            }
            Err(e) => return Err(ReadError::Io(e, buf.len())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    fn complete(buf: &[u8]) -> (Response, usize) {
        match parse_response(buf, false).unwrap() {
            Parse::Complete(r, n) => (r, n),
            Parse::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Other: y\r\n\r\n12345\n";
        let (r, n) = complete(raw);
        assert_eq!(r.status, 200);
        assert!(!r.close);
        assert_eq!(r.body, b"12345\n");
        assert_eq!(n, raw.len());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n12345\n";
        for end in 0..raw.len() {
            assert_eq!(
                parse_response(&raw[..end], false).unwrap(),
                Parse::Incomplete,
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn surplus_bytes_are_not_consumed() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200";
        let (r, n) = complete(raw);
        assert_eq!(r.body, b"ok");
        assert_eq!(&raw[n..], b"HTTP/1.1 200");
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let raw = b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 3\r\nCONNECTION: Close\r\n\r\n42\n";
        let (r, _) = complete(raw);
        assert!(r.close);
        assert_eq!(r.body, b"42\n");
    }

    #[test]
    fn connection_header_tokens() {
        let (r, _) =
            complete(b"HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close);
        let (r, _) =
            complete(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.close);
        // HTTP/1.0 closes unless told otherwise.
        let (r, _) = complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close);
        let (r, _) =
            complete(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.close);
    }

    #[test]
    fn chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n123\r\n3\r\n45\n\r\n0\r\nX-Trailer: t\r\n\r\n";
        let (r, n) = complete(raw);
        assert_eq!(r.body, b"12345\n");
        assert_eq!(n, raw.len());
        assert!(!r.close);
        for end in 0..raw.len() {
            assert_eq!(
                parse_response(&raw[..end], false).unwrap(),
                Parse::Incomplete,
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let (r, _) = complete(raw);
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn body_until_eof() {
        let raw = b"HTTP/1.1 200 OK\r\n\r\n77\n";
        assert_eq!(parse_response(raw, false).unwrap(), Parse::Incomplete);
        match parse_response(raw, true).unwrap() {
            Parse::Complete(r, n) => {
                assert_eq!(r.body, b"77\n");
                assert!(r.close);
                assert_eq!(n, raw.len());
            }
            Parse::Incomplete => panic!("should be complete at EOF"),
        }
    }

    #[test]
    fn no_body_statuses() {
        let (r, _) = complete(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 1\r\n\r\nx";
        let (r, n) = complete(raw);
        assert_eq!(r.status, 500);
        assert_eq!(n, raw.len());
    }

    #[test]
    fn bare_lf_line_endings() {
        let (r, _) = complete(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok");
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn garbage_is_rejected() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"X",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
        ] {
            assert!(
                parse_response(raw, false).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // A valid prefix of "HTTP/" is just incomplete.
        assert_eq!(parse_response(b"HTT", false).unwrap(), Parse::Incomplete);
        // Endless headers are cut off.
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(parse_response(&huge, false).is_err());
    }

    /// Yields the scripted pieces one read at a time.
    struct Script(VecDeque<io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut piece)) => {
                    let n = piece.len().min(out.len());
                    out[..n].copy_from_slice(&piece[..n]);
                    if n < piece.len() {
                        self.0.push_front(Ok(piece.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl DeadlineRead for Script {
        fn arm_read(&mut self, _deadline: Instant) -> io::Result<()> {
            Ok(())
        }
    }

    fn bytewise(raw: &[u8]) -> Script {
        Script(raw.iter().map(|&b| Ok(vec![b])).collect())
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn split_reads_byte_by_byte() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n123\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n456\n\r\n0\r\n\r\n";
        let mut s = bytewise(raw);
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, later()).unwrap();
        assert_eq!(
            (r.status, r.close, &r.body[..]),
            (200, false, &b"123\n"[..])
        );
        let r = read_response(&mut s, &mut buf, later()).unwrap();
        assert_eq!((r.status, r.close, &r.body[..]), (200, true, &b"456\n"[..]));
        assert!(buf.is_empty());
        match read_response(&mut s, &mut buf, later()) {
            Err(ReadError::Eof(0)) => {}
            other => panic!("expected EOF, got {other:?}"),
        }
    }

    #[test]
    fn eof_in_the_middle() {
        let mut s = bytewise(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12");
        let mut buf = Vec::new();
        match read_response(&mut s, &mut buf, later()) {
            Err(ReadError::Eof(n)) => assert!(n > 0),
            other => panic!("expected EOF, got {other:?}"),
        }
    }

    #[test]
    fn read_errors_are_classified() {
        let mut s = Script(VecDeque::from([
            Ok(b"HTTP/1.1 2".to_vec()),
            Err(io::Error::from(io::ErrorKind::WouldBlock)),
        ]));
        let mut buf = Vec::new();
        assert!(matches!(
            read_response(&mut s, &mut buf, later()),
            Err(ReadError::Timeout(10))
        ));
        let mut s = Script(VecDeque::from([Err(io::Error::from(
            io::ErrorKind::ConnectionReset,
        ))]));
        let mut buf = Vec::new();
        assert!(matches!(
            read_response(&mut s, &mut buf, later()),
            Err(ReadError::Io(_, 0))
        ));
        let mut s = bytewise(b"garbage\r\n\r\n");
        let mut buf = Vec::new();
        assert!(matches!(
            read_response(&mut s, &mut buf, later()),
            Err(ReadError::Parse(_))
        ));
        // A deadline already past is a timeout without reading.
        let mut s = bytewise(b"HTTP/1.1 200 OK\r\n\r\n");
        let mut buf = Vec::new();
        assert!(matches!(
            read_response(&mut s, &mut buf, Instant::now()),
            Err(ReadError::Timeout(0))
        ));
    }
}
