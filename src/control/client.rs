//! The client side: `master-process reload | status | stop | signal`, and how their answers
//! are shown (a table for people, JSON for scripts).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Record, Request};

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens at the path.
    #[error(
        "no master listens on {path} ({source}); is it running? (--control PATH or MASTER_PROCESS_CONTROL)"
    )]
    Connect {
        /// The control socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Something that is not a master of ours answers there.
    #[error("control socket {path}: {reason}")]
    Untrusted {
        /// The control socket.
        path: PathBuf,
        /// Who answers.
        reason: String,
    },
    /// The connection broke, or timed out.
    #[error("control socket {path}: {source}")]
    Io {
        /// The control socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The master answered with an error.
    #[error("the master says: {0}")]
    Refused(String),
    /// The answer does not follow the protocol.
    #[error("unexpected answer from the master: {0}")]
    Protocol(String),
}

/// Connects to the master at `path`, if it is ours (our user, or root) that answers.
fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    super::paths::check_peer(&stream).map_err(|reason| ClientError::Untrusted {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(stream)
}

/// `master-process events`: prints each event the master sends as one JSON object per
/// line, until the master goes away (0) or the connection fails (1).
fn stream_events(path: &Path) -> Result<(), ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = connect(path)?;
    writeln!(stream, "{}", Request::Events.line()).map_err(io_err)?;
    let stdout = io::stdout();
    for line in BufReader::new(stream).lines() {
        let record = Record::decode(&line.map_err(io_err)?).map_err(ClientError::Protocol)?;
        match record.kind.as_str() {
            "event" => {
                let mut out = stdout.lock();
                // A reader that went away (`| head`) ends the stream quietly.
                if writeln!(out, "{}", json_object(&record))
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
            "error" => {
                return Err(ClientError::Refused(
                    record.get("message").unwrap_or("unknown error").to_string(),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sends `request` to the master at `path` and returns its answer's records (without the
/// final `end`). `timeout` bounds the whole exchange.
pub fn request(
    path: &Path,
    req: Request,
    timeout: Option<Duration>,
) -> Result<Vec<Record>, ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = connect(path)?;
    stream.set_read_timeout(timeout).map_err(io_err)?;
    stream.set_write_timeout(timeout).map_err(io_err)?;
    // A master that refuses us answers at once and closes: the write may then fail, but the
    // answer is there to read.
    let sent = writeln!(stream, "{}", req.line());
    let mut records = Vec::new();
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next() {
        let line = line.map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                io_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer within the timeout",
                ))
            } else {
                io_err(e)
            }
        })?;
        let record = Record::decode(&line).map_err(ClientError::Protocol)?;
        match record.kind.as_str() {
            // `stop --wait`: the master closes the connection when it exits; wait for that.
            "end" if req == (Request::Stop { wait: true }) => {
                lines.by_ref().for_each(drop);
                return Ok(records);
            }
            "end" => return Ok(records),
            "error" => {
                return Err(ClientError::Refused(
                    record.get("message").unwrap_or("unknown error").to_string(),
                ));
            }
            _ => records.push(record),
        }
    }
    match sent {
        Err(e) => Err(io_err(e)),
        Ok(()) => Err(io_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the master closed the connection without an answer",
        ))),
    }
}

/// Runs a control command for the CLI and prints its outcome; returns the exit code: 0 on
/// success, 1 on failure (a failed reload, an error), 2 if it could not even ask.
pub fn run_command(path: &Path, req: Request, timeout: Option<Duration>, json: bool) -> u8 {
    let answer = match req {
        Request::Events => stream_events(path).map(|()| Vec::new()),
        _ => request(path, req, timeout),
    };
    match answer {
        Ok(records) => match req {
            Request::Status => {
                print!(
                    "{}",
                    if json {
                        status_json(&records)
                    } else {
                        status_table(&records)
                    }
                );
                0
            }
            Request::Reload { wait } | Request::Upgrade { wait } => {
                print_reload(&records, wait, json)
            }
            Request::Events => 0,
            Request::Stop { .. } | Request::Signal(_) => {
                for r in &records {
                    println!("{}", describe(r));
                }
                0
            }
        },
        Err(e @ (ClientError::Connect { .. } | ClientError::Untrusted { .. })) => {
            eprintln!("master-process: error: {e}");
            2
        }
        Err(e) => {
            eprintln!("master-process: error: {e}");
            1
        }
    }
}

