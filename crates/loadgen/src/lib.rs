//! `loadgen`: an honest HTTP/1.1 load client that accounts for every request.
//!
//! It exists to prove "zero failed requests during reloads": each request
//! sent ends in exactly one bucket of a [`Report`] — ok (2xx), refused,
//! reset, closed early, timed out, non-2xx, or other — and requests still in
//! flight when the run ends are waited for and counted, never dropped.
//!
//! One OS thread per connection, `std` sockets only (TCP or Unix stream),
//! every blocking step bounded by the per-request deadline.
//!
//! ```no_run
//! use std::time::Duration;
//! let mut cfg = loadgen::Config::new("127.0.0.1:8080".parse().unwrap());
//! cfg.mode = loadgen::Mode::KeepAlive;
//! let load = loadgen::start(cfg);
//! assert!(load.wait_for_requests(100, Duration::from_secs(5)));
//! // ... reload the server here ...
//! let report = load.stop();
//! assert_eq!(report.failed(), 0, "{report}");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod conn;
mod hist;
mod http;

use conn::Conn;
use hist::Histogram;
use http::{ReadError, read_response};

/// How many error samples a [`Report`] keeps.
pub const MAX_ERROR_SAMPLES: usize = 20;

/// Where to send requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

/// Error from parsing a [`Target`] or a [`Mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Target {
    type Err = ParseError;

    /// Parses `127.0.0.1:8080`, `[::1]:8080` or `unix:/path/x.sock`. A
    /// `host:port` with a name (e.g. `localhost:8080`) is resolved once,
    /// here, to its first address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ParseError(format!(
                    "invalid target {s:?}: empty unix socket path"
                )));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target::Tcp(addr));
        }
        let invalid = || {
            ParseError(format!(
                "invalid target {s:?}: expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080) or unix:/path"
            ))
        };
        // Resolve `name:port`; a bare IPv6 address needs brackets.
        match s.rsplit_once(':') {
            Some((host, _)) if !host.is_empty() && !host.contains(':') => {}
            _ => return Err(invalid()),
        }
        s.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(Target::Tcp)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Connection handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// A new connection per request, sending `Connection: close`.
    #[default]
    Close,
    /// Persistent connections. A connection is replaced (not counted as a
    /// failure) when the server answers with `Connection: close` or closes it
    /// while idle after a complete response. A request sent on a reused
    /// connection that the server then closes without answering is a failure
    /// (`closed_early`), never retried.
    KeepAlive,
}

impl FromStr for Mode {
    type Err = ParseError;

    /// `close`, `keepalive` or `keep-alive` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("close") {
            Ok(Mode::Close)
        } else if s.eq_ignore_ascii_case("keepalive") || s.eq_ignore_ascii_case("keep-alive") {
            Ok(Mode::KeepAlive)
        } else {
            Err(ParseError(format!(
                "invalid mode {s:?}: expected close or keepalive"
            )))
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Close => "close",
            Mode::KeepAlive => "keepalive",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to connect.
    pub target: Target,
    /// Number of connections, each driven by its own thread, each with at
    /// most one request in flight.
    pub connections: usize,
    /// New connection per request, or persistent connections.
    pub mode: Mode,
    /// Deadline for one request, from the start of its connect (or, on a
    /// reused connection, of its write) to the last byte of the response.
    pub request_timeout: Duration,
    /// Request path (request-target), e.g. `/`.
    pub path: String,
    /// Value of the `Host` header.
    pub host: String,
    /// Requests each connection thread sends before it stops by itself (`None`: until
    /// [`Load::stop`]). With `Some(1)` and [`Config::start_together`], a burst.
    pub requests_per_connection: Option<u64>,
    /// Every thread waits until all are spawned, then they start at once.
    pub start_together: bool,
}

impl Config {
    /// 4 connections, [`Mode::Close`], a 2 s deadline, path `/`, host `localhost`.
    pub fn new(target: Target) -> Self {
        Config {
            target,
            connections: 4,
            mode: Mode::Close,
            request_timeout: Duration::from_secs(2),
            path: "/".to_owned(),
            host: "localhost".to_owned(),
            requests_per_connection: None,
            start_together: false,
        }
    }
}

