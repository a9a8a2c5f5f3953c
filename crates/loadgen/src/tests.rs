//! Parsing tests and end-to-end accounting tests against small in-process
//! servers that behave or misbehave on purpose.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::AtomicU64;

#[test]
fn target_parsing() {
    assert_eq!(
        "127.0.0.1:8080".parse::<Target>().unwrap(),
        Target::Tcp("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(
        "[::1]:8080".parse::<Target>().unwrap(),
        Target::Tcp("[::1]:8080".parse().unwrap())
    );
    assert_eq!(
        "unix:/tmp/x.sock".parse::<Target>().unwrap(),
        Target::Unix("/tmp/x.sock".into())
    );
    assert_eq!(
        "unix:relative.sock".parse::<Target>().unwrap(),
        Target::Unix("relative.sock".into())
    );
    match "localhost:80".parse::<Target>().unwrap() {
        Target::Tcp(addr) => assert!(addr.ip().is_loopback() && addr.port() == 80),
        other => panic!("{other:?}"),
    }
    for bad in [
        "",
        "unix:",
        "127.0.0.1",
        "1.2.3.4:99999",
        "::1:80",
        "/tmp/x.sock",
    ] {
        assert!(bad.parse::<Target>().is_err(), "accepted {bad:?}");
    }
    assert_eq!(Target::Unix("/a".into()).to_string(), "unix:/a");
    assert_eq!("[::1]:8".parse::<Target>().unwrap().to_string(), "[::1]:8");
}

#[test]
fn mode_parsing() {
    assert_eq!("close".parse::<Mode>().unwrap(), Mode::Close);
    assert_eq!("keepalive".parse::<Mode>().unwrap(), Mode::KeepAlive);
    assert_eq!("keep-alive".parse::<Mode>().unwrap(), Mode::KeepAlive);
    assert_eq!("KeepAlive".parse::<Mode>().unwrap(), Mode::KeepAlive);
    for bad in ["", "keep", "closed", "keep_alive"] {
        assert!(bad.parse::<Mode>().is_err(), "accepted {bad:?}");
    }
}

#[test]
fn config_defaults() {
    let cfg = Config::new("127.0.0.1:1".parse().unwrap());
    assert_eq!(cfg.connections, 4);
    assert_eq!(cfg.mode, Mode::Close);
    assert_eq!(cfg.request_timeout, Duration::from_secs(2));
    assert_eq!(cfg.path, "/");
    assert_eq!(cfg.host, "localhost");
}

#[test]
fn pid_parsing() {
    assert_eq!(parse_pid(b"1234\n"), Some(1234));
    assert_eq!(parse_pid(b" 7 "), Some(7));
    assert_eq!(parse_pid(b"hello"), None);
    assert_eq!(parse_pid(b""), None);
    assert_eq!(parse_pid(b"-1\n"), None);
}

#[test]
fn report_json_and_display() {
    let mut r = Report {
        ok: 10,
        timeout: 2,
        elapsed: Duration::from_secs(2),
        errors: vec!["0.1s timeout: \"quoted\"\\ and\ttab\u{1}".to_owned()],
        ..Report::default()
    };
    r.by_pid.insert(42, 6);
    r.by_pid.insert(43, 4);
    assert_eq!(r.failed(), 2);
    assert_eq!(r.total(), 12);
    assert!((r.requests_per_sec() - 6.0).abs() < 1e-9);
    let json = r.to_json();
    assert!(
        json.starts_with("{\"ok\":10,\"failed\":2,\"total\":12,"),
        "{json}"
    );
    assert!(json.contains("\"by_pid\":{\"42\":6,\"43\":4}"), "{json}");
    assert!(
        json.contains(r#""errors":["0.1s timeout: \"quoted\"\\ and\ttab\u0001"]"#),
        "{json}"
    );
    assert!(json.ends_with('}'));
    let text = r.to_string();
    assert!(text.contains("12 requests"), "{text}");
    assert!(text.contains("42=6 43=4"), "{text}");
    assert!(text.contains("first errors:"), "{text}");
    assert_eq!(Report::default().requests_per_sec(), 0.0);
}

// ---- end-to-end against local servers ----

/// Reads one request head; false on EOF or error.
fn read_head(s: &mut impl Read) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    true
}

fn pid_response(close: bool) -> String {
    let body = format!("{}\n", std::process::id());
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Serves each accepted TCP connection with `handle` on its own thread.
fn tcp_server<F>(handle: F) -> Target
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handle = Arc::clone(&handle);
            thread::spawn(move || handle(conn));
        }
    });
    Target::Tcp(addr)
}

fn unix_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "loadgen-test-{}-{}-{name}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// A well-behaved keep-alive server answering with our pid; says
/// `Connection: close` on every `close_every`-th response of a connection
/// (0: never).
fn serve_pid(s: &mut (impl Read + Write), close_every: usize, served: &AtomicU64) {
    let mut n = 0;
    while read_head(s) {
        n += 1;
        served.fetch_add(1, Ordering::Relaxed);
        let close = close_every != 0 && n % close_every == 0;
        if s.write_all(pid_response(close).as_bytes()).is_err() || close {
            return;
        }
    }
}