fn print_reload(records: &[Record], waited: bool, json: bool) -> u8 {
    let Some(r) = records.iter().find(|r| r.kind == "reload") else {
        eprintln!("master-process: error: no reload record in the answer");
        return 1;
    };
    let failed = waited && r.get("outcome") != Some("done");
    if json {
        println!("{}", json_object(r));
        return u8::from(failed);
    }
    let generation = r.get("generation").unwrap_or("?");
    if !waited {
        println!(
            "reload {generation} {}",
            r.get("state").unwrap_or("requested")
        );
        return 0;
    }
    let serving = r.get("serving").unwrap_or("");
    match r.get("outcome") {
        Some("done") => {
            println!(
                "reload {generation} done in {} ms; serving: {serving}",
                r.get("took_ms").unwrap_or("?")
            );
            0
        }
        _ => {
            println!(
                "reload {generation} failed: {}",
                r.get("reason").unwrap_or("unknown reason")
            );
            println!("still serving: {serving}");
            1
        }
    }
}

/// A record as `kind key=value ...` for people.
fn describe(r: &Record) -> String {
    let mut s = r.kind.clone();
    for (k, v) in &r.fields {
        let _ = write!(s, " {k}={v}");
    }
    s
}

pub(crate) fn get<'a>(r: &'a Record, key: &str) -> &'a str {
    r.get(key).unwrap_or("-")
}

fn duration(ms: &str) -> String {
    ms.parse::<u64>()
        .map(|ms| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string())
        .map(|s| if s == "0s" { "<1s".to_string() } else { s })
        .unwrap_or_else(|_| "-".into())
}

fn megabytes(kb: &str) -> String {
    kb.parse::<f64>()
        .map(|kb| format!("{:.1} MB", kb / 1024.0))
        .unwrap_or_else(|_| "-".into())
}

