//! Listeners: bound once by the master, inherited by every worker as fd 3, 4, ...

use std::os::unix::fs::PermissionsExt;

use crate::support::{Master, free_port, get, get_pid, run_once};

#[test]
fn workers_inherit_listeners_as_fd_3_onwards_with_their_own_pid_in_listen_pid() {
    let mut m = Master::cmd()
        .args([
            "-l",
            "web=127.0.0.1:0",
            "-l",
            "admin=unix:admin.sock",
            "-w",
            "2",
            "--ready",
            "notify",
        ])
        .env("TW_READY", "notify")
        .env("PORT", "1234")
        .start();
    let pids = m.wait_ready();
    assert_eq!(pids.len(), 2);
    for (index, pid) in pids.iter().enumerate() {
        let r = m.report(*pid);
        assert_eq!(
            r["LISTEN_PID"],
            pid.to_string(),
            "LISTEN_PID is the worker's own pid"
        );
        assert_eq!(r["LISTEN_FDS"], "2");
        assert_eq!(r["LISTEN_FDNAMES"], "web:admin");
        assert_eq!(r["FDS"], "0,1,2,3,4", "exactly stdio and the listeners");
        assert_eq!(r["PPID"], m.pid().to_string());
        assert_eq!(r["WORKER_INDEX"], index.to_string());
        assert_eq!(r["RELOAD_INDEX"], "0");
        assert_eq!(r["PORT"], "1234", "PORT is passed on");
        assert!(
            r["NOTIFY_SOCKET"].starts_with('/'),
            "{:?}",
            r.get("NOTIFY_SOCKET")
        );
        assert!(!r.contains_key("__MASTER_PROCESS_EXEC"));
    }
    assert!(pids.contains(&get_pid(m.tcp_addr())));
}

#[test]
fn port_alone_is_the_one_listener() {
    let port = free_port();
    let mut m = Master::cmd()
        .env("PORT", port)
        .env("TW_READY", "notify")
        .args(["--ready", "notify"])
        .start();
    let pids = m.wait_ready();
    let r = m.report(pids[0]);
    assert_eq!(r["LISTEN_FDS"], "1");
    assert_eq!(r["PORT"], port.to_string());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        get_pid(addr),
        pids[0],
        "a bare port listens on every address, IPv4 included"
    );
}

#[test]
fn ipv6_loopback_listener_serves() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; nothing to test");
        return;
    }
    let mut m = Master::cmd()
        .args(["-l", "[::1]:0", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let pids = m.wait_ready();
    let addr = m.tcp_addr();
    assert!(addr.is_ipv6());
    assert_eq!(get_pid(addr), pids[0]);
}

#[test]
fn unix_socket_replaces_a_stale_file_gets_its_mode_and_is_removed_at_exit() {
    let cmd = Master::cmd();
    let path = cmd.dir().join("app.sock");
    // A stale socket: its listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut m = cmd
        .args(["-l", path.to_str().unwrap(), "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    m.wait_ready();
    // The log says what happened to the file.
    assert!(m.logged("removed stale socket file"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o664, "default --socket-mode");
    let mut conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
    use std::io::{Read, Write};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
    assert!(!path.exists(), "our socket file is removed on exit");
}

#[test]
fn socket_mode_flag_sets_the_mode_at_creation() {
    let cmd = Master::cmd();
    let path = cmd.dir().join("private.sock");
    let mut m = cmd
        .args([
            "-l",
            path.to_str().unwrap(),
            "--socket-mode",
            "0600",
            "--ready",
            "notify",
        ])
        .env("TW_READY", "notify")
        .start();
    m.wait_ready();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_live_socket_and_a_plain_file_are_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.sock");
    let _owner = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let (code, err) = run_once(&["-l", live.to_str().unwrap(), "--", "true"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(live.exists());

    let plain = dir.path().join("notes.txt");
    std::fs::write(&plain, "keep me").unwrap();
    let (code, err) = run_once(&["-l", plain.to_str().unwrap(), "--", "true"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
}

#[test]
fn the_listener_outlives_every_worker() {
    // The master holds the socket: with its only worker gone, connections queue instead of
    // being refused, and the restarted worker serves them.
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--throttle", "0"])
        .env("TW_READY", "notify")
        .start();
    let first = m.wait_ready()[0];
    let addr = m.tcp_addr();
    let _ = get(addr, "/exit?code=0");
    let s = m.wait_status("the worker gone", |s| s.worker(first).is_none());
    assert!(s.serving().is_empty(), "no worker serves: {s}");
    let pid = get_pid(addr);
    assert_ne!(pid, first);
}
