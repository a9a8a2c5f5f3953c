//! The library: apps built on `master_process::init()` become their own master; under a
//! debugger, with MASTER_PROCESS=off or in test mode they run as one process.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use loadgen::Mode;

use crate::support::{DEADLINE, Ev, Master, example, get_pid, wait_gone};
use crate::zero_downtime::reloads_under_load;

fn app(name: &str) -> Master {
    Master::cmd()
        .program(example(name))
        .env("MASTER_PROCESS_LISTEN", "127.0.0.1:0")
        .start()
}

#[test]
fn hello_example_loses_no_request_across_ten_reloads() {
    let mut m = app("hello");
    reloads_under_load(&mut m, Mode::Close, 10);
    assert_eq!(
        m.status().master().get("ready"),
        "notify",
        "library workers are ready by READY=1"
    );
}

#[test]
fn tokio_example_loses_no_request_across_ten_reloads() {
    let mut m = app("tokio_hello");
    reloads_under_load(&mut m, Mode::Close, 10);
}

#[test]
fn library_workers_serve_and_exit_cleanly_when_the_master_stops() {
    let mut m = app("hello");
    let pids = m.wait_ready();
    assert_eq!(pids.len(), 2, "the example asks for two workers");
    let addr = m.tcp_addr();
    let body = crate::support::get(addr, "/").unwrap();
    assert!(body.starts_with("hello from "), "{body}");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
    for &pid in &pids {
        assert!(wait_gone(pid, DEADLINE));
        // The log says how each one ended.
        let stopped = m.events(Ev::Stopped.pid(pid));
        assert_eq!(stopped.len(), 1, "worker {pid}");
        assert!(
            stopped[0].contains("exited with code 0"),
            "a graceful exit: {stopped:?}"
        );
    }
}

/// Runs the example with `env`, optionally under `wrapper` (a debugger), and checks that it
/// serves as one process: no master, and the answer comes from the app itself.
fn runs_alone(env: &[(&str, &str)], wrapper: &[&str]) {
    let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    argv.push(example("hello").to_string_lossy().into_owned());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("MASTER_PROCESS_LISTEN", "127.0.0.1:0")
        .env_remove("WORKERS")
        .env_remove("MASTER_PROCESS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("hello: running as one process"),
        "{first}"
    );
    let addr: std::net::SocketAddr = first.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let answer = crate::support::get(addr, "/").unwrap();
    let pid: u32 = answer.trim().rsplit(' ').next().unwrap().parse().unwrap();
    if wrapper.is_empty() {
        assert_eq!(pid, child.id(), "the process itself answers: {answer}");
    } else {
        // Under the debugger, the app is the traced child of the wrapper.
        assert_eq!(crate::support::parent_of(pid), Some(child.id()), "{answer}");
    }
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(
        !rest.contains(" master_process::master"),
        "no master: {rest}"
    );
    assert!(
        status.success(),
        "a graceful exit on SIGTERM: {status:?}\n{rest}"
    );
}

#[test]
fn master_process_off_runs_the_app_as_one_process() {
    runs_alone(&[("MASTER_PROCESS", "off")], &[]);
}

#[test]
fn test_mode_runs_the_app_as_one_process() {
    runs_alone(&[("MASTER_PROCESS", "test")], &[]);
}

#[test]
fn under_a_debugger_the_app_runs_as_one_process() {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "strace is required for this test (CI installs it)");
    runs_alone(&[], &["strace", "-f", "-o", "/dev/null"]);
}

#[test]
fn a_worker_refuses_sockets_meant_for_another_pid() {
    let out = Command::new(example("hello"))
        .env("MASTER_PROCESS_WORKER", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("LISTEN_PID is 1, not this process"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn workers_of_another_master_process_version_are_logged() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .with_knobs(&[("TW_READY", "raw")])
        .start();
    m.wait_ready();
    m.set_knobs(&[
        ("TW_READY", "raw"),
        ("TW_NOTIFY_EXTRA", "MASTER_PROCESS_VERSION=9.9.9"),
    ]);
    let new = m.reload(1);
    assert!(m.logged("worker built with master-process 9.9.9; this master is"));
    let addr = m.tcp_addr();
    assert!(new.contains(&get_pid(addr)));
    assert_eq!(
        m.status().phase(),
        "running",
        "by default the master keeps going"
    );
}

#[test]
fn on_version_change_exit_exits_1_once_the_new_workers_are_ready() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--on-version-change",
            "exit",
        ])
        .with_knobs(&[("TW_READY", "raw")])
        .start();
    m.wait_ready();
    m.set_knobs(&[
        ("TW_READY", "raw"),
        ("TW_NOTIFY_EXTRA", "MASTER_PROCESS_VERSION=9.9.9"),
    ]);
    m.signal(libc::SIGHUP);
    m.expect_ev(Ev::ReloadEnded.generation(1));
    // The log says why it exits.
    m.expect("--on-version-change exit");
    assert_eq!(m.wait_exit(), 1);
    assert_eq!(
        m.events(Ev::Ready.generation(1)).len(),
        1,
        "the new worker was ready first"
    );
}
