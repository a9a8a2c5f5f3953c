//! The drain (`packages/node/lib/drain.js`): an unchanged Node.js app, with no SIGTERM handler,
//! stops gracefully on SIGTERM once the drain is preloaded (`node --require drain.js app.js`,
//! what the package and the master do). Real Node.js, real sockets, real signals.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use loadgen::{Mode, Target};

use crate::npm_support::{Http, drain_js, fixture, node, require_tool};
use crate::support::{DEADLINE, Master, start_load};

/// `node --require drain.js app.js` (no SIGTERM handler of its own) with `env`, listening.
fn app(env: &[(&str, &str)]) -> Master {
    app_from(&fixture("app.js"), env)
}

/// `node --require drain.js SCRIPT` with `env`, listening.
fn app_from(script: &str, env: &[(&str, &str)]) -> Master {
    let mut cmd = node(&["--require".to_string(), drain_js(), script.to_string()]);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let mut m = cmd.start();
    m.expect("drain[");
    m.expect("listening on");
    m
}

/// tests/fixtures/node/held.js: `/held` ends when `/release` is asked.
fn held_app() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/node/held.js")
        .display()
        .to_string()
}

/// A MAX_KILL_TIMEOUT longer than any wait of a test: a process that exits within one did
/// not wait for it, and its exit code (0) says it drained.
const LONG_KILL_TIMEOUT: &str = "60000";

#[test]
fn on_sigterm_in_flight_requests_finish_keep_alive_gets_connection_close_and_it_exits() {
    // No connection is closed for being idle here (a separate test shows they are): the
    // request this test sends after SIGTERM is never taken for a late one, however long the
    // test is kept from running.
    let mut m = app_from(
        &held_app(),
        &[
            ("MAX_KILL_TIMEOUT", LONG_KILL_TIMEOUT),
            ("MASTER_PROCESS_DRAIN_IDLE_MS", "600000"),
        ],
    );
    let addr = m.tcp_addr();

    let mut busy = Http::connect(addr);
    let r = busy.get("/");
    assert_eq!(
        (r.status, r.header("connection")),
        (200, Some("keep-alive"))
    );
    let mut held = Http::connect(addr);
    held.send("/held");
    m.expect("held request started");

    m.signal(libc::SIGTERM);
    m.expect(&format!(
        "SIGTERM: draining 1 server(s), exit within {LONG_KILL_TIMEOUT} ms"
    ));

    // The held request is still in flight: a later request on an open keep-alive connection
    // is answered (and releases it), then that connection ends.
    let r = busy.get("/release");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    // Stopped accepting (before that answer): nothing else holds this socket, so a new
    // connection is refused.
    assert!(TcpStream::connect(addr).is_err(), "new connections refused");
    assert!(
        busy.closed_within(DEADLINE),
        "closed after `Connection: close`"
    );
    // The request in flight completes (and closes its connection).
    let r = held.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_eq!(r.body.trim(), m.pid().to_string());

    // And the process exits as soon as nothing is left: drained, not cut at the timeout.
    assert_eq!(m.wait_exit(), 0, "drained: exit code 0");
    m.expect("drained in");
}

#[test]
fn on_sigterm_idle_keep_alive_connections_are_closed_and_it_exits() {
    let mut m = app(&[("MAX_KILL_TIMEOUT", LONG_KILL_TIMEOUT)]);
    let mut idle = Http::connect(m.tcp_addr());
    let r = idle.get("/");
    assert_eq!(
        (r.status, r.header("connection")),
        (200, Some("keep-alive"))
    );
    m.signal(libc::SIGTERM);
    m.expect("SIGTERM: draining 1 server(s)");
    // Closed by the server (IDLE_MS with nothing on it), long before MAX_KILL_TIMEOUT.
    assert!(idle.closed_within(DEADLINE), "idle connection closed");
    assert_eq!(m.wait_exit(), 0, "drained: exit code 0");
    m.expect("drained in");
}