/// The status answer as text for people.
pub fn status_table(records: &[Record]) -> String {
    let mut out = String::new();
    let one = |kind: &str| records.iter().find(|r| r.kind == kind);
    if let Some(m) = one("master") {
        let _ = writeln!(
            out,
            "master {} (master-process {}), up {}, {}; {} workers, ready by {}, reloads {}",
            get(m, "pid"),
            get(m, "version"),
            duration(get(m, "uptime_ms")),
            get(m, "phase"),
            get(m, "workers"),
            get(m, "ready"),
            get(m, "reload_strategy"),
        );
        let _ = writeln!(
            out,
            "generation {}: {} reloads done, {} failed{}",
            get(m, "generation"),
            get(m, "reloads_done"),
            get(m, "reloads_failed"),
            m.get("reload_in_flight")
                .map(|g| format!("; reload {g} in flight ({})", get(m, "reload_stage")))
                .unwrap_or_default()
        );
    }
    for l in records.iter().filter(|r| r.kind == "listener") {
        let _ = write!(out, "listening on {}", get(l, "addr"));
        if let Some(name) = l.get("name") {
            let _ = write!(out, " ({name})");
        }
        if let Some(backlog) = l.get("backlog") {
            let _ = write!(out, ", backlog {backlog}");
        }
        if l.get("workers_get_it") == Some("adopted") {
            out.push_str(", adopted from the app's own bind");
        }
        if l.get("alive") == Some("false") {
            out.push_str(", DEAD");
        }
        out.push('\n');
    }
    if let Some(r) = one("last_reload") {
        let _ = write!(
            out,
            "last reload: {} {} in {} ms",
            get(r, "generation"),
            get(r, "outcome"),
            get(r, "took_ms")
        );
        if let Some(reason) = r.get("reason") {
            let _ = write!(out, ": {reason}");
        }
        out.push('\n');
    }
    let slots: Vec<&Record> = records.iter().filter(|r| r.kind == "slot").collect();
    let slot = |index: &str| slots.iter().find(|s| get(s, "index") == index);
    let header = [
        "INDEX", "PID", "GEN", "ROLE", "STATE", "UPTIME", "RESTARTS", "RSS", "CPU%",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for w in records.iter().filter(|r| r.kind == "worker") {
        let index = get(w, "index");
        let restarts = slot(index).map(|s| get(s, "restarts")).unwrap_or("-");
        rows.push(vec![
            index.into(),
            get(w, "pid").into(),
            get(w, "generation").into(),
            get(w, "role").into(),
            get(w, "state").into(),
            duration(get(w, "uptime_ms")),
            restarts.into(),
            megabytes(get(w, "rss_kb")),
            get(w, "cpu_pct").into(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    for s in slots
        .iter()
        .filter(|s| get(s, "crash_loop") == "true" || s.get("restart_in_ms").is_some())
    {
        let _ = writeln!(
            out,
            "slot {}: {} crashes in a row{}{}",
            get(s, "index"),
            get(s, "crashes"),
            if get(s, "crash_loop") == "true" {
                " (crash loop)"
            } else {
                ""
            },
            s.get("restart_in_ms")
                .map(|ms| format!("; restart in {ms} ms"))
                .unwrap_or_default()
        );
    }
    out
}

/// The status answer as JSON for scripts: `{"master": {...}, "listeners": [...],
/// "last_reload": {...} | null, "recent_reloads": [...newest first], "workers": [...],
/// "slots": [...]}`. Numbers and booleans
/// are JSON numbers and booleans; everything else is a string.
pub fn status_json(records: &[Record]) -> String {
    let object = json_object;
    let many = |kind: &str| {
        let items: Vec<String> = records
            .iter()
            .filter(|r| r.kind == kind)
            .map(object)
            .collect();
        format!("[{}]", items.join(","))
    };
    let single = |kind: &str| {
        records
            .iter()
            .find(|r| r.kind == kind)
            .map(object)
            .unwrap_or_else(|| "null".into())
    };
    format!(
        "{{\"master\":{},\"listeners\":{},\"last_reload\":{},\"recent_reloads\":{},\"workers\":{},\"slots\":{}}}\n",
        single("master"),
        many("listener"),
        single("last_reload"),
        many("recent_reload"),
        many("worker"),
        many("slot")
    )
}

/// A record's fields as a JSON object (numbers and booleans typed).
fn json_object(r: &Record) -> String {
    let fields: Vec<String> = r
        .fields
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_value(v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn json_value(v: &str) -> String {
    let numeric = !v.is_empty()
        && v.parse::<f64>().is_ok_and(f64::is_finite)
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !v.starts_with('.')
        && !(v.len() > 1 && v.starts_with('0') && !v.starts_with("0."));
    if numeric || v == "true" || v == "false" {
        v.to_string()
    } else {
        json_string(v)
    }
}

pub(crate) use crate::logging::json_string;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::new("master")
                .with("pid", 10)
                .with("version", "0.1.0")
                .with("uptime_ms", 65000)
                .with("phase", "running"),
            Record::new("listener")
                .with("name", "web")
                .with("addr", "127.0.0.1:8080"),
            Record::new("worker")
                .with("index", 0)
                .with("pid", 11)
                .with("generation", 2)
                .with("role", "serving")
                .with("state", "ready")
                .with("uptime_ms", 3000)
                .with("rss_kb", 2048)
                .with("cpu_pct", "0.5"),
            Record::new("slot")
                .with("index", 0)
                .with("restarts", 1)
                .with("crashes", 3)
                .with("crash_loop", true),
        ]
    }

    #[test]
    fn status_json_types_numbers_and_booleans() {
        let json = status_json(&sample());
        assert!(
            json.starts_with("{\"master\":{\"pid\":10,\"version\":\"0.1.0\""),
            "{json}"
        );
        assert!(json.contains("\"cpu_pct\":0.5"), "{json}");
        assert!(json.contains("\"crash_loop\":true"), "{json}");
        assert!(json.contains("\"last_reload\":null"), "{json}");
        assert_eq!(json_value("007"), "\"007\"");
        assert_eq!(json_value("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn status_table_lines_up_and_flags_crash_loops() {
        let table = status_table(&sample());
        assert!(
            table.contains("master 10 (master-process 0.1.0), up 1m 5s, running"),
            "{table}"
        );
        assert!(
            table.contains("INDEX  PID  GEN  ROLE     STATE  UPTIME  RESTARTS  RSS     CPU%"),
            "{table}"
        );
        assert!(
            table.contains("slot 0: 3 crashes in a row (crash loop)"),
            "{table}"
        );
    }
}
