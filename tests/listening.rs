//! Zero-code readiness (`--ready listening`, the default): the master sees in /proc that a
//! new worker serves the shared socket. Real runtimes, unmodified, through reloads under load.

use loadgen::Mode;

use crate::support::{Ev, Master, get_pid, num};
use crate::zero_downtime::{reloads_under_load, reloads_under_load_with};

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn require(program: &str) {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{program} is required for this test (CI installs it)");
}

fn runtime(command: &[&str], extra: &[&str]) -> Master {
    Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2"])
        .args(extra.iter().copied())
        .command(command.iter().map(|s| s.to_string()))
        .start()
}

#[test]
fn node_listening_on_fd_3_is_seen_ready_through_ten_reloads_under_load() {
    require("node");
    let mut m = runtime(&["node", &fixture("node/server.js")], &[]);
    reloads_under_load(&mut m, Mode::KeepAlive, 10);
    assert_eq!(m.status().master().get("ready"), "listening");
}

#[test]
fn node_started_through_sh_c_is_seen_ready_through_ten_reloads_under_load() {
    require("node");
    // `; exit $?` keeps the shell from exec'ing node: the worker is the shell, node its child.
    let script = format!("node {}; exit $?", fixture("node/server.js"));
    let mut m = runtime(&["sh", "-c", &script], &[]);
    reloads_under_load_with(&mut m, Mode::Close, 10, false);
}

#[test]
fn python_asyncio_is_seen_ready_through_ten_reloads_under_load() {
    require("python3");
    let mut m = runtime(&["python3", &fixture("python/asyncio_server.py")], &[]);
    reloads_under_load(&mut m, Mode::Close, 10);
}

#[test]
fn python_threaded_http_server_is_seen_ready_through_ten_reloads_under_load() {
    require("python3");
    let mut m = runtime(&["python3", &fixture("python/threaded_server.py")], &[]);
    reloads_under_load(&mut m, Mode::Close, 10);
}

#[test]
fn blocking_accept_loop_is_seen_ready_through_ten_reloads_under_load() {
    require("python3");
    let mut m = runtime(
        &["python3", &fixture("python/blocking_server.py")],
        &["--kill-timeout", "1s"],
    );
    reloads_under_load(&mut m, Mode::Close, 10);
}

#[test]
fn rust_tokio_server_is_seen_ready_through_ten_reloads_under_load() {
    let bin = std::path::Path::new(crate::support::master_bin()).with_file_name("tokio-worker");
    let mut m = runtime(&[bin.to_str().unwrap()], &[]);
    reloads_under_load(&mut m, Mode::KeepAlive, 10);
}

/// Starts a runtime, then reloads into a generation that works for 500 ms between taking the
/// socket and serving; asserts the old worker was stopped only after the new one served.
fn late_server_is_not_ready_early(command: &[&str], late_env: (&str, &str), serving: &str) {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0"])
        .with_knobs_command(command, &[])
        .start();
    let old = m.wait_ready()[0];
    let addr = m.tcp_addr();
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(addr));
    cfg.connections = 4;
    cfg.request_timeout = crate::support::REQUEST_TIMEOUT;
    let load = loadgen::start(cfg);
    assert!(load.wait_for_requests(50, crate::support::DEADLINE));
    m.set_knobs(&[late_env]);
    m.signal(libc::SIGHUP);
    let started = m.expect_ev(Ev::Started.generation(1));
    let new = num(&started, "pid");
    let ready = m.expect_ev(Ev::Ready.pid(new));
    assert!(
        num(&ready, "after_ms") >= 500,
        "ready before the 500 ms of work were done: {ready}"
    );
    m.expect_ev(Ev::Stopping.pid(old));
    let s = m.reload_ended(1, "done");
    assert_eq!(s.serving(), [new as u32], "{s}");
    let lines = m.lines();
    let served_at = lines
        .iter()
        .position(|l| l.contains(&format!("[{new}]: {serving}")))
        .expect("new worker served");
    let stopped_at = lines
        .iter()
        .position(|l| Ev::Stopping.pid(old).matches(l))
        .unwrap();
    assert!(
        served_at < stopped_at,
        "the old worker was stopped before the new one served"
    );
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    assert_eq!(u64::from(get_pid(addr)), new);
}

