//! `loadgen` command: run an HTTP/1.1 load against a TCP or Unix socket
//! target and print how every request ended.
//!
//! Exit status: 0 when no request failed, 1 when any did, 2 on a usage error.

use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use loadgen::{Config, Mode, Target};

const USAGE: &str = "\
usage: loadgen [OPTIONS] TARGET

Sends HTTP/1.1 GET requests back to back and counts how each one ended.
TARGET is HOST:PORT (127.0.0.1:8080, [::1]:8080) or unix:/path/to.sock.

options:
  -c, --connections N    concurrent connections, one thread each [4]
  -m, --mode MODE        close (new connection per request) or keepalive [close]
  -d, --duration DUR     how long to run [10s, or unlimited with --until-stdin-eof]
  -t, --timeout DUR      per-request deadline [2s]
      --path P           request path [/]
      --host H           Host header [localhost]
      --json             print the report as JSON
      --until-stdin-eof  also stop when standard input reaches end of file
  -h, --help             show this help

DUR is a number with an optional unit: 500ms, 20s, 2m, 1.5 (seconds).
Also stops on SIGINT or SIGTERM. In-flight requests are completed and counted.
Exit status: 0 if no request failed, 1 if any failed, 2 on a usage error.";

/// Set by the SIGINT/SIGTERM handler.
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// Set when standard input reaches EOF (with --until-stdin-eof).
static STDIN_EOF: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALLED.store(true, Ordering::SeqCst);
}

struct Args {
    cfg: Config,
    duration: Option<Duration>,
    json: bool,
    until_stdin_eof: bool,
}

enum Parsed {
    Run(Box<Args>),
    Help,
}

/// Parses `500ms`, `20s`, `2m`, `100us` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration {s:?} (use e.g. 500ms, 20s, 2m)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 20s, 2m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("duration {s:?} out of range"))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut target: Option<Target> = None;
    let mut connections = 4usize;
    let mut mode = Mode::Close;
    let mut duration = None;
    let mut timeout = Duration::from_secs(2);
    let mut path = "/".to_owned();
    let mut host = "localhost".to_owned();
    let mut json = false;
    let mut until_stdin_eof = false;

    while let Some(arg) = args.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .ok_or_else(|| format!("{name} needs a value ({what})")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-c" | "--connections" => {
                let v = value("a number")?;
                connections = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("invalid --connections {v:?}: expected a number >= 1")
                })?;
            }
            "-m" | "--mode" => {
                mode = value("close or keepalive")?
                    .parse()
                    .map_err(|e| format!("{e}"))?;
            }
            "-d" | "--duration" => duration = Some(parse_duration(&value("e.g. 20s")?)?),
            "-t" | "--timeout" => {
                timeout = parse_duration(&value("e.g. 2s")?)?;
                if timeout.is_zero() {
                    return Err("--timeout must be more than 0".to_owned());
                }
            }
            "--path" => {
                path = value("e.g. /")?;
                if path.is_empty()
                    || path
                        .chars()
                        .any(|c| c.is_ascii_whitespace() || c.is_control())
                {
                    return Err(format!(
                        "invalid --path {path:?}: must be non-empty, without spaces"
                    ));
                }
            }
            "--host" => {
                host = value("a host name")?;
                if host.is_empty()
                    || host
                        .chars()
                        .any(|c| c.is_ascii_whitespace() || c.is_control())
                {
                    return Err(format!(
                        "invalid --host {host:?}: must be non-empty, without spaces"
                    ));
                }
            }
            "--json" => json = true,
            "--until-stdin-eof" => until_stdin_eof = true,
            _ if name.starts_with('-') && name.len() > 1 => {
                return Err(format!("unknown option {name}"));
            }
            _ => {
                if target.is_some() {
                    return Err(format!("unexpected argument {arg:?}: only one TARGET"));
                }
                target = Some(arg.parse().map_err(|e| format!("{e}"))?);
            }
        }
        if inline.is_some() && matches!(name.as_str(), "--json" | "--until-stdin-eof" | "--help") {
            return Err(format!("{name} takes no value"));
        }
    }
    let target = target.ok_or("missing TARGET (e.g. 127.0.0.1:8080 or unix:/path.sock)")?;
    if duration.is_none() && !until_stdin_eof {
        duration = Some(Duration::from_secs(10));
    }
    let mut cfg = Config::new(target);
    cfg.connections = connections;
    cfg.mode = mode;
    cfg.request_timeout = timeout;
    cfg.path = path;
    cfg.host = host;
    Ok(Parsed::Run(Box::new(Args {
        cfg,
        duration,
        json,
        until_stdin_eof,
    })))
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores
        // to a static atomic, which is async-signal-safe; installing it
        // replaces the default (terminate) disposition and touches no
        // memory of ours.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("loadgen: {msg} (see loadgen --help)");
            return ExitCode::from(2);
        }
    };
    install_signal_handlers();
    if args.until_stdin_eof {
        thread::spawn(|| {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            STDIN_EOF.store(true, Ordering::SeqCst);
        });
    }

    let start = Instant::now();
    let load = loadgen::start(args.cfg);
    // Poll the stop conditions; 20 ms is far below any useful run length.
    loop {
        if SIGNALLED.load(Ordering::SeqCst) || STDIN_EOF.load(Ordering::SeqCst) {
            break;
        }
        let left = match args.duration {
            Some(d) => d.saturating_sub(start.elapsed()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            break;
        }
        thread::sleep(left.min(Duration::from_millis(20)));
    }
    let report = load.stop();
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if report.total() == 0 {
        eprintln!("loadgen: warning: no request completed");
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        for bad in ["", "s", "-1s", "1x", "1 s", "1.2.3"] {
            assert!(parse_duration(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn args() {
        let Parsed::Run(a) = parse(&[
            "--connections",
            "8",
            "--mode=keepalive",
            "-d",
            "500ms",
            "--timeout",
            "1s",
            "--path",
            "/x",
            "--json",
            "unix:/tmp/s",
        ])
        .unwrap() else {
            panic!("help?")
        };
        assert_eq!(a.cfg.connections, 8);
        assert_eq!(a.cfg.mode, Mode::KeepAlive);
        assert_eq!(a.duration, Some(Duration::from_millis(500)));
        assert_eq!(a.cfg.request_timeout, Duration::from_secs(1));
        assert_eq!(a.cfg.path, "/x");
        assert!(a.json && !a.until_stdin_eof);
        assert_eq!(a.cfg.target, Target::Unix("/tmp/s".into()));

        let Parsed::Run(a) = parse(&["127.0.0.1:1"]).unwrap() else {
            panic!()
        };
        assert_eq!(a.duration, Some(Duration::from_secs(10)));
        let Parsed::Run(a) = parse(&["--until-stdin-eof", "127.0.0.1:1"]).unwrap() else {
            panic!()
        };
        assert_eq!(a.duration, None);

        assert!(matches!(parse(&["-h"]), Ok(Parsed::Help)));
        for bad in [
            &[][..],
            &["--connections", "0", "127.0.0.1:1"],
            &["--mode", "fast", "127.0.0.1:1"],
            &["--bogus", "127.0.0.1:1"],
            &["127.0.0.1:1", "127.0.0.1:2"],
            &["--timeout", "0", "127.0.0.1:1"],
            &["--json=yes", "127.0.0.1:1"],
            &["127.0.0.1:1", "--duration"],
            &["nonsense"],
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