/// Counts for a run so far, or for a finished run.
///
/// Every request sent is counted exactly once, in `ok` or in one of the
/// failure buckets.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Complete responses with a 2xx status.
    pub ok: u64,
    /// Connects refused (nothing listening; for a Unix target also a missing
    /// socket file).
    pub refused: u64,
    /// Connections reset (`ECONNRESET`/`EPIPE`) while writing or reading.
    pub reset: u64,
    /// Connection closed by the server before a complete response (end of
    /// stream with no or only part of a response).
    pub closed_early: u64,
    /// Request deadline passed (connect, write or read).
    pub timeout: u64,
    /// Complete responses with a status other than 2xx.
    pub bad_status: u64,
    /// Anything else: unparsable responses, unexpected socket errors.
    pub other: u64,
    /// For 2xx responses whose body ends with a decimal number (the answering
    /// worker's pid): how many came from each.
    pub by_pid: BTreeMap<u32, u64>,
    /// The first [`MAX_ERROR_SAMPLES`] failures, each as
    /// `"<seconds since start>s <kind>: <detail>"`.
    pub errors: Vec<String>,
    /// Time since the load started (for a final report: until every thread
    /// had finished).
    pub elapsed: Duration,
    /// Median latency of ok requests (bucketed, within ~3 %).
    pub latency_p50: Duration,
    /// 99th percentile latency of ok requests (bucketed, within ~3 %).
    pub latency_p99: Duration,
    /// Largest latency of an ok request.
    pub latency_max: Duration,
    /// Connections established (a connect that succeeded, whatever the request did next).
    pub connects: u64,
    /// Median time to establish a new connection (bucketed, within ~3 %): on TCP, until the
    /// SYN-ACK came back; a SYN dropped by a full accept queue shows as about 1 s more.
    pub connect_p50: Duration,
    /// 99th percentile time to establish a new connection.
    pub connect_p99: Duration,
    /// Longest time to establish a new connection.
    pub connect_max: Duration,
}

impl Report {
    /// All requests that did not end in a 2xx response.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.closed_early + self.timeout + self.bad_status + self.other
    }

    /// All requests counted: `ok + failed()`.
    pub fn total(&self) -> u64 {
        self.ok + self.failed()
    }

    /// `total()` divided by `elapsed` (0 when no time has passed).
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        }
    }

    /// The report as one JSON object. Durations are given in microseconds
    /// (`*_us`), `elapsed_secs` and `requests_per_sec` as decimals; `failed`
    /// and `total` are included for convenience.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push('{');
        for (name, value) in [
            ("ok", self.ok),
            ("failed", self.failed()),
            ("total", self.total()),
            ("refused", self.refused),
            ("reset", self.reset),
            ("closed_early", self.closed_early),
            ("timeout", self.timeout),
            ("bad_status", self.bad_status),
            ("other", self.other),
        ] {
            out.push_str(&format!("\"{name}\":{value},"));
        }
        out.push_str("\"by_pid\":{");
        for (i, (pid, count)) in self.by_pid.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{pid}\":{count}"));
        }
        out.push_str("},\"errors\":[");
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, e);
        }
        out.push_str(&format!(
            "],\"elapsed_secs\":{:.6},\"requests_per_sec\":{:.1},\"latency_p50_us\":{},\"latency_p99_us\":{},\"latency_max_us\":{},\"connects\":{},\"connect_p50_us\":{},\"connect_p99_us\":{},\"connect_max_us\":{}}}",
            self.elapsed.as_secs_f64(),
            self.requests_per_sec(),
            self.latency_p50.as_micros(),
            self.latency_p99.as_micros(),
            self.latency_max.as_micros(),
            self.connects,
            self.connect_p50.as_micros(),
            self.connect_p99.as_micros(),
            self.connect_max.as_micros(),
        ));
        out
    }
}

