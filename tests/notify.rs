//! Readiness: READY=1 on NOTIFY_SOCKET from real sd_notify clients, believed only from our
//! workers and their descendants; or a delay.

use crate::support::{Master, num};

#[test]
fn ready_from_the_sd_notify_crate_makes_a_worker_ready() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let pids = m.wait_ready();
    m.eventually(&[format!("test-worker[{}]: ready sent (notify)", pids[0])]);
}

#[test]
fn ready_from_the_systemd_notify_tool_makes_a_worker_ready() {
    // systemd-notify sends from its own pid, a child of the worker, then waits on a
    // BARRIER=1 fd that the master must close once it has handled READY=1.
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "-w", "2"])
        .env("TW_READY", "systemd-notify")
        .start();
    let pids = m.wait_ready();
    // systemd-notify returned success: the barrier was released, not timed out.
    m.eventually(
        &pids
            .iter()
            .map(|p| format!("test-worker[{p}]: ready sent (systemd-notify)"))
            .collect::<Vec<_>>(),
    );
}

#[test]
fn ready_from_a_process_that_is_not_a_worker_is_ignored() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--ready-timeout",
            "2s",
            "-v",
        ])
        .env("TW_NEVER_READY", "1")
        .start();
    let line = m.expect("worker started");
    let pid = num(&line, "pid");
    m.expect(&format!("test-worker[{pid}]: never ready"));
    // The test process knows the socket path but is no descendant of the worker.
    let socket = m.dir().join(format!("master-process.{}.0/notify", m.pid()));
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to(b"READY=1", &socket)
        .expect("send to the notify socket");
    m.expect("is not one of our workers ignored");
    m.expect(&format!("worker was not ready within 2s (--ready notify: it must send READY=1 on NOTIFY_SOCKET); stopping it pid={pid}"));
    assert!(!m.logged(&format!("worker ready pid={pid}")));
}

#[test]
fn delay_readiness_waits_the_delay() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "delay:300ms"])
        .start();
    let line = m.expect("worker ready");
    assert!(num(&line, "after_ms") >= 300, "{line}");
}
