//! Control: `master-process reload | status | stop | signal` against a running master,
//! over a unix socket.
//!
//! The master listens on a unix stream socket (`--control PATH`; by default `NAME.sock` in
//! its user's private folder, see [`paths`]), mode 0600, and answers only peers of its own
//! user or root (`SO_PEERCRED`).
//!
//! # Protocol (version 1)
//! Line-based and versioned. The client sends one request line of at most [`MAX_LINE`]
//! bytes:
//!
//! ```text
//! MP/1 status
//! MP/1 reload [wait]
//! MP/1 stop [wait]
//! MP/1 signal SIGNAL
//! MP/1 upgrade [wait]
//! MP/1 events
//! ```
//!
//! The master answers with records, one per line: a kind then `key=value` fields, values
//! percent-encoded (`%20` for a space, `%25`, `%3D`, `%0A`...), and a last line `end`, or
//! `error message=...` instead. A malformed or oversized request gets an `error` record and
//! the connection is closed; it never disturbs the master. `events` gets no `end`: one
//! `event` record per line as things happen (a reload started or ended, a worker started,
//! ready, stopping, killed, exited; the master running or stopping), until either side closes.

#[cfg(feature = "cli")]
mod client;
pub mod paths;
mod server;
mod status;
#[cfg(feature = "cli")]
mod watch;

#[cfg(feature = "cli")]
pub use client::run_command;
pub use server::{ClientId, Server, Wait, fail_stream};
pub use status::{Extras, event, event_record, outcome_record, status_records};
#[cfg(feature = "cli")]
pub use watch::watch;

use std::fmt;

use crate::signals::Signal;

/// The protocol version every request line starts with.
pub const VERSION: &str = "MP/1";
/// The longest request line accepted, newline included.
pub const MAX_LINE: usize = 4096;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The master's state.
    Status,
    /// A reload; with `wait`, the answer comes when it has ended.
    Reload {
        /// Answer once the reload ended (with its outcome).
        wait: bool,
    },
    /// A graceful stop; with `wait`, the answer comes when every worker is gone.
    Stop {
        /// Answer once the master is about to exit.
        wait: bool,
    },
    /// A signal for every worker.
    Signal(Signal),
    /// Re-execute the master binary in place, then reload; with `wait`, the answer comes
    /// when that reload has ended.
    Upgrade {
        /// Answer once the reload after the upgrade ended.
        wait: bool,
    },
    /// Every event as it happens (`event` records), until either side closes.
    Events,
}

