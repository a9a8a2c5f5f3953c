//! The control socket: `master-process reload --wait | status | stop --wait | signal` against
//! a running master, who may ask (its own user, mode 0600), and garbage that must never
//! disturb it.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use loadgen::{Mode, Target};
use proptest::prelude::*;

use crate::support::{
    DEADLINE, Ev, Json, Master, Output, alive, control_command, control_exchange, get_pid, records,
    run_bounded, start_load, wait_gone,
};

fn master(workers: &str, knobs: &[(&str, &str)], extra: &[&str]) -> Master {
    Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "-w", workers])
        .args(extra.iter().copied())
        .with_knobs(knobs)
        .start()
}

/// The pids in a `serving: 0:PID@GEN,1:PID@GEN` list printed by `reload --wait`, with the
/// generation of each.
fn serving_list(text: &str, prefix: &str) -> Vec<(u32, u64)> {
    let line = text
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {prefix:?} in {text:?}"));
    line.split(',')
        .map(|item| {
            let (_, pid_gen) = item.split_once(':').unwrap();
            let (pid, generation) = pid_gen.split_once('@').unwrap();
            (pid.parse().unwrap(), generation.parse().unwrap())
        })
        .collect()
}

#[test]
fn reload_wait_succeeds_and_prints_the_pids_that_now_serve() {
    let mut m = master("2", &[("TW_READY", "notify")], &[]);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    let out = m.ctl(&["reload", "--wait", "--timeout", "20s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("reload 1 done in "), "{out:?}");
    let printed = serving_list(&out.stdout, "serving: ");
    assert!(printed.iter().all(|&(_, g)| g == 1), "{out:?}");
    let printed: BTreeSet<u32> = printed.into_iter().map(|(p, _)| p).collect();
    // The master's own account agrees.
    let status = m.reload_ended(1, "done");
    let serving: BTreeSet<u32> = status.serving().into_iter().collect();
    assert_eq!(
        printed, serving,
        "printed vs status; stdout: {}",
        out.stdout
    );
    assert!(printed.iter().all(|p| !old.contains(p)), "{out:?}");
    // The old workers are gone once the reload is done: only the printed pids answer.
    for pid in &old {
        assert!(
            !alive(*pid),
            "old worker {pid} still runs after reload --wait"
        );
    }
    for _ in 0..10 {
        let pid = get_pid(addr);
        assert!(
            printed.contains(&pid),
            "{pid} answered; printed {printed:?}"
        );
    }
}

/// `reload --wait` under load with a broken new release: exit 1, the reason, the old pids
/// still serving, and not one failed request.
fn failed_reload_under_load(broken: &[(&str, &str)], extra: &[&str], reason: &str) {
    let mut m = master("2", &[("TW_READY", "notify")], extra);
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::Close, 8);
    m.set_knobs(broken);
    let out = m.ctl(&["reload", "--wait", "--timeout", "20s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.starts_with("reload 1 failed: "), "{out:?}");
    assert!(out.stdout.contains(reason), "{out:?}");
    let still: Vec<(u32, u64)> = serving_list(&out.stdout, "still serving: ");
    let still_pids: BTreeSet<u32> = still.iter().map(|&(p, _)| p).collect();
    assert_eq!(
        still_pids,
        old.iter().copied().collect(),
        "the old workers still serve: {out:?}"
    );
    assert!(still.iter().all(|&(_, g)| g == 0), "{out:?}");
    // Load goes on against the old workers after the failure too.
    assert!(
        load.wait_for_more(200, DEADLINE),
        "load goes on: {}",
        load.snapshot()
    );
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}\n{:#?}", report.errors);
    assert!(
        report.by_pid.keys().all(|p| old.contains(p)),
        "only old workers answered: {:?}",
        report.by_pid
    );
    for pid in &old {
        assert!(alive(*pid), "old worker {pid} still runs");
        assert!(m.events(Ev::Stopping.pid(pid)).is_empty(), "{pid}");
    }
}

#[test]
fn reload_wait_with_a_worker_exiting_at_start_fails_and_the_old_workers_serve_every_request() {
    failed_reload_under_load(
        &[("TW_EXIT_AT_START", "3")],
        &[],
        "exited with code 3 before it was ready",
    );
}

#[test]
fn reload_wait_with_a_worker_never_ready_fails_and_the_old_workers_serve_every_request() {
    failed_reload_under_load(
        &[("TW_NEVER_READY", "1")],
        &["--ready-timeout", "1s"],
        "was not ready within 1s",
    );
}

#[test]
fn reload_wait_with_a_worker_saying_ready_before_it_dies_fails_and_the_old_workers_serve_every_request()
 {
    // As gunicorn's arbiter: READY=1 at once, then the app fails to load. Under the default
    // `--ready listening` only the probe decides, so this release never replaces the old one.
    failed_reload_under_load(
        &[
            ("TW_READY", "notify"),
            ("TW_READY_EARLY", "1"),
            ("TW_LISTEN_DELAY_MS", "60000"),
            ("TW_CRASH_AFTER_MS", "300"),
            ("TW_EXIT_CODE", "4"),
        ],
        &["--ready", "listening"],
        "exited with code 4 before it was ready",
    );
}

#[test]
fn status_shows_the_master_listeners_reloads_and_every_worker_as_a_table_and_as_json() {
    let mut m = master("2", &[("TW_READY", "notify")], &[]);
    m.wait_ready();
    let addr = m.tcp_addr();
    let pids = m.reload(1);
    let master_pid = m.pid().to_string();

    let table = m.ctl(&["status"]);
    assert_eq!(table.code, 0, "{table:?}");
    let t = &table.stdout;
    assert!(
        t.starts_with(&format!(
            "master {master_pid} (master-process {}), up ",
            env!("CARGO_PKG_VERSION")
        )),
        "{t}"
    );
    assert!(t.contains(", running; 2 workers, ready by notify"), "{t}");
    assert!(t.contains("1 reloads done, 0 failed"), "{t}");
    assert!(t.contains(&format!("listening on {addr}, backlog ")), "{t}");
    assert!(t.contains("last reload: 1 done in "), "{t}");
    let lines: Vec<&str> = t.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("INDEX"))
        .unwrap_or_else(|| panic!("no worker table: {t}"));
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "INDEX", "PID", "GEN", "ROLE", "STATE", "UPTIME", "RESTARTS", "RSS", "CPU%"
        ],
        "{t}"
    );
    for (index, pid) in pids.iter().enumerate() {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for worker {pid}: {t}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], index.to_string(), "{row}");
        assert_eq!(&cells[2..5], ["1", "serving", "ready"], "{row}");
        assert_eq!(cells[6], "0", "restarts: {row}");
        assert_eq!(cells[8], "MB", "RSS in MB: {row}");
        assert!(cells[7].parse::<f64>().unwrap() > 0.0, "RSS: {row}");
        assert!(cells[9].parse::<f64>().is_ok(), "CPU%: {row}");
    }

    let j = m.status_json();
    let master = j.at("master");
    assert_eq!(master.at("pid").int(), u64::from(m.pid()), "{j}");
    assert_eq!(master.at("version").str(), env!("CARGO_PKG_VERSION"), "{j}");
    assert_eq!(master.at("phase").str(), "running", "{j}");
    assert_eq!(master.at("workers").int(), 2, "{j}");
    assert_eq!(master.at("reloads_done").int(), 1, "{j}");
    assert_eq!(master.at("reloads_failed").int(), 0, "{j}");
    let listeners = j.at("listeners").arr();
    assert_eq!(listeners.len(), 1, "{j}");
    assert_eq!(listeners[0].at("addr").str(), addr.to_string(), "{j}");
    let last = j.at("last_reload");
    assert_eq!(last.at("generation").int(), 1, "{j}");
    assert_eq!(last.at("outcome").str(), "done", "{j}");
    let workers = j.at("workers").arr();
    assert_eq!(workers.len(), 2, "{j}");
    let slots = j.at("slots").arr();
    for (index, pid) in pids.iter().enumerate() {
        let w = workers
            .iter()
            .find(|w| w.at("pid").int() == u64::from(*pid))
            .unwrap_or_else(|| panic!("no worker {pid} in {j}"));
        assert_eq!(w.at("index").int(), index as u64, "{w}");
        assert_eq!(w.at("generation").int(), 1, "{w}");
        assert_eq!(w.at("role").str(), "serving", "{w}");
        assert_eq!(w.at("state").str(), "ready", "{w}");
        w.at("uptime_ms").int();
        assert!(w.at("rss_kb").int() > 0, "{w}");
        w.at("cpu_pct").num();
        let slot = slots
            .iter()
            .find(|s| s.at("index").int() == index as u64)
            .unwrap_or_else(|| panic!("no slot {index} in {j}"));
        assert_eq!(slot.at("restarts").int(), 0, "{slot}");
        assert!(!slot.at("crash_loop").bool(), "{slot}");
    }
}

