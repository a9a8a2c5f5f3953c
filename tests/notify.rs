//! Readiness: READY=1 on NOTIFY_SOCKET from real sd_notify clients, believed only from our
//! workers and their descendants; or a delay.

use crate::support::{Ev, Master, num};

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
    let s = m.wait_status("a worker started", |s| s.workers().count() == 1);
    let pid = s.workers().next().unwrap().num("pid");
    m.expect(&format!("test-worker[{pid}]: never ready"));
    // The test process knows the socket path but is no descendant of the worker.
    let socket = m.dir().join(format!("master-process.{}.0/notify", m.pid()));
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to(b"READY=1", &socket)
        .expect("send to the notify socket");
    // The debug log says why it was ignored.
    m.expect("is not one of our workers ignored");
    // The master gave up on the worker at its ready timeout: it was never ready.
    let s = m.wait_status("the worker given up on", |s| {
        s.worker(pid as u32)
            .is_none_or(|w| w.get("state") != "starting")
    });
    assert_eq!(s.phase(), "starting", "{s}");
    assert!(m.events(Ev::Ready.pid(pid)).is_empty());
}

#[test]
fn delay_readiness_waits_the_delay() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "delay:300ms"])
        .start();
    let pid = m.wait_ready()[0];
    let line = m.expect_ev(Ev::Ready.pid(pid));
    assert!(num(&line, "after_ms") >= 300, "{line}");
}
