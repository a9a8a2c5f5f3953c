//! A process's output, line by line as it arrives, and what bench reads in a master's log:
//! `key=value` fields, timestamps, addresses, reload counts, warnings.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The lines a process wrote on one stream, as they arrive.
#[derive(Debug, Default)]
pub struct Log {
    state: Mutex<LogState>,
    grew: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

impl Log {
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: String) {
        self.state().lines.push(line);
        self.grew.notify_all();
    }

    fn close(&self) {
        self.state().closed = true;
        self.grew.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.state().lines.len()
    }

    /// Waits until `cond` holds for the lines so far (or, with `closed`, until the stream
    /// ends); false if `timeout` passes first.
    fn wait(&self, timeout: Duration, closed: bool, cond: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if (closed && state.closed) || (!closed && cond(&state.lines)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || (!closed && state.closed) {
                return false;
            }
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until `cond` holds for the lines so far; false if `timeout` passes first.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&[String]) -> bool) -> bool {
        self.wait(timeout, false, cond)
    }

    /// Waits for the end of the stream; false if `timeout` passes first.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        self.wait(timeout, true, |_| false)
    }

    /// The first line at or after `from` that satisfies `pred` and its index, waiting for it
    /// up to `timeout`.
    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let found = self.wait_until(timeout, |lines| lines.iter().skip(from).any(|l| pred(l)));
        let lines = self.state();
        found.then(|| {
            lines
                .lines
                .iter()
                .cloned()
                .enumerate()
                .skip(from)
                .find(|(_, l)| pred(l))
        })?
    }

    /// The last `n` lines, indented, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let state = self.state();
        let start = state.lines.len().saturating_sub(n);
        state.lines[start..]
            .iter()
            .map(|l| format!("\n    {l}"))
            .collect()
    }
}

/// Reads `stream` into `log` line by line until it ends; `echo` copies each line to our
/// stderr, prefixed by that name.
pub fn read_lines(stream: impl Read, log: Arc<Log>, echo: Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(1..) = reader.read_until(b'\n', &mut buf) {
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        if let Some(name) = &echo {
            eprintln!("  [{name}] {line}");
        }
        log.push(line);
        buf.clear();
    }
    log.close();
}

/// The value of `key=` in a tracing log line (quotes removed).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let rest = &line[line.find(&pat)? + pat.len()..];
    Some(if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap_or(quoted.len())]
    } else {
        &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())]
    })
}

/// `key=` of a line, parsed.
pub fn parsed<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    field(line, key)?.parse().ok()
}

/// The address after `listening on ` in a line (the master's `listening on ADDR`, or the bare
/// test-worker's `listening on 1 fd(s) bare (fd 3 ADDR)`).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")?..];
    rest.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .find_map(|token| token.parse().ok())
}

/// Microseconds since the epoch of a log line's leading RFC 3339 UTC timestamp
/// (`2026-11-25T16:45:38.598799Z  INFO ...`).
pub fn line_unix_us(line: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(line.split_whitespace().next()?).ok()?;
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_micros()).ok()
}

/// The master's reload lines, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// `reload started`.
    pub started: usize,
    /// `reload done`.
    pub done: usize,
    /// `reload ended: failed`.
    pub failed: usize,
    /// `reload queued`.
    pub queued: usize,
}

impl Reloads {
    /// Counts them in `lines`.
    pub fn count(lines: &[String]) -> Reloads {
        let count = |pat: &str| lines.iter().filter(|l| l.contains(pat)).count();
        Reloads {
            started: count("reload started"),
            done: count("reload done"),
            failed: count("reload ended: failed"),
            queued: count("reload queued"),
        }
    }

    /// A reload has started and not ended.
    pub fn in_flight(self) -> bool {
        self.started > self.done + self.failed
    }
}

/// Waits until every reload started in `log` since line `from` has ended; false after
/// `timeout`.
pub fn settle(log: &Log, from: usize, timeout: Duration) -> bool {
    log.wait_until(timeout, |lines| {
        !Reloads::count(&lines[from.min(lines.len())..]).in_flight()
    })
}

/// The workers the log says are alive.
pub fn live_workers(lines: &[String]) -> BTreeSet<i32> {
    let mut live = BTreeSet::new();
    for l in lines {
        let Some(pid) = parsed::<i32>(l, "pid") else {
            continue;
        };
        if l.contains("worker started") {
            live.insert(pid);
        } else if l.contains("worker stopped") || l.contains("exited") {
            live.remove(&pid);
        }
    }
    live
}

