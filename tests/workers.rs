//! Worker processes: count, environment, process group, signal state, death with the master.

use std::time::Duration;

use crate::support::{DEADLINE, Master, wait_gone};

#[test]
fn workers_max_starts_one_worker_per_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("WORKERS", "MAX")
        .env("TW_READY", "notify")
        .start();
    assert_eq!(m.wait_ready().len(), cores);
    assert_eq!(m.started_pids().len(), cores);
}

#[test]
fn workers_auto_starts_one_less_than_the_cores_but_at_least_one() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--workers",
            "auto",
        ])
        .env("TW_READY", "notify")
        .start();
    assert_eq!(m.wait_ready().len(), (cores - 1).max(1));
}

#[test]
fn worker_has_its_own_process_group_default_signals_and_an_empty_mask() {
    let mut m = Master::cmd()
        .hostile_parent()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let pid = m.wait_ready()[0];
    let r = m.report(pid);
    assert_eq!(r["PGID"], pid.to_string(), "leads its own process group");
    assert_eq!(
        u64::from_str_radix(&r["SIGMASK"], 16).unwrap(),
        0,
        "no blocked signal"
    );
    assert_eq!(
        u64::from_str_radix(&r["SIGIGN"], 16).unwrap(),
        0,
        "no ignored signal"
    );
}

#[test]
fn a_sigkilled_master_leaves_no_worker_behind() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "3", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let pids = m.wait_ready();
    let addr = m.tcp_addr();
    m.signal(libc::SIGKILL);
    for pid in pids {
        assert!(wait_gone(pid, DEADLINE), "worker {pid} outlived its master");
    }
    // Nobody holds the port any more.
    assert!(
        std::net::TcpListener::bind(addr).is_ok(),
        "port {addr} still held"
    );
    let _ = Duration::ZERO;
}
