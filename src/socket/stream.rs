//! One non-blocking step on a client's stream (the control and metrics servers' clients):
//! interrupted calls retried, "would block" and "the peer left" told apart.

use std::io::{self, Read, Write};

/// What one non-blocking read or write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many bytes moved (never 0).
    Moved(usize),
    /// Nothing to move until the stream polls ready again.
    Pending,
    /// The peer closed its side, or the stream failed: drop the client.
    Gone,
}

/// Reads what is there into `buf` (appended), once.
pub fn read_some(stream: &mut impl Read, buf: &mut Vec<u8>) -> Step {
    let mut chunk = [0u8; 2048];
    loop {
        return match stream.read(&mut chunk) {
            Ok(0) => Step::Gone,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Step::Moved(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Pending,
            Err(_) => Step::Gone,
        };
    }
}

/// Writes what the stream takes of `bytes`, once.
pub fn write_some(stream: &mut impl Write, bytes: &[u8]) -> Step {
    loop {
        return match stream.write(bytes) {
            Ok(0) => Step::Gone,
            Ok(n) => Step::Moved(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Pending,
            Err(_) => Step::Gone,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_step_tells_data_from_nothing_yet_from_a_peer_that_left() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_some(&mut a, &mut buf), Step::Pending);
        assert_eq!(write_some(&mut b, b"hello"), Step::Moved(5));
        assert_eq!(read_some(&mut a, &mut buf), Step::Moved(5));
        assert_eq!(buf, b"hello");
        drop(b);
        assert_eq!(read_some(&mut a, &mut buf), Step::Gone);
        assert_eq!(write_some(&mut a, b"x"), Step::Gone);
    }
}