/// What a master's log says once its run is over.
#[derive(Debug, Clone, Default)]
pub struct Harvest {
    /// Every line.
    pub lines: Vec<String>,
    /// Reload lines, counted.
    pub reloads: Reloads,
    /// `took_ms` of every `reload done` line.
    pub took_ms: Vec<f64>,
    /// Its WARN and ERROR lines.
    pub warnings: Vec<String>,
}

impl Harvest {
    /// Reads `lines`.
    pub fn of(lines: Vec<String>) -> Harvest {
        let took_ms = lines.iter().filter(|l| l.contains("reload done"));
        Harvest {
            reloads: Reloads::count(&lines),
            took_ms: took_ms.filter_map(|l| parsed(l, "took_ms")).collect(),
            warnings: warnings(&lines),
            lines,
        }
    }
}

/// The WARN and ERROR lines.
pub fn warnings(lines: &[String]) -> Vec<String> {
    let bad = |l: &&String| l.contains(" WARN ") || l.contains(" ERROR ");
    lines.iter().filter(bad).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_and_addresses() {
        let line = "2026-11-25T16:14:43.525809Z  INFO master_process::supervisor: reload done generation=1 took_ms=107";
        assert_eq!(field(line, "took_ms"), Some("107"));
        assert_eq!(parsed::<u64>(line, "generation"), Some(1));
        assert_eq!(field(line, "pid"), None);
        let line = "2026-11-25T16:14:42.415410Z  INFO master_process::master: listening on 127.0.0.1:33471 name=\"unknown\"";
        assert_eq!(field(line, "name"), Some("unknown"));
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:33471".parse().expect("addr"))
        );
        let bare = "test-worker[26282]: listening on 1 fd(s) bare (fd 3 127.0.0.1:45767)";
        assert_eq!(
            listening_addr(bare),
            Some("127.0.0.1:45767".parse().expect("addr"))
        );
    }

    #[test]
    fn parses_timestamps() {
        let line =
            "2026-11-25T16:45:38.598799Z  INFO master_process::supervisor: worker ready pid=6689";
        assert_eq!(line_unix_us(line), Some(1_795_625_138_598_799));
        assert_eq!(line_unix_us("1970-01-01T00:00:00Z x"), Some(0));
        assert_eq!(
            line_unix_us("2000-02-29T00:00:01.5Z x"),
            Some(951_782_401_500_000)
        );
        assert_eq!(line_unix_us("test-worker[1]: waiting at unix_us=5"), None);
    }

    #[test]
    fn tracks_workers_and_reloads() {
        let lines = lines(&[
            "x  INFO master_process::supervisor: worker started pid=10 index=0 generation=0",
            "x  INFO master_process::supervisor: worker started pid=11 index=1 generation=0",
            "x  INFO master_process::supervisor: reload started generation=1 workers=2",
            "x  INFO master_process::supervisor: worker started pid=12 index=0 generation=1",
            "x  INFO master_process::supervisor: worker stopped pid=10 index=0 generation=0 status=exited with code 0",
            "x  INFO master_process::supervisor: reload queued: it starts when the current one ends",
            "x  WARN master_process::supervisor: worker exited unexpectedly pid=11 index=1",
            "x  INFO master_process::supervisor: reload done generation=1 took_ms=20",
        ]);
        assert_eq!(live_workers(&lines), BTreeSet::from([12]));
        let counts = Reloads::count(&lines[..6]);
        assert_eq!(
            (counts.started, counts.done, counts.failed, counts.queued),
            (1, 0, 0, 1)
        );
        assert!(counts.in_flight());
        let h = Harvest::of(lines);
        assert!(!h.reloads.in_flight());
        assert_eq!(h.took_ms, [20.0]);
        assert_eq!(h.warnings.len(), 1);
    }

    #[test]
    fn waits_for_lines() {
        let log = Arc::new(Log::default());
        let reader = Arc::clone(&log);
        let t = std::thread::spawn(move || read_lines(&b"a\nb x=1\r\nc"[..], reader, None));
        assert_eq!(
            log.wait_from(1, Duration::from_secs(5), |l| l.contains('x')),
            Some((1, "b x=1".into()))
        );
        assert!(log.wait_closed(Duration::from_secs(5)));
        t.join().expect("reader");
        assert_eq!(log.lines(), ["a", "b x=1", "c"]);
        assert!(!log.wait_until(Duration::from_secs(5), |l| l.len() > 3));
        assert_eq!(log.tail(1), "\n    c");
    }
}