/// Appends `s` to `out` as a JSON string literal (quotes and escapes included).
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn fmt_latency(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Report {
    /// Two lines (counts; latency and pids), plus the error samples when
    /// anything failed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.2}s ({:.0} req/s): {} ok, {} failed \
             (refused {}, reset {}, closed_early {}, timeout {}, bad_status {}, other {})",
            self.total(),
            self.elapsed.as_secs_f64(),
            self.requests_per_sec(),
            self.ok,
            self.failed(),
            self.refused,
            self.reset,
            self.closed_early,
            self.timeout,
            self.bad_status,
            self.other,
        )?;
        write!(
            f,
            "\nlatency p50 {} p99 {} max {}; by pid:",
            fmt_latency(self.latency_p50),
            fmt_latency(self.latency_p99),
            fmt_latency(self.latency_max),
        )?;
        if self.connects > 0 {
            write!(
                f,
                "; connect p50 {} p99 {} max {} ({} connects)",
                fmt_latency(self.connect_p50),
                fmt_latency(self.connect_p99),
                fmt_latency(self.connect_max),
                self.connects,
            )?;
        }
        if self.by_pid.is_empty() {
            f.write_str(" none")?;
        }
        for (pid, count) in &self.by_pid {
            write!(f, " {pid}={count}")?;
        }
        if !self.errors.is_empty() {
            write!(f, "\nfirst errors:")?;
            for e in &self.errors {
                write!(f, "\n  {e}")?;
            }
        }
        Ok(())
    }
}

/// Outcome buckets, indexing `ThreadStats::counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Refused,
    Reset,
    ClosedEarly,
    Timeout,
    BadStatus,
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Refused => "refused",
            Kind::Reset => "reset",
            Kind::ClosedEarly => "closed_early",
            Kind::Timeout => "timeout",
            Kind::BadStatus => "bad_status",
            Kind::Other => "other",
        }
    }
}

/// One connection thread's counts; locked by its thread once per request and
/// by snapshots.
#[derive(Default)]
struct ThreadStats {
    counts: [u64; 7],
    by_pid: BTreeMap<u32, u64>,
    latency: Histogram,
    connect: Histogram,
}

struct Shared {
    start: Instant,
    stop: AtomicBool,
    stats: Vec<Mutex<ThreadStats>>,
    /// Requests finished (any outcome); `progress` is notified when it grows
    /// and someone waits.
    done: Mutex<u64>,
    progress: Condvar,
    waiters: AtomicUsize,
    errors: Mutex<Vec<String>>,
    errors_full: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Outcome = Result<Option<u32>, (Kind, String)>;

impl Shared {
    fn record(&self, idx: usize, outcome: Outcome, latency: Duration) {
        {
            let mut s = lock(&self.stats[idx]);
            match &outcome {
                Ok(pid) => {
                    s.counts[Kind::Ok as usize] += 1;
                    s.latency.record(latency);
                    if let Some(pid) = pid {
                        *s.by_pid.entry(*pid).or_default() += 1;
                    }
                }
                Err((kind, _)) => s.counts[*kind as usize] += 1,
            }
        }
        if let Err((kind, detail)) = outcome {
            if !self.errors_full.load(Ordering::Relaxed) {
                let at = self.start.elapsed().as_secs_f64();
                let mut errors = lock(&self.errors);
                if errors.len() < MAX_ERROR_SAMPLES {
                    errors.push(format!("{at:.3}s {}: {detail}", kind.name()));
                }
                if errors.len() >= MAX_ERROR_SAMPLES {
                    self.errors_full.store(true, Ordering::Relaxed);
                }
            }
        }
        let mut done = lock(&self.done);
        *done += 1;
        // Waiters register under the same lock, so this cannot miss one.
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.progress.notify_all();
        }
    }

    fn report(&self) -> Report {
        let mut counts = [0u64; 7];
        let mut by_pid = BTreeMap::new();
        let mut latency = Histogram::default();
        let mut connect = Histogram::default();
        for stats in &self.stats {
            let s = lock(stats);
            for (total, n) in counts.iter_mut().zip(s.counts) {
                *total += n;
            }
            for (&pid, &n) in &s.by_pid {
                *by_pid.entry(pid).or_default() += n;
            }
            latency.merge(&s.latency);
            connect.merge(&s.connect);
        }
        Report {
            ok: counts[Kind::Ok as usize],
            refused: counts[Kind::Refused as usize],
            reset: counts[Kind::Reset as usize],
            closed_early: counts[Kind::ClosedEarly as usize],
            timeout: counts[Kind::Timeout as usize],
            bad_status: counts[Kind::BadStatus as usize],
            other: counts[Kind::Other as usize],
            by_pid,
            errors: lock(&self.errors).clone(),
            elapsed: self.start.elapsed(),
            latency_p50: latency.quantile(0.50),
            latency_p99: latency.quantile(0.99),
            latency_max: latency.max(),
            connects: connect.total(),
            connect_p50: connect.quantile(0.50),
            connect_p99: connect.quantile(0.99),
            connect_max: connect.max(),
        }
    }