fn run_for(cfg: Config, requests: u64) -> Report {
    let load = start(cfg);
    assert!(
        load.wait_for_requests(requests, Duration::from_secs(20)),
        "too slow: {}",
        load.snapshot()
    );
    load.stop()
}

fn assert_all_ok(r: &Report, served: &AtomicU64) {
    assert!(r.ok > 0, "{r}");
    assert_eq!(r.failed(), 0, "{r}");
    assert_eq!(
        r.by_pid.get(&std::process::id()).copied(),
        Some(r.ok),
        "{r}"
    );
    // Every request the server saw was counted (in-flight ones included).
    assert_eq!(r.ok, served.load(Ordering::Relaxed), "{r}");
    assert!(r.latency_p50 <= r.latency_p99 && r.latency_p99 <= r.latency_max);
    assert!(r.latency_max > Duration::ZERO);
}

#[test]
fn ok_close_and_keepalive_tcp() {
    for mode in [Mode::Close, Mode::KeepAlive] {
        let served = Arc::new(AtomicU64::new(0));
        let s2 = Arc::clone(&served);
        let target = tcp_server(move |mut s| serve_pid(&mut s, 0, &s2));
        let mut cfg = Config::new(target);
        cfg.mode = mode;
        let r = run_for(cfg, 200);
        assert_all_ok(&r, &served);
    }
}

#[test]
fn keepalive_reconnects_on_connection_close() {
    let served = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let (s2, a2) = (Arc::clone(&served), Arc::clone(&accepted));
    let target = tcp_server(move |mut s| {
        a2.fetch_add(1, Ordering::Relaxed);
        serve_pid(&mut s, 3, &s2)
    });
    let mut cfg = Config::new(target);
    cfg.mode = Mode::KeepAlive;
    cfg.connections = 2;
    let r = run_for(cfg, 60);
    assert_all_ok(&r, &served);
    // About one connection per three requests: connections were reused and
    // replaced.
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(
        accepted * 3 >= r.ok && accepted < r.ok,
        "{accepted} connections for {r}"
    );
}