impl Request {
    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some(VERSION) => {}
            Some(other) if other.starts_with("MP/") => {
                return Err(format!(
                    "unsupported protocol {other:?}; this master speaks {VERSION}"
                ));
            }
            _ => return Err(format!("a request starts with {VERSION}")),
        }
        let verb = words.next().ok_or("missing command")?;
        let rest: Vec<&str> = words.collect();
        let wait = |rest: &[&str]| match rest {
            [] => Ok(false),
            ["wait"] => Ok(true),
            _ => Err(format!("{verb} takes only `wait`")),
        };
        match verb {
            "status" if rest.is_empty() => Ok(Request::Status),
            "status" => Err("status takes no argument".into()),
            "events" if rest.is_empty() => Ok(Request::Events),
            "events" => Err("events takes no argument".into()),
            "reload" => wait(&rest).map(|wait| Request::Reload { wait }),
            "stop" => wait(&rest).map(|wait| Request::Stop { wait }),
            "upgrade" => wait(&rest).map(|wait| Request::Upgrade { wait }),
            "signal" => match rest.as_slice() {
                [name] => name.parse().map(Request::Signal),
                _ => Err("signal takes one signal name".into()),
            },
            other => Err(format!("unknown command {:?}", truncate(other, 40))),
        }
    }

    /// The request line (without its newline).
    pub fn line(&self) -> String {
        match self {
            Request::Status => format!("{VERSION} status"),
            Request::Events => format!("{VERSION} events"),
            Request::Reload { wait } => {
                format!("{VERSION} reload{}", if *wait { " wait" } else { "" })
            }
            Request::Stop { wait } => format!("{VERSION} stop{}", if *wait { " wait" } else { "" }),
            Request::Signal(s) => format!("{VERSION} signal {}", s.name()),
            Request::Upgrade { wait } => {
                format!("{VERSION} upgrade{}", if *wait { " wait" } else { "" })
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One answer line: a kind and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// What the line is about (`master`, `worker`, `reload`, `end`, `error`...).
    pub kind: String,
    /// Its fields, in order.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// A record of this kind, with no field yet.
    pub fn new(kind: &str) -> Record {
        Record {
            kind: kind.to_string(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl fmt::Display) -> Record {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The record as one line (without its newline).
    pub fn encode(&self) -> String {
        let mut line = escape(&self.kind);
        for (k, v) in &self.fields {
            line.push(' ');
            line.push_str(&escape(k));
            line.push('=');
            line.push_str(&escape(v));
        }
        line
    }

    /// Parses a record line (without its newline).
    pub fn decode(line: &str) -> Result<Record, String> {
        let mut words = line.split(' ');
        let kind = unescape(
            words
                .next()
                .filter(|k| !k.is_empty())
                .ok_or("empty record")?,
        )?;
        let fields = words
            .map(|w| {
                let (k, v) = w
                    .split_once('=')
                    .ok_or_else(|| format!("field without `=`: {w:?}"))?;
                Ok((unescape(k)?, unescape(v)?))
            })
            .collect::<Result<_, String>>()?;
        Ok(Record { kind, fields })
    }
}

/// Percent-encodes what would break a record: `%`, `=`, spaces and control characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '=' | '\0'..=' ' | '\u{7f}') {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escaped bytes are not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status,
            Request::Reload { wait: false },
            Request::Reload { wait: true },
            Request::Stop { wait: true },
            Request::Signal(Signal::User1),
            Request::Upgrade { wait: true },
            Request::Events,
        ] {
            assert_eq!(Request::parse(&r.line()), Ok(r));
        }
    }

    #[test]
    fn bad_requests_say_why() {
        assert!(Request::parse("").unwrap_err().contains("MP/1"));
        assert!(
            Request::parse("MP/2 status")
                .unwrap_err()
                .contains("unsupported protocol")
        );
        assert!(Request::parse("MP/1").unwrap_err().contains("missing"));
        assert!(
            Request::parse("MP/1 frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(Request::parse("MP/1 reload now").is_err());
        assert!(Request::parse("MP/1 signal").is_err());
        assert!(Request::parse("MP/1 signal SIGFOO").is_err());
        assert!(Request::parse("MP/1 status extra").is_err());
    }

    #[test]
    fn records_round_trip_with_awkward_values() {
        let r = Record::new("reload")
            .with("outcome", "failed")
            .with("reason", "worker 0 (pid 12) exited: a=b 100% \n done")
            .with("empty", "")
            .with("utf8", "héllo wörld");
        let line = r.encode();
        assert!(!line.contains('\n'));
        assert_eq!(Record::decode(&line), Ok(r));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(Record::decode("").is_err());
        assert!(Record::decode("worker pid").is_err());
        assert!(Record::decode("worker pid=%4").is_err());
        assert!(Record::decode("worker pid=%zz").is_err());
        assert!(Record::decode("worker pid=%FF").is_err());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_request_line_parses_or_errs_without_panic(line in ".{0,200}") {
                let _ = Request::parse(&line);
            }

            #[test]
            fn any_record_line_decodes_or_errs_without_panic(line in ".{0,200}") {
                let _ = Record::decode(&line);
            }

            #[test]
            fn records_survive_encoding(kind in "[a-z_]{1,12}", fields in proptest::collection::vec(("[a-z_]{1,8}", ".{0,40}"), 0..6)) {
                let mut r = Record::new(&kind);
                for (k, v) in &fields {
                    r = r.with(k, v);
                }
                prop_assert_eq!(Record::decode(&r.encode()), Ok(r));
            }
        }
    }
}