#[test]
fn node_that_listens_late_is_not_reported_ready_early() {
    require("node");
    late_server_is_not_ready_early(
        &["node", &fixture("node/server.js")],
        ("NODE_LISTEN_DELAY_MS", "500"),
        "serving fd 3",
    );
}

#[test]
fn python_asyncio_that_blocks_its_loop_is_not_reported_ready_early() {
    require("python3");
    late_server_is_not_ready_early(
        &["python3", &fixture("python/asyncio_server.py")],
        ("PY_BLOCK_MS", "500"),
        "serving",
    );
}

#[test]
fn undetectable_worker_fails_the_reload_after_the_timeout_and_the_old_one_keeps_serving() {
    // Like an io_uring server: it never waits on the socket where /proc can see it.
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready-timeout", "1s"])
        .with_knobs(&[])
        .start();
    let old = m.wait_ready()[0];
    let addr = m.tcp_addr();
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(addr));
    cfg.request_timeout = crate::support::REQUEST_TIMEOUT;
    let load = loadgen::start(cfg);
    assert!(load.wait_for_requests(50, crate::support::DEADLINE));
    m.set_knobs(&[("TW_NEVER_READY", "1")]);
    m.signal(libc::SIGHUP);
    let s = m.reload_ended(1, "failed");
    assert_eq!(s.serving(), [old], "{s}");
    // Status and the log say why, and what to do.
    let why = s.last_reload().unwrap().get("reason");
    for says in [
        "was not ready within 1s",
        "--ready listening: it was never seen waiting on the listening socket",
        "use --ready notify or --ready delay:DURATION",
    ] {
        assert!(why.contains(says), "{s}");
    }
    m.expect(why);
    let seen = load.snapshot().total();
    assert!(load.wait_for_requests(seen + 50, crate::support::DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    assert_eq!(get_pid(addr), old, "the old worker still serves");
}

#[test]
fn with_two_listeners_a_worker_serving_one_is_ready_only_with_listening_any() {
    require("python3");
    let server = fixture("python/blocking_server.py");
    // The blocking server accepts on fd 3 only.
    let all = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-l",
            "127.0.0.1:0",
            "--ready-timeout",
            "1s",
            "--kill-timeout",
            "200ms",
        ])
        .command(["python3", server.as_str()])
        .start();
    never_ready(&all);
    let mut any = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "-l",
            "127.0.0.1:0",
            "--ready",
            "listening:any",
            "--kill-timeout",
            "200ms",
        ])
        .command(["python3", server.as_str()])
        .start();
    any.wait_ready();
}

#[test]
fn ready_from_notify_does_not_count_in_listening_mode() {
    // Sends READY=1 and never waits on the socket, as a server that says READY=1 before it
    // can serve: in listening mode only the probe decides, so it is never ready.
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready-timeout", "1s", "-v"])
        .command(["sh", "-c", "systemd-notify --ready && exec sleep 1000"])
        .start();
    // The debug log says why READY=1 does not count.
    m.expect("READY=1 ignored: --ready listening decides");
    never_ready(&m);
}

/// Waits until the master of `m` (`--ready-timeout 1s`) gave up on its first worker at its
/// ready timeout (stopped, then restarted), and asserts that no worker was ever ready.
fn never_ready(m: &Master) {
    let s = m.wait_status("the first worker given up on", |s| {
        s.slot(0).num("restarts") >= 1
    });
    assert_eq!(s.phase(), "starting", "{s}");
    assert!(m.events(Ev::Ready).is_empty(), "never ready");
}