    fn record_connect(&self, idx: usize, took: Duration) {
        lock(&self.stats[idx]).connect.record(took);
    }
}

/// A running load; see [`start`]. Dropping it stops and joins the threads
/// like [`Load::stop`], discarding the report.
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("threads", &self.threads.len())
            .field("stopping", &self.shared.stop.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Starts `cfg.connections` threads, each sending requests back to back on
/// its own connection, and returns at once.
///
/// # Panics
/// If the OS refuses to create a thread.
pub fn start(cfg: Config) -> Load {
    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        stats: (0..cfg.connections)
            .map(|_| Mutex::new(ThreadStats::default()))
            .collect(),
        done: Mutex::new(0),
        progress: Condvar::new(),
        waiters: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        errors_full: AtomicBool::new(false),
    });
    let connection_header = match cfg.mode {
        Mode::Close => "close",
        Mode::KeepAlive => "keep-alive",
    };
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen\r\nConnection: {connection_header}\r\n\r\n",
        cfg.path, cfg.host
    )
    .into_bytes()
    .into();
    let together = cfg
        .start_together
        .then(|| Arc::new(Barrier::new(cfg.connections)));
    let threads = (0..cfg.connections)
        .map(|idx| {
            let worker = Worker {
                shared: Arc::clone(&shared),
                idx,
                target: cfg.target.clone(),
                mode: cfg.mode,
                timeout: cfg.request_timeout,
                request: Arc::clone(&request),
                conn: None,
                buf: Vec::with_capacity(8192),
                requests: cfg.requests_per_connection,
                together: together.clone(),
            };
            thread::Builder::new()
                .name(format!("loadgen-{idx}"))
                .stack_size(256 * 1024)
                .spawn(move || worker.run())
                .expect("failed to spawn a loadgen thread")
        })
        .collect();
    Load { shared, threads }
}

impl Load {
    /// Counts so far. Requests in flight are not in it yet.
    pub fn snapshot(&self) -> Report {
        self.shared.report()
    }

    /// Blocks until at least `n` requests have finished (any outcome) or
    /// `timeout` passes; returns whether `n` was reached.
    pub fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.shared.done);
        self.shared.waiters.fetch_add(1, Ordering::Relaxed);
        while *done < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            done = self
                .shared
                .progress
                .wait_timeout(done, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.shared.waiters.fetch_sub(1, Ordering::Relaxed);
        *done >= n
    }

    /// Blocks until `more` requests have finished (any outcome) after the ones finished
    /// so far, or `timeout` passes; returns whether they did: the load goes on.
    pub fn wait_for_more(&self, more: u64, timeout: Duration) -> bool {
        let seen = *lock(&self.shared.done);
        self.wait_for_requests(seen + more, timeout)
    }

    /// Asks every thread to stop after its current request, waits for them
    /// (so in-flight requests are completed and counted; this can take up to
    /// the request timeout) and returns the final counts.
    pub fn stop(mut self) -> Report {
        self.shutdown();
        self.shared.report()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                let mut errors = lock(&self.shared.errors);
                if errors.len() < MAX_ERROR_SAMPLES {
                    errors.push("a loadgen thread panicked".to_owned());
                }
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    shared: Arc<Shared>,
    idx: usize,
    target: Target,
    mode: Mode,
    timeout: Duration,
    request: Arc<[u8]>,
    conn: Option<Conn>,
    /// Received bytes not yet parsed.
    buf: Vec<u8>,
    /// Requests left to send, if limited.
    requests: Option<u64>,
    /// Waited on before the first request, if the threads start together.
    together: Option<Arc<Barrier>>,
}