#[test]
fn status_reports_a_failed_last_reload_and_why() {
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    m.wait_ready();
    m.set_knobs(&[("TW_EXIT_AT_START", "4")]);
    let out = m.ctl(&["reload", "--wait", "--timeout", "20s"]);
    assert_eq!(out.code, 1, "{out:?}");
    let table = m.ctl(&["status"]).stdout;
    assert!(table.contains("0 reloads done, 1 failed"), "{table}");
    assert!(
        table.contains("last reload: 1 failed in ") && table.contains("exited with code 4"),
        "{table}"
    );
    let j = m.status_json();
    let last = j.at("last_reload");
    assert_eq!(last.at("outcome").str(), "failed", "{j}");
    assert!(
        last.at("reason").str().contains("exited with code 4"),
        "{j}"
    );
}

#[test]
fn stop_wait_returns_once_every_worker_is_gone_and_the_master_exits_0() {
    let mut m = master("2", &[("TW_READY", "notify")], &[]);
    let pids = m.wait_ready();
    let sock = m.control_path();
    let out = m.ctl(&["stop", "--wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "stop state=stopped code=0", "{out:?}");
    // Every worker is gone (exited and reaped) by the time the answer came.
    for pid in &pids {
        assert!(
            wait_gone(*pid, Duration::ZERO),
            "worker {pid} still exists when stop --wait returned"
        );
    }
    assert_eq!(m.wait_exit(), 0);
    assert!(!sock.exists(), "the master removed its control socket");
}

#[test]
fn signal_usr2_reaches_every_worker() {
    let mut m = master("3", &[("TW_READY", "notify")], &[]);
    let pids = m.wait_ready();
    let out = m.ctl(&["signal", "USR2"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "signal name=SIGUSR2 workers=3",
        "{out:?}"
    );
    m.expect_each(
        &pids
            .iter()
            .map(|p| format!("test-worker[{p}]: got SIGUSR2"))
            .collect::<Vec<_>>(),
    );
    // SIGUSR2 is for profiling: nobody stopped.
    assert!(pids.iter().all(|p| alive(*p)));
}

/// Runs a control command as uid/gid 65534 ("nobody") against `m`.
fn as_nobody(m: &Master, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    // Another user does not look into our control folder (not theirs): it is told the path.
    let path = m.control_path();
    let mut all = args.to_vec();
    all.extend(["--control", path.to_str().unwrap()]);
    let mut cmd = control_command(m.dir(), &all);
    cmd.uid(65534).gid(65534);
    run_bounded(cmd, DEADLINE)
}

/// Lets uid 65534 through the master's folders to its control socket.
fn open_to_nobody(m: &Master) {
    for dir in [m.dir().to_path_buf(), m.dir().join("master-process")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
}

/// A master whose control socket uid 65534 can reach (the temp dir is 0700, the socket
/// 0600): both opened to everyone, so that only the master's own check stands in the way.
/// `None` when the test does not run as root (it cannot run a client as another uid).
fn master_reachable_by_nobody() -> Option<Master> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run a client as another uid; skipped");
        return None;
    }
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    m.wait_ready();
    open_to_nobody(&m);
    std::fs::set_permissions(m.control_path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    Some(m)
}

#[test]
fn control_socket_is_private_and_a_request_from_another_user_is_refused() {
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    let pids = m.wait_ready();
    let sock = m.control_path();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run a client as another uid; the rest is skipped");
        return;
    }
    // Let uid 65534 reach the socket at all: the temp dir and the control folder are 0700.
    open_to_nobody(&m);
    // Mode 0600 alone keeps it out: it cannot even connect.
    let out = as_nobody(&m, &["status"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    // Even with the file opened to everyone, the master refuses the peer's uid.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let attempts: [&[&str]; 4] = [
        &["status"],
        &["stop"],
        &["reload", "--wait"],
        &["signal", "TERM"],
    ];
    for args in attempts {
        let out = as_nobody(&m, args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr
                .contains("the master says: permission denied: request from uid 65534"),
            "{args:?}: {out:?}"
        );
    }
    // The log says the master refused each of them, by uid.
    for _ in attempts {
        m.expect("control: permission denied: request from uid 65534 ");
    }
    // And it did none of it: no reload, no stop, no signal to the workers.
    let s = m.status();
    assert_eq!(s.phase(), "running", "{s}");
    assert_eq!((s.generation(), s.in_flight()), (0, None), "{s}");
    assert_eq!(s.serving(), pids, "{s}");
    assert!(m.events(Ev::Stopping).is_empty());
    // It still serves its own user.
    let out = m.ctl(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(1) == Some(&pids[0].to_string().as_str())
                && cells.get(3..5) == Some(&["serving", "ready"][..])
        }),
        "{out:?}"
    );
    assert!(pids.iter().all(|p| alive(*p)));
}

/// The master refuses a peer of another uid as soon as it accepts it, before reading its
/// request: a client whose write then fails must still read and report the master's answer,
/// not "Broken pipe". Many attempts, to catch the race.
#[test]
fn refused_client_is_told_why_every_time() {
    let Some(m) = master_reachable_by_nobody() else {
        return;
    };
    for _ in 0..20 {
        let out = as_nobody(&m, &["status"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr
                .contains("the master says: permission denied: request from uid 65534"),
            "{out:?}"
        );
    }
}

/// Requests that are not requests: random, binary, oversized, unfinished, or of another
/// protocol version. None of them is a valid `MP/1` request.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let wrong_version = (
        prop::sample::select(vec![
            "MP/0", "MP/2", "MP/10", "MP/", "MP/1.1", "mp/1", "MP1", "HTTP/1.1", "",
        ]),
        prop::sample::select(vec!["status", "reload wait", "stop", "signal TERM", ""]),
    )
        .prop_map(|(v, verb)| format!("{v} {verb}\n").into_bytes());
    let bad_verb = "[a-z ]{0,30}".prop_map(|verb| format!("MP/1 x{verb}\n").into_bytes());
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|mut v| {
            v.push(b'\n');
            v
        }),
        // Oversized, without a newline.
        (4097usize..12_000, any::<u8>())
            .prop_map(|(n, b)| vec![if b == b'\n' { b'x' } else { b }; n]),
        // Unfinished lines: the client closes before its newline.
        "[ -~]{0,100}".prop_map(String::into_bytes),
        "MP/1 (status|reload|stop|signal USR2)".prop_map(String::into_bytes),
        wrong_version,
        bad_verb,
        // Not UTF-8.
        Just(b"MP/1 status \xff\xfe\n".to_vec()),
        Just(b"\0\0\0\n".to_vec()),
    ]
}