#[test]
fn a_request_that_never_ends_is_cut_at_max_kill_timeout() {
    let mut m = app(&[("MAX_KILL_TIMEOUT", "1s")]);
    let mut slow = Http::connect(m.tcp_addr());
    slow.send("/slow?ms=600000");
    m.expect("slow request started");
    let asked = Instant::now();
    m.signal(libc::SIGTERM);
    m.expect("exit within 1000 ms");
    assert_eq!(m.wait_exit(), 1, "cut at the timeout: exit code 1");
    let took = asked.elapsed();
    // A little before the master's SIGKILL at 1 s (100 ms), never before.
    assert!(
        took >= Duration::from_millis(850),
        "exited too early: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "exited late: {took:?}");
    m.expect("MAX_KILL_TIMEOUT: 1 connection(s) still open");
}

#[test]
fn an_app_that_handles_sigterm_itself_is_left_alone() {
    let mut m = app(&[("APP_SIGTERM", "own")]);
    let addr = m.tcp_addr();
    let mut kept = Http::connect(addr);
    assert_eq!(kept.get("/").status, 200);
    m.signal(libc::SIGTERM);
    // The app's handler ran: the drain's, installed first, had run before it.
    m.expect("own SIGTERM handler: still serving");
    // Still accepting, still keeping connections alive: nothing was drained.
    let r = Http::connect(addr).get("/");
    assert_eq!(
        (r.status, r.header("connection")),
        (200, Some("keep-alive"))
    );
    let r = kept.get("/");
    assert_eq!(
        (r.status, r.header("connection")),
        (200, Some("keep-alive"))
    );
}

#[test]
fn a_second_sigterm_kills_at_once() {
    let mut m = app(&[("MAX_KILL_TIMEOUT", "20s")]);
    let mut slow = Http::connect(m.tcp_addr());
    slow.send("/slow?ms=600000");
    m.expect("slow request started");
    m.signal(libc::SIGTERM);
    m.expect("SIGTERM: draining");
    m.signal(libc::SIGTERM);
    assert_eq!(
        m.wait_exit(),
        128 + libc::SIGTERM,
        "killed by the second SIGTERM"
    );
}

#[test]
fn https_and_http2_servers_listening_before_the_drain_was_loaded_are_drained_too() {
    // multi.js: http, https and http2 servers listen, then it loads the drain, then opens an
    // idle and a busy keep-alive connection to each HTTP/1 server, and an HTTP/2 session.
    let mut m = node(&[fixture("multi.js")])
        .env("DRAIN_JS", drain_js())
        .env("MAX_KILL_TIMEOUT", "20s")
        .start();
    m.expect("clients ready");
    m.signal(libc::SIGTERM);
    m.expect("SIGTERM: draining 3 server(s)");
    m.expect_each(&[
        "http2 client: GOAWAY".to_string(),
        "http busy client: Connection: close".to_string(),
        "https busy client: Connection: close".to_string(),
    ]);
    // Drained, not cut at MAX_KILL_TIMEOUT (exit code 1).
    assert_eq!(m.wait_exit(), 0, "drained: exit code 0");
    m.expect("drained in");
    assert!(!m.logged("busy client error"), "a busy connection was cut");
}

/// `master-process -w 2 -- node app.js`, without the drain: the app serves fd 3 and has no
/// SIGTERM handler of its own. (When the master preloads the drain itself, this must say
/// `--node-drain off`.)
fn master_over_app_without_drain() -> Master {
    require_tool("node");
    Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--node-drain", "off"])
        .command(["node".to_string(), fixture("app.js")])
        .start()
}

/// The control: without the drain (`--node-drain off`), this app dies on SIGTERM at once and
/// cuts its keep-alive connections (what the reference's users saw, about 15 failures a
/// reload). With it, it loses nothing: see npm_e2e, where every app runs with the drain.
#[test]
fn without_the_drain_the_same_app_loses_keep_alive_requests() {
    let mut m = master_over_app_without_drain();
    m.wait_ready();
    let load = start_load(Target::Tcp(m.tcp_addr()), Mode::KeepAlive, 8);
    for generation in 1..=3 {
        m.reload(generation);
        assert!(load.wait_for_more(100, DEADLINE), "load goes on");
    }
    let report = load.stop();
    eprintln!("without the drain, 3 reloads, keep-alive: {report}");
    assert!(
        report.failed() > 0,
        "the naive app lost nothing: this test cannot tell the drain's effect: {report}"
    );
}

/// MAX_KILL_TIMEOUT as the reference read it (the `ms` package): a bare number is
/// milliseconds; units otherwise; anything else is the default, 5 s.
#[test]
fn max_kill_timeout_is_read_as_the_reference_read_it() {
    require_tool("node");
    let cases = [
        ("5000", 5000),
        ("250", 250),
        ("5s", 5000),
        ("5 seconds", 5000),
        ("1.5s", 1500),
        ("250ms", 250),
        ("1m30s", 90000),
        ("2 minutes", 120000),
        ("1h", 3_600_000),
        ("", 5000),
        ("soon", 5000),
        ("5 parsecs", 5000),
        ("-1", 5000),
    ];
    let script = format!(
        "const d = require({:?}); console.log(JSON.stringify({:?}.map((v) => d.killTimeoutMs(v))))",
        drain_js(),
        cases.iter().map(|(v, _)| *v).collect::<Vec<_>>()
    );
    let out = crate::npm_support::node_once(Path::new("."), &["-e", &script], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want: Vec<String> = cases.iter().map(|(_, ms)| ms.to_string()).collect();
    assert_eq!(out.stdout.trim(), format!("[{}]", want.join(",")));
}
