//! Hardening: no input, fault or other user can take the service down or steer the master.
//! Failed upgrades go back to the old master; unsafe control folders and untrusted answers
//! are refused; another user's socket is never deleted; out-of-range values are usage
//! errors; masters each get their own control socket; workers changed to another user still
//! die with the master; no worker can shrink the accept queue; a chatty worker or idle
//! control clients cannot lock the master out; what a killed master left is cleaned up.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::{Mode, Target};

use crate::support::{
    DEADLINE, Ev, Json, Master, alive, control_command, get_pid, json_of, listening_on, master_bin,
    proc_status, run_bounded, run_once, somaxconn, start_load, test_worker, wait_gone,
};
use crate::systemd::install_master;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A master started from a copy of the binary (`mp-bin` in its dir), so that a test can
/// replace that file with a new "build"; two workers, ready by `notify`.
fn upgradable(worker: &Path) -> (Master, PathBuf, Vec<u32>) {
    let cmd = Master::cmd();
    let exe = install_master(cmd.dir(), "mp-bin");
    let mut m = cmd
        .program(&exe)
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify", "--"])
        .args([worker])
        .env("TW_READY", "notify")
        .start();
    let pids = m.wait_ready();
    (m, exe, pids)
}

#[test]
fn an_upgrade_whose_worker_command_was_deleted_fails_and_every_worker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker");
    std::fs::copy(test_worker(), &worker).unwrap();
    let (mut m, exe, old) = upgradable(&worker);
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::KeepAlive, 8);
    std::fs::remove_file(&worker).unwrap();
    install_master(m.dir(), "mp-bin");
    assert!(exe.exists());
    let out = m.ctl(&["upgrade", "--wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("failed"), "{out:?}");
    assert_eq!(
        m.status().master().num("pid"),
        u64::from(m.pid()),
        "same pid"
    );
    assert_eq!(m.serving(), old, "the old workers still serve");
    assert!(load.wait_for_more(200, DEADLINE));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
    assert!(old.iter().all(|p| alive(*p)));
}

#[test]
fn an_upgrade_to_a_binary_that_rejects_our_flags_is_refused_by_its_preflight() {
    let (mut m, exe, old) = upgradable(&test_worker());
    // The new build no longer knows one of our flags: it sees them all in the preflight.
    let real = m.dir().join("real-master");
    std::fs::copy(master_bin(), &real).unwrap();
    script(
        &exe,
        &format!("exec {} --no-such-flag \"$@\"", real.display()),
    );
    let out = m.ctl(&["upgrade", "--wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("upgrade failed") && out.stderr.contains("--no-such-flag"),
        "{out:?}"
    );
    assert_eq!(m.status().master().num("pid"), u64::from(m.pid()));
    assert_eq!(m.serving(), old);
    m.expect("upgrade failed");
}

#[test]
fn an_upgrade_that_fails_after_the_exec_goes_back_to_the_old_master_under_load() {
    let (mut m, exe, old) = upgradable(&test_worker());
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::KeepAlive, 8);
    // The new build passes the preflight but refuses our flags once it runs for real.
    let real = m.dir().join("real-master");
    std::fs::copy(master_bin(), &real).unwrap();
    script(
        &exe,
        &format!(
            "[ -n \"$__MASTER_PROCESS_PREFLIGHT\" ] && exec {real} \"$@\"\nexec {real} --no-such-flag \"$@\"",
            real = real.display()
        ),
    );
    let out = m.ctl(&["upgrade", "--wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("could not resume") && out.stderr.contains("--no-such-flag"),
        "{out:?}"
    );
    // The same process, the same workers, still in charge.
    assert_eq!(m.status().master().num("pid"), u64::from(m.pid()));
    assert_eq!(m.serving(), old);
    assert!(load.wait_for_more(200, DEADLINE));
    // And fully working: a reload replaces the workers.
    let out = m.ctl(&["reload", "--wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    let new = m.serving();
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} -> {new:?}");
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
}

#[test]
fn an_upgrade_whose_new_master_cannot_get_its_metrics_port_goes_back_with_every_socket() {
    let (mut m, exe, old) = upgradable(&test_worker());
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::KeepAlive, 8);
    // The new build passes the preflight, then asks for a metrics port that is taken: it
    // fails as it resumes, holding every descriptor the old master handed over.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let real = m.dir().join("real-master");
    std::fs::copy(master_bin(), &real).unwrap();
    script(
        &exe,
        &format!(
            "[ -n \"$__MASTER_PROCESS_PREFLIGHT\" ] && exec {real} \"$@\"\nexec {real} --metrics {taken} \"$@\"",
            real = real.display(),
            taken = taken.local_addr().unwrap(),
        ),
    );
    let out = m.ctl(&["upgrade", "--wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("could not resume"), "{out:?}");
    assert_eq!(m.status().master().num("pid"), u64::from(m.pid()));
    assert_eq!(m.serving(), old);
    assert!(load.wait_for_more(200, DEADLINE));
    let out = m.ctl(&["reload", "--wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
}

#[test]
fn a_slow_preflight_interrupted_by_signals_succeeds_and_leaves_nothing_behind() {
    let (mut m, exe, _) = upgradable(&test_worker());
    let real = m.dir().join("real-master");
    std::fs::copy(master_bin(), &real).unwrap();
    let stray = m.dir().join("stray.pid");
    // A slow build that leaves a process behind in its preflight.
    script(
        &exe,
        &format!(
            "if [ -n \"$__MASTER_PROCESS_PREFLIGHT\" ]; then sleep 300 & echo $! > {stray}; sleep 1; fi\nexec {real} \"$@\"",
            stray = stray.display(),
            real = real.display()
        ),
    );
    let mut upgrade = control_command(m.dir(), &["upgrade", "--wait"]);
    upgrade
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = upgrade.spawn().unwrap();
    // Signals keep interrupting the master's wait for the preflight.
    let deadline = Instant::now() + DEADLINE;
    while !stray.exists() && Instant::now() < deadline {
        m.signal(libc::SIGCHLD);
        std::thread::yield_now();
    }
    for _ in 0..200 {
        m.signal(libc::SIGCHLD);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stray: u32 = std::fs::read_to_string(&stray)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_gone(stray, DEADLINE),
        "the preflight's process group was killed"
    );
    m.expect("master upgraded in place");
}

#[test]
fn a_control_folder_someone_else_could_write_to_is_refused_by_master_and_client() {
    let runtime = tempfile::tempdir().unwrap();
    let folder = runtime.path().join("master-process");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let xdg = runtime.path().to_str().unwrap();
    let (code, stderr) = run_once(
        &["-l", "127.0.0.1:0", "--", "true"],
        &[("XDG_RUNTIME_DIR", xdg)],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is not safe: others may write to it"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        !stderr.contains("listening on"),
        "nothing was bound: {stderr}"
    );
    let (code, stderr) = run_once(&["status"], &[("XDG_RUNTIME_DIR", xdg)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not safe"), "{stderr}");
}

/// A server of another user answers "done" to every request, as a hijacked socket would.
fn fake_master_as_nobody(path: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let code = format!(
        "import socket, os\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind({path:?})\n\
         s.listen(8)\n\
         print('ready', flush=True)\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   c.recv(4096)\n\
         \x20   c.sendall(b'reload generation=1 outcome=done took_ms=1 serving=0:1@1\\nend\\n')\n\
         \x20   c.close()\n",
        path = path.to_str().unwrap()
    );
    let mut child = Command::new("python3")
        .args(["-c", &code])
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn a_client_does_not_trust_an_answer_from_another_user() {
    if !is_root() {
        eprintln!("not root: cannot run a server as another user; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("hijacked.sock");
    let mut fake = fake_master_as_nobody(&path);
    let out = run_bounded(
        control_command(
            dir.path(),
            &["reload", "--wait", "--control", path.to_str().unwrap()],
        ),
        DEADLINE,
    );
    fake.kill().unwrap();
    fake.wait().unwrap();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not trusting it"), "{out:?}");
    assert!(!out.stdout.contains("done"), "{out:?}");
}

#[test]
fn a_live_control_socket_another_user_cannot_check_is_never_deleted() {
    if !is_root() {
        eprintln!("not root: cannot run a master as another user; skipped");
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    // Root's live socket, in a folder others may enter but whose socket they may not use.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let path = dir.path().join("root.sock");
    let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(master_bin());
    cmd.args([
        "-l",
        "127.0.0.1:0",
        "--control",
        path.to_str().unwrap(),
        "--",
        "true",
    ])
    .env("XDG_RUNTIME_DIR", "/nonexistent")
    .uid(65534)
    .gid(65534);
    let out = run_bounded(cmd, DEADLINE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("left alone"), "{out:?}");
    assert!(path.exists(), "the other user's socket is still there");
    let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (_accepted, _) = theirs.accept().unwrap();
    drop(client);
}

#[test]
fn out_of_range_values_are_usage_errors_never_panics() {
    /// Flags, environment, and the name the error must give.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        (&["--ready-timeout", "0"], &[], "--ready-timeout"),
        (
            &[],
            &[("MAX_KILL_TIMEOUT", "99999999999999999999")],
            "MAX_KILL_TIMEOUT",
        ),
        (&["--kill-timeout", "400days"], &[], "--kill-timeout"),
        (
            &[],
            &[("WORKER_THROTTLE", "18446744073709551615")],
            "WORKER_THROTTLE",
        ),
        (
            &[],
            &[("MAX_MEMORY_ALLOWED_MB", "18446744073709551616")],
            "MAX_MEMORY_ALLOWED_MB",
        ),
        (&["--max-memory", "0"], &[], "--max-memory"),
        (&["--max-cpu", "NaN"], &[], "--max-cpu"),
        (&["--monitor-interval", "0"], &[], "--monitor-interval"),
        (&["--canary", "1000000d"], &[], "--canary"),
    ];
    for (args, env, name) in cases {
        let mut all = vec!["-l", "127.0.0.1:0"];
        all.extend_from_slice(args);
        all.extend(["--", "true"]);
        let (code, stderr) = run_once(&all, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(name), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (code, stderr) = run_once(&["reload", "--wait", "--timeout", "0"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--timeout"), "{stderr}");
    let (code, stderr) = run_once(&["-l", "1", "--ready", "soon", "--", "true"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`listening`"), "{stderr}");
}

#[test]
fn two_masters_of_one_user_each_get_their_own_control_socket() {
    let runtime = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let mut m = Master::cmd()
            .args(["-l", "127.0.0.1:0", "--name", name, "--ready", "notify"])
            .env("TW_READY", "notify")
            .env("XDG_RUNTIME_DIR", runtime.path().to_str().unwrap())
            .start();
        m.wait_ready();
        m
    };
    let a = start("api");
    let b = start("web");
    let ctl = |args: &[&str]| run_bounded(control_command(runtime.path(), args), DEADLINE);
    let out = ctl(&["status"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("several masters are running (api, web)"),
        "{out:?}"
    );
    for (name, m) in [("api", &a), ("web", &b)] {
        let status = json_of(&ctl(&["status", "--json", "--name", name]));
        assert_eq!(
            status.at("master").at("pid").int(),
            u64::from(m.pid()),
            "{name}"
        );
    }
    let out = ctl(&["list"]);
    assert_eq!(out.code, 0, "{out:?}");
    for (name, m) in [("api", &a), ("web", &b)] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(&m.pid().to_string())),
            "{out:?}"
        );
    }
    let out = ctl(&["stop", "--wait", "--name", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    // With one left, no name is needed.
    let status = json_of(&ctl(&["status", "--json"]));
    assert_eq!(status.at("master").at("pid").int(), u64::from(a.pid()));
}

#[test]
fn workers_of_another_user_still_die_with_a_sigkilled_master() {
    if !is_root() {
        eprintln!("not root: --user needs root; skipped");
        return;
    }
    // A user by name, and a bare uid with no entry in the user database (as containers run).
    for (user, uid, ready) in [
        ("nobody", "65534", "notify"),
        ("nobody", "65534", "listening"),
        ("4000123:4000124", "4000123", "listening"),
    ] {
        let cmd = Master::cmd();
        // The workers write their reports in the test's folder.
        let reports = cmd.dir().join("reports");
        std::fs::create_dir_all(&reports).unwrap();
        std::fs::set_permissions(&reports, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(cmd.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let mut m = cmd
            .args([
                "-l",
                "127.0.0.1:0",
                "-w",
                "2",
                "--user",
                user,
                "--ready",
                ready,
            ])
            .env(
                "TW_READY",
                if ready == "notify" { "notify" } else { "none" },
            )
            .start();
        let pids = m.wait_ready();
        for &pid in &pids {
            let uids = proc_status(pid, "Uid").unwrap();
            assert!(
                uids.split_whitespace().all(|u| u == uid),
                "worker {pid} runs as {uids}"
            );
        }
        assert!(pids.contains(&get_pid(m.tcp_addr())));
        m.signal(libc::SIGKILL);
        for &pid in &pids {
            assert!(wait_gone(pid, DEADLINE), "worker {pid} outlived the master");
        }
    }
}

#[test]
fn a_user_that_cannot_be_found_is_a_usage_error() {
    let (code, stderr) = run_once(
        &[
            "-l",
            "127.0.0.1:0",
            "--user",
            "no-such-user-xyz",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--user") && stderr.contains("no user"),
        "{stderr}"
    );
}

/// The accept queue of the one socket listening at `addr`, as `ss` reports it.
fn backlog_of(addr: std::net::SocketAddr) -> u32 {
    match listening_on(addr.port()).as_slice() {
        [l] => l.backlog,
        other => panic!("not one listener on {addr}: {other:?}"),
    }
}

fn node_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node/server.js")
}

/// Node.js asks `listen(fd, 511)` of the socket it serves (fd 3, by LISTEN_FDS: see
/// `node_server`). With `--adopt off` that call reaches the kernel and shrinks the shared
/// queue for every worker: the master asks for its own queue again once the worker serves.
/// With `--adopt on` (the default) the call is trapped by the adoption filter and answered by
/// the master. Either way, `ss` and status show the master's queue.
#[test]
fn node_workers_cannot_shrink_the_accept_queue() {
    for adopt in ["off", "on"] {
        for backlog in [None, Some("1000")] {
            let mut cmd = Master::cmd()
                .args(["-l", "127.0.0.1:0", "-w", "2", "--adopt", adopt])
                .command(["node".into(), node_server().into_os_string()]);
            if let Some(b) = backlog {
                cmd = cmd.args(["--backlog", b]);
            }
            let mut m = cmd.start();
            let what = format!("--adopt {adopt}, --backlog {backlog:?}");
            // Ready: both workers were seen serving, so both called listen() before this
            // status answer, and the master asked for its queue again after that.
            m.wait_ready();
            let addr = m.tcp_addr();
            assert_eq!(m.status().master().get("adopt"), adopt, "{what}");
            let expected: u32 = backlog.map_or_else(somaxconn, |b| b.parse().unwrap());
            assert!(expected > 511, "{what}: a queue Node.js would shrink");
            assert_eq!(backlog_of(addr), expected, "{what}");
            // Status, asked once the reload has ended: the new workers' listen() came before.
            m.signal(libc::SIGHUP);
            let status = m.reload_ended(1, "done");
            assert_eq!(backlog_of(addr), expected, "{what}: after a reload");
            let listener = status.listeners().next().unwrap();
            assert_eq!(listener.get("backlog"), expected.to_string(), "{what}");
        }
    }
}

#[test]
fn a_thousand_concurrent_clients_lose_nothing_through_reloads_of_node_workers() {
    // 1024 clients queue behind two workers: a request waits for the ones before it, which
    // on a loaded 2-core machine (a few hundred answers a second) is several seconds, and
    // more while a reload starts new workers. A minute before a request counts as lost, and
    // for each step of the test: far above what a passing run takes, short of the suite's
    // bound of a test.
    const PATIENCE: Duration = Duration::from_secs(60);
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2"])
        .command(["node".into(), node_server().into_os_string()])
        .start();
    m.wait_ready();
    let addr = m.tcp_addr();
    let mut cfg = loadgen::Config::new(Target::Tcp(addr));
    cfg.connections = 1024;
    cfg.mode = Mode::Close;
    cfg.request_timeout = PATIENCE;
    let load = loadgen::start(cfg);
    // Every connection in play (about two requests each) before the first reload.
    assert!(
        load.wait_for_requests(2000, PATIENCE),
        "{}",
        load.snapshot()
    );
    for generation in 1..=6 {
        m.signal(libc::SIGHUP);
        let ended = Ev::ReloadEnded.generation(generation);
        assert!(
            m.wait_for(PATIENCE, |l| ended.matches(l)).is_some(),
            "reload {generation} did not end within {PATIENCE:?}"
        );
        // Done: every slot has a worker of this generation, ready.
        m.reload_done(generation);
        assert!(load.wait_for_more(500, PATIENCE), "{}", load.snapshot());
    }
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}");
}

#[test]
fn a_worker_flooding_the_notify_socket_cannot_starve_the_master() {
    // The worker's child sends datagrams as fast as it can, for good.
    let flood = "import os, socket\n\
                 if os.fork() == 0:\n\
                 \x20   s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                 \x20   while True:\n\
                 \x20       try: s.sendto(b'STATUS=busy', os.environ['NOTIFY_SOCKET'])\n\
                 \x20       except OSError: pass\n\
                 os.execv(os.environ['TW'], [os.environ['TW']])\n";
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--no-monitor"])
        .env("TW_READY", "notify")
        .env("TW", test_worker().to_str().unwrap())
        .command(["python3", "-c", flood])
        .start();
    m.wait_ready();
    // Signals, control requests and reloads still get through.
    for generation in 1..=3 {
        let out = m.ctl(&["reload", "--wait"]);
        assert_eq!(out.code, 0, "reload {generation}: {out:?}");
    }
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
}

#[test]
fn idle_control_clients_cannot_lock_the_control_socket() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    m.wait_ready();
    let path = m.control_path();
    let idle: Vec<_> = (0..80)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
        .collect();
    let status = m.status_json();
    assert_eq!(status.at("master").at("pid").int(), u64::from(m.pid()));
    drop(idle);
}

#[test]
fn what_a_killed_master_left_behind_is_removed_at_the_next_start() {
    let runtime = tempfile::tempdir().unwrap();
    let xdg = runtime.path().to_str().unwrap();
    let notify_dirs = || -> Vec<String> {
        std::fs::read_dir(runtime.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("master-process."))
            .collect()
    };
    let mut first = Master::cmd()
        .args(["-l", "127.0.0.1:0"])
        .env("XDG_RUNTIME_DIR", xdg)
        .start();
    first.wait_ready();
    first.signal(libc::SIGKILL);
    first.wait_exit();
    let left = notify_dirs();
    assert_eq!(left.len(), 1, "{left:?}");
    let mut second = Master::cmd()
        .args(["-l", "127.0.0.1:0"])
        .env("XDG_RUNTIME_DIR", xdg)
        .start();
    second.wait_ready();
    let now = notify_dirs();
    assert!(!now.contains(&left[0]), "{left:?} still there: {now:?}");
    assert_eq!(now.len(), 1, "{now:?}");
    // The control socket the killed master left was stale: the second one took its place.
    let out = run_bounded(control_command(runtime.path(), &["status"]), DEADLINE);
    assert_eq!(out.code, 0, "{out:?}");
}