#[test]
fn garbage_on_the_control_socket_never_disturbs_the_master() {
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    let pids = m.wait_ready();
    let path = m.control_path();
    let master_pid = m.pid().to_string();
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(64)
    };
    proptest!(config, |(request in garbage())| {
        let answer = control_exchange(&path, &request, DEADLINE);
        let text = String::from_utf8_lossy(&answer);
        // Either no answer (an unfinished line), or one error record.
        prop_assert!(
            answer.is_empty() || (text.starts_with("error message=") && text.ends_with('\n')
                && text.lines().count() == 1),
            "answer {:?} to {:?}", text, String::from_utf8_lossy(&request)
        );
        let status = crate::support::records(&control_exchange(&path, b"MP/1 status\n", DEADLINE));
        prop_assert_eq!(status[0].get("pid"), master_pid.as_str());
    });
    // Same master, same workers, nothing started or stopped.
    let out = m.ctl(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.serving(), pids);
    assert_eq!(m.started_pids(), pids, "no worker was started");
    assert!(m.events(Ev::Stopping).is_empty());
}

#[test]
fn oversized_request_gets_an_error_answer() {
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    m.wait_ready();
    let mut request = b"MP/1 status ".to_vec();
    request.resize(5000, b'x');
    let answer = control_exchange(&m.control_path(), &request, DEADLINE);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "error message=request%20longer%20than%204096%20bytes\n"
    );
    let out = m.ctl(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn silent_or_slow_clients_do_not_hold_up_the_others() {
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    m.wait_ready();
    let path = m.control_path();
    let mut silent = UnixStream::connect(&path).unwrap();
    let mut slow = UnixStream::connect(&path).unwrap();
    slow.write_all(b"MP/1 sta").unwrap();
    // Others are served meanwhile, by the client and over the socket.
    for _ in 0..5 {
        let out = m.ctl(&["status"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let out = m.ctl(&["reload", "--wait", "--timeout", "20s"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The silent one is still connected, unanswered (it is dropped after 10 s).
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the silent client got {other:?}"),
    }
    // The slow one's line, once complete, is answered.
    slow.write_all(b"tus\n").unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).unwrap();
    let status = records(&answer);
    assert_eq!(status[0].kind, "master");
    assert_eq!(status[0].get("reloads_done"), "1");
}

#[test]
fn a_second_master_on_the_same_control_socket_refuses_to_start() {
    let mut m = master("1", &[("TW_READY", "notify")], &[]);
    let pid = m.wait_ready()[0];
    let addr = m.tcp_addr();
    // The same name means the same control socket.
    let sock = m.control_path();
    let name = sock.file_stem().unwrap().to_str().unwrap();
    let mut second = control_command(
        m.dir(),
        &["-l", "127.0.0.1:0", "--ready", "notify", "--name", name],
    );
    second
        .arg("--")
        .arg(crate::support::test_worker())
        .env("TW_READY", "notify");
    let out = run_bounded(second, DEADLINE);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("another master is running with this control socket"),
        "{out:?}"
    );
    assert!(
        !out.stderr.lines().any(|l| Ev::Started.matches(l)),
        "{out:?}"
    );
    // The first one keeps its socket and keeps working.
    assert!(m.control_path().exists());
    let out = m.ctl(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("master {} (master-process", m.pid())),
        "{out:?}"
    );
    assert_eq!(get_pid(addr), pid);
    assert_eq!(m.ctl(&["reload", "--wait"]).code, 0);
}

#[test]
fn list_and_status_pass_over_a_socket_whose_queue_is_full() {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let runtime = tempfile::tempdir().unwrap();
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--name", "api", "--ready", "notify"])
        .env("TW_READY", "notify")
        .env("XDG_RUNTIME_DIR", runtime.path().to_str().unwrap())
        .start();
    m.wait_ready();
    // A listener beside the master's socket that never accepts, its queue full: a blocking
    // connect to it would wait forever.
    let stuck = UnixAddr::new(&runtime.path().join("master-process/stuck.sock")).unwrap();
    let unix = |flags| socket::socket(AddressFamily::Unix, SockType::Stream, flags, None);
    let listener = unix(SockFlag::SOCK_CLOEXEC).unwrap();
    socket::bind(listener.as_raw_fd(), &stuck).unwrap();
    socket::listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut queued = Vec::new();
    loop {
        let c = unix(SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC).unwrap();
        match socket::connect(c.as_raw_fd(), &stuck) {
            Ok(()) => queued.push(c),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(
            queued.len() < 64,
            "the queue of a backlog-0 listener never filled"
        );
    }
    let ctl = |args: &[&str]| run_bounded(control_command(runtime.path(), args), DEADLINE);
    let out = ctl(&["list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let names: Vec<&str> = (out.stdout.lines().skip(1))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["api"], "{out:?}");
    let out = ctl(&["status", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("\"pid\":{}", m.pid())),
        "{out:?}"
    );
}