#[test]
fn ok_unix_and_chunked() {
    let path = unix_path("ok");
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            thread::spawn(move || {
                while read_head(&mut s) {
                    let body = format!("{}\n", std::process::id());
                    let (a, b) = body.split_at(2);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                        a.len(),
                        b.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    for mode in [Mode::Close, Mode::KeepAlive] {
        let mut cfg = Config::new(Target::Unix(path.clone()));
        cfg.mode = mode;
        let r = run_for(cfg, 100);
        assert_eq!(r.failed(), 0, "{r}");
        assert_eq!(r.by_pid.get(&std::process::id()).copied(), Some(r.ok));
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn refused() {
    // TCP: a port that was just free.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Unix: a socket file nobody listens on, and no file at all.
    let stale = unix_path("stale");
    drop(UnixListener::bind(&stale).unwrap());
    let missing = unix_path("missing");
    for target in [
        Target::Tcp(addr),
        Target::Unix(stale.clone()),
        Target::Unix(missing),
    ] {
        let mut cfg = Config::new(target.clone());
        cfg.connections = 2;
        let r = run_for(cfg, 50);
        assert_eq!(r.refused, r.total(), "{target}: {r}");
        assert_eq!(r.ok, 0);
        assert!(r.errors[0].contains("refused:"), "{r}");
        assert_eq!(r.errors.len(), MAX_ERROR_SAMPLES);
    }
    let _ = std::fs::remove_file(&stale);
}

#[test]
fn accept_and_close_without_answer() {
    let target = tcp_server(drop);
    let r = run_for(Config::new(target), 50);
    assert_eq!(r.ok, 0, "{r}");
    assert_eq!(r.closed_early + r.reset, r.total(), "{r}");
}

#[test]
fn read_then_close_is_closed_early() {
    let target = tcp_server(|mut s| {
        read_head(&mut s);
    });
    let r = run_for(Config::new(target), 50);
    assert_eq!(r.closed_early, r.total(), "{r}");
}

#[test]
fn keepalive_reused_connection_closed_without_answer() {
    // Answers the first request of each connection, then reads the second
    // and closes without answering.
    let target = tcp_server(|mut s| {
        if read_head(&mut s) && s.write_all(pid_response(false).as_bytes()).is_ok() {
            read_head(&mut s);
        }
    });
    let mut cfg = Config::new(target);
    cfg.mode = Mode::KeepAlive;
    cfg.connections = 1;
    let r = run_for(cfg, 40);
    // Alternating: ok on the fresh connection, closed_early on its reuse.
    assert_eq!(r.reset + r.other + r.timeout + r.refused, 0, "{r}");
    assert!(r.ok.abs_diff(r.closed_early) <= 1, "{r}");
    assert!(r.errors[0].contains("closed_early"), "{r}");
    assert!(r.errors[0].contains("reused connection"), "{r}");
}

#[test]
fn never_answers_times_out_and_run_ends() {
    let target = tcp_server(|mut s| {
        read_head(&mut s);
        thread::sleep(Duration::from_secs(30));
    });
    let mut cfg = Config::new(target);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.connections = 3;
    let t0 = Instant::now();
    let load = start(cfg);
    assert!(load.wait_for_requests(6, Duration::from_secs(10)));
    let r = load.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(r.timeout, r.total(), "{r}");
    assert!(r.total() >= 6);
    assert!(r.errors[0].contains("timeout:"), "{r}");
}

/// A Unix listener with the smallest backlog, so it fills at once.
fn unix_listener_backlog_0(path: &std::path::Path) -> UnixListener {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: valid fd and a live sockaddr_un of at least `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            len as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: valid bound socket.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 0) }, 0);
    UnixListener::from(fd)
}

#[test]
fn listen_backlog_full_times_out_unix() {
    // Nobody ever accepts and the backlog is tiny: the first connects
    // succeed into the backlog (then nobody answers), later ones block in
    // connect(2) until the deadline. All must time out, none may hang.
    let path = unix_path("backlog");
    let listener = unix_listener_backlog_0(&path);
    let mut cfg = Config::new(Target::Unix(path.clone()));
    cfg.request_timeout = Duration::from_millis(100);
    cfg.connections = 4;
    let t0 = Instant::now();
    let r = run_for(cfg, 20);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(r.timeout, r.total(), "{r}");
    assert!(r.errors.iter().any(|e| e.contains("backlog full")), "{r}");
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_status() {
    let target = tcp_server(|mut s| {
        while read_head(&mut s) {
            let resp = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n";
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    for mode in [Mode::Close, Mode::KeepAlive] {
        let mut cfg = Config::new(target.clone());
        cfg.mode = mode;
        let r = run_for(cfg, 50);
        assert_eq!(r.bad_status, r.total(), "{r}");
        assert!(r.errors[0].contains("bad_status: HTTP status 500"), "{r}");
    }
}

#[test]
fn reset_by_linger_zero() {
    let target = tcp_server(|mut s| {
        read_head(&mut s);
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid socket fd; the option value is a live `linger`.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(s);
    });
    let r = run_for(Config::new(target), 50);
    assert_eq!(r.reset, r.total(), "{r}");
}

#[test]
fn garbage_response_is_other() {
    let target = tcp_server(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"SSH-2.0-nope\r\n\r\n");
    });
    let r = run_for(Config::new(target), 20);
    assert_eq!(r.other, r.total(), "{r}");
}

#[test]
fn in_flight_requests_are_completed_on_stop() {
    let served = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&served);
    let target = tcp_server(move |mut s| {
        if read_head(&mut s) {
            s2.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(300));
            let _ = s.write_all(pid_response(true).as_bytes());
        }
    });
    let mut cfg = Config::new(target);
    cfg.connections = 3;
    let load = start(cfg);
    // Let every connection get a request in flight, then stop mid-request.
    while served.load(Ordering::Relaxed) < 3 {
        thread::sleep(Duration::from_millis(5));
    }
    let r = load.stop();
    assert_eq!(r.ok, 3, "{r}");
    assert_eq!(r.failed(), 0, "{r}");
    assert_eq!(served.load(Ordering::Relaxed), 3);
}

#[test]
fn wait_for_requests_times_out() {
    let mut cfg = Config::new("127.0.0.1:1".parse().unwrap());
    cfg.connections = 0;
    let load = start(cfg);
    let t0 = Instant::now();
    assert!(!load.wait_for_requests(1, Duration::from_millis(100)));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert!(load.wait_for_requests(0, Duration::ZERO));
    assert_eq!(load.stop().total(), 0);
}

#[test]
fn drop_stops_threads() {
    let served = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&served);
    let target = tcp_server(move |mut s| serve_pid(&mut s, 0, &s2));
    let load = start(Config::new(target));
    assert!(load.wait_for_requests(10, Duration::from_secs(10)));
    drop(load);
    let after = served.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(served.load(Ordering::Relaxed), after);
}

#[test]
fn a_burst_sends_one_request_per_connection_at_once() {
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let target = tcp_server(move |mut s| serve_pid(&mut s, 1, &counter));
    let mut cfg = Config::new(target);
    cfg.connections = 32;
    cfg.requests_per_connection = Some(1);
    cfg.start_together = true;
    let load = start(cfg);
    assert!(
        load.wait_for_requests(32, Duration::from_secs(20)),
        "{}",
        load.snapshot()
    );
    // The threads stop by themselves: nothing more is sent while we wait.
    thread::sleep(Duration::from_millis(100));
    let r = load.stop();
    assert_eq!((r.ok, r.failed(), r.connects), (32, 0, 32), "{r}");
    assert_eq!(served.load(Ordering::Relaxed), 32);
    assert!(r.connect_p50 <= r.connect_p99 && r.connect_p99 <= r.connect_max);
    assert!(r.to_json().contains("\"connects\":32"));
}