impl Worker {
    fn run(mut self) {
        if let Some(barrier) = self.together.take() {
            barrier.wait();
        }
        while !self.shared.stop.load(Ordering::Relaxed) {
            if let Some(left) = &mut self.requests {
                if *left == 0 {
                    return;
                }
                *left -= 1;
            }
            let t0 = Instant::now();
            let outcome = self.request(t0 + self.timeout);
            self.shared.record(self.idx, outcome, t0.elapsed());
        }
    }

    /// Sends one request and reads its response.
    fn request(&mut self, deadline: Instant) -> Outcome {
        // An idle keep-alive connection the server has closed (or reset)
        // since its last complete response is replaced, not a failure.
        if self.conn.as_ref().is_some_and(|c| !c.reusable()) {
            self.conn = None;
        }
        let how = if self.conn.is_some() {
            "reused connection"
        } else {
            "new connection"
        };
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => match (Instant::now(), Conn::connect(&self.target, deadline)) {
                (c0, Ok(conn)) => {
                    self.shared.record_connect(self.idx, c0.elapsed());
                    self.conn.insert(conn)
                }
                (_, Err(e)) => return Err(self.connect_error(e)),
            },
        };
        self.buf.clear();
        if let Err(e) = conn.write_all(&self.request, deadline) {
            self.conn = None;
            return Err(self.io_error(e, "writing the request", how));
        }
        let resp = match read_response(conn, &mut self.buf, deadline) {
            Ok(resp) => resp,
            Err(e) => {
                self.conn = None;
                return Err(self.read_error(e, how));
            }
        };
        // Bytes after the response were never asked for: the connection's
        // framing cannot be trusted any more.
        if self.mode == Mode::Close || resp.close || !self.buf.is_empty() {
            self.conn = None;
        }
        if !(200..300).contains(&resp.status) {
            return Err((Kind::BadStatus, format!("HTTP status {}", resp.status)));
        }
        Ok(parse_pid(&resp.body))
    }

    fn connect_error(&self, e: std::io::Error) -> (Kind, String) {
        use std::io::ErrorKind as E;
        let kind = match e.kind() {
            E::ConnectionRefused | E::NotFound => Kind::Refused,
            E::TimedOut | E::WouldBlock => Kind::Timeout,
            E::ConnectionReset | E::ConnectionAborted => Kind::Reset,
            _ => Kind::Other,
        };
        (kind, format!("connecting to {}: {e}", self.target))
    }

    fn io_error(&self, e: std::io::Error, doing: &str, how: &str) -> (Kind, String) {
        use std::io::ErrorKind as E;
        let kind = match e.kind() {
            E::ConnectionReset | E::ConnectionAborted | E::BrokenPipe => Kind::Reset,
            E::TimedOut | E::WouldBlock => Kind::Timeout,
            _ => Kind::Other,
        };
        let e = match kind {
            Kind::Timeout => format!("no progress within {:?}", self.timeout),
            _ => e.to_string(),
        };
        (kind, format!("{doing} ({how}): {e}"))
    }

    fn read_error(&self, e: ReadError, how: &str) -> (Kind, String) {
        match e {
            ReadError::Timeout(got) => (
                Kind::Timeout,
                format!(
                    "no complete response within {:?} ({got} bytes received, {how})",
                    self.timeout
                ),
            ),
            ReadError::Eof(0) => (
                Kind::ClosedEarly,
                format!("connection closed before any response bytes ({how})"),
            ),
            ReadError::Eof(got) => (
                Kind::ClosedEarly,
                format!("connection closed after {got} bytes of an incomplete response ({how})"),
            ),
            ReadError::Io(e, got) => {
                self.io_error(e, &format!("reading the response after {got} bytes"), how)
            }
            ReadError::Parse(msg) => (Kind::Other, format!("bad response ({how}): {msg}")),
        }
    }
}

/// The body as a pid: its last word in ASCII decimal (`1234`, `hello from 1234`).
fn parse_pid(body: &[u8]) -> Option<u32> {
    std::str::from_utf8(body)
        .ok()?
        .split_whitespace()
        .next_back()?
        .parse()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
