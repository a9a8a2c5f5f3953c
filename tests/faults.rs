//! Faults, each one provoked for real: a SIGKILLed master, a storm of SIGHUPs, a worker that
//! ignores SIGTERM, daemons left behind, a worker shutting the shared listener down, running
//! out of descriptors or pids during a reload, a socket folder that is read-only or full, and
//! garbage on the notify socket. Each test says how the master must come out of it.
//!
//! Some tests need root (prlimit on another process, a pids cgroup, mounting a tmpfs, sending
//! another pid's credentials); where this machine does not allow it they say why and return.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loadgen::{Load, Mode, Report, Target};
use proptest::prelude::*;

use crate::support::{
    DEADLINE, Ev, KillOnDrop, Master, Want, alive, children, control_exchange, get, get_pid,
    get_unix, master_bin, num, parent_of, proc_state, quiet_snapshot, run_bounded,
    same_process_alive, start_load, start_time, test_worker, wait_gone,
};

/// Waits until `load` has finished `more` requests beyond those it had finished so far.
fn load_goes_on(load: &Load, more: u64) {
    let seen = load.snapshot().total();
    assert!(
        load.wait_for_requests(seen + more, DEADLINE),
        "load goes on: {}",
        load.snapshot()
    );
}

/// Asserts that not one request of `report` failed.
fn no_failure(what: &str, report: &Report) {
    assert_eq!(report.failed(), 0, "{what}: {report}\n{:#?}", report.errors);
}

/// The pids in a log line's `[1, 2, 3]` list.
fn pid_list(line: &str) -> BTreeSet<u32> {
    let list = &line[line.find('[').expect("a [list]") + 1..line.find(']').expect("a [list]")];
    list.split(',')
        .map(|p| p.trim().parse().expect("a pid"))
        .collect()
}

/// The child a test-worker left behind (`TW_FORK_CHILD`), from its `child CPID` line.
fn child_of_worker(m: &Master, worker: u32) -> u32 {
    let pattern = format!("test-worker[{worker}]: child ");
    let line = m
        .wait_for(DEADLINE, |l| l.contains(&pattern))
        .unwrap_or_else(|| panic!("worker {worker} never said which child it left"));
    line.rsplit(' ').next().unwrap().trim().parse().unwrap()
}

/// Asserts that no child of process `pid` is a zombie right now.
fn no_zombie_child(pid: u32) {
    let zombies: Vec<u32> = children(pid)
        .into_iter()
        .filter(|&c| proc_state(c) == Some('Z'))
        .collect();
    assert!(zombies.is_empty(), "zombie children of {pid}: {zombies:?}");
}

#[test]
fn a_sigkilled_master_under_load_leaves_no_worker_and_frees_the_port() {
    let mut m = Master::cmd().args(["-l", "127.0.0.1:0", "-w", "3"]).start();
    let workers = m.wait_ready();
    assert_eq!(workers.len(), 3);
    let addr = m.tcp_addr();
    let who: Vec<(u32, u64)> = workers
        .iter()
        .map(|&p| (p, start_time(p).expect("a running worker")))
        .collect();
    let load = start_load(Target::Tcp(addr), Mode::Close, 4);

    m.signal(libc::SIGKILL);
    let killed = Instant::now();
    // PR_SET_PDEATHSIG: the kernel kills every worker with its master; no one else does.
    for &(pid, _) in &who {
        let left = (killed + Duration::from_secs(1)).saturating_duration_since(Instant::now());
        assert!(
            wait_gone(pid, left),
            "worker {pid} still runs 1 s after its master was SIGKILLed"
        );
    }
    assert_eq!(m.wait_exit(), 128 + libc::SIGKILL);
    let report = load.stop();
    assert!(report.ok >= 200, "the load was served before: {report}");
    for (pid, started) in who {
        assert!(
            !same_process_alive(pid, started),
            "worker {pid} is still there"
        );
    }
    // Nothing holds the listening socket any more: the address can be bound again (a live
    // listener on it would make this fail with EADDRINUSE, SO_REUSEADDR or not).
    let again = std::net::TcpListener::bind(addr);
    assert!(
        again.is_ok(),
        "{addr} cannot be bound again: {:?}",
        again.err()
    );
}

#[test]
fn a_storm_of_100_sighups_stays_bounded_and_ends_in_one_clean_generation() {
    let workers = 2;
    // Readiness by notify: the `--ready listening` probe reads the /proc tree of each new
    // worker, and under this load that makes its reaping stall the master (see soak.rs).
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", &workers.to_string()])
        .args(["--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    m.wait_ready();
    let addr = m.tcp_addr();
    let close = start_load(Target::Tcp(addr), Mode::Close, 4);
    let keep_alive = start_load(Target::Tcp(addr), Mode::KeepAlive, 4);

    // Count the master's children from /proc, as often as we can, until the storm is over.
    let master = m.pid();
    let over = Arc::new(AtomicBool::new(false));
    // Stops the sampler even if the test fails before it is done with it.
    struct Over(Arc<AtomicBool>);
    impl Drop for Over {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop_sampling = Over(Arc::clone(&over));
    let (sampling, sampler_started) = std::sync::mpsc::channel();
    let sampler = {
        let over = Arc::clone(&over);
        std::thread::spawn(move || {
            let (mut most, mut samples) = (0, 0u64);
            while !over.load(Ordering::Relaxed) {
                let now = children(master);
                if now.len() > most {
                    most = now.len();
                }
                samples += 1;
                if samples == 1 {
                    sampling.send(()).unwrap();
                }
                std::thread::yield_now();
            }
            (most, samples)
        })
    };
    sampler_started
        .recv_timeout(DEADLINE)
        .expect("the sampler runs");

    // 100 SIGHUPs in a tight loop: the kernel merges those that arrive before the master
    // handles one (a pending signal is not queued twice).
    let storm = Instant::now();
    for _ in 0..100 {
        m.signal(libc::SIGHUP);
    }
    let storm = storm.elapsed();
    assert!(storm < Duration::from_secs(1), "100 kill(2) took {storm:?}");
    // 100 more, each one as soon as the master has handled the previous one (a control
    // request is answered only after the signals that arrived before it): 100 reload
    // requests, most of them during a reload. The request is one the master refuses at once:
    // `status` would read every worker's /proc tree, and reaping a worker whose /proc tree
    // was read while it churned through threads stalls the master (see soak.rs).
    let paced = Instant::now();
    for _ in 0..100 {
        m.signal(libc::SIGHUP);
        let answer = control_exchange(&m.control_path(), b"MP/1 nothing\n", DEADLINE);
        assert!(answer.starts_with(b"error "), "{answer:?}");
    }
    let paced = paced.elapsed();

    // Quiet: no reload in flight (a queued one starts as the current one ends, so it is in
    // flight by then). Wait for the end of each reload that status reports in flight.
    let generation = loop {
        let status = m.status();
        let Some(g) = status.in_flight() else {
            break status.generation();
        };
        let ended = Ev::ReloadEnded.generation(g);
        m.wait_for(DEADLINE, |l| ended.matches(l))
            .unwrap_or_else(|| panic!("reload {g} did not end within {DEADLINE:?}"));
    };
    drop(stop_sampling);
    let (most, samples) = sampler.join().unwrap();

    let lines = m.lines();
    let reloads: Vec<&String> = lines
        .iter()
        .filter(|l| Ev::ReloadStarted.matches(l) || Ev::ReloadEnded.matches(l))
        .collect();
    // The master's own account, line by line: workers started and not yet exited.
    let (mut live, mut most_logged) = (BTreeSet::new(), 0);
    for l in &lines {
        if Ev::Started.matches(l) {
            live.insert(num(l, "pid"));
        } else if Ev::Exited.matches(l) {
            live.remove(&num(l, "pid"));
        }
        most_logged = most_logged.max(live.len());
    }
    eprintln!(
        "100 SIGHUPs in {storm:?}, 100 more one by one in {paced:?}: {} reloads; at most \
         {most} children in {samples} samples from /proc, at most {most_logged} workers at \
         once in the log",
        reloads.len() / 2
    );
    let bound = 2 * workers + 1;
    assert!(
        most <= bound,
        "the master had {most} children at once (at most {bound} allowed)"
    );
    assert!(
        most_logged <= bound,
        "the master ran {most_logged} workers at once (at most {bound} allowed)"
    );
    // One reload at a time, each one done: started 1, ended 1, started 2, ended 2, ...
    let status = m.status();
    assert_eq!(
        (
            status.master().num("reloads_done"),
            status.master().num("reloads_failed")
        ),
        (generation, 0),
        "{status}"
    );
    assert!(
        generation >= 2,
        "requests during a reload queue one more: {generation} reloads"
    );
    assert!(!m.events(Ev::ReloadQueued).is_empty());
    let expected: Vec<Want> = (1..=generation)
        .flat_map(|g| {
            [
                Ev::ReloadStarted.generation(g),
                Ev::ReloadEnded.generation(g),
            ]
        })
        .collect();
    assert_eq!(reloads.len(), expected.len(), "{reloads:#?}");
    for (line, what) in reloads.iter().zip(&expected) {
        assert!(what.matches(line), "{line:?} instead of {what:?}");
    }

    // One clean generation: every worker serving, ready, of the last generation.
    let serving: Vec<_> = status.iter().filter(|r| r.kind == "worker").collect();
    assert_eq!(serving.len(), workers, "{status:#?}");
    for w in &serving {
        assert_eq!(w.get("role"), "serving", "{w:?}");
        assert_eq!(w.get("state"), "ready", "{w:?}");
        assert_eq!(w.get("generation"), generation.to_string(), "{w:?}");
    }
    no_failure("new connection per request", &close.stop());
    no_failure("keep-alive", &keep_alive.stop());
}

// The reload path is also covered by reload.rs (`old_worker_that_ignores_sigterm_is_killed_
// after_max_kill_timeout`, `max_kill_timeout_accepts_bare_milliseconds`) and the stop path by
// stop.rs (`a_worker_that_ignores_sigterm_is_killed_after_max_kill_timeout`). This one adds
// what they leave out: both paths on one master, and the worker's own child (in its process
// group) never left behind, nor left a zombie once its parent is SIGKILLed.
#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_max_kill_timeout_in_a_reload_and_a_stop() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--kill-timeout", "300ms", "-v"])
        .env("TW_IGNORE_SIGTERM", "1")
        .env("TW_FORK_CHILD", "1")
        .start();
    let old = m.wait_ready()[0];
    let old_child = child_of_worker(&m, old);

    let killed_after_timeout = |m: &mut Master, pid: u32, child: u32| {
        let stopping = m.expect_ev(Ev::Stopping.pid(pid));
        let killed = m.expect_ev(Ev::Killed.pid(pid));
        let waited = num(&killed, "at_ms") - num(&stopping, "at_ms");
        assert!(waited >= 300, "SIGKILL {waited} ms after SIGTERM");
        // The log says how it ended.
        let stopped = m.expect_ev(Ev::Stopped.pid(pid));
        assert!(stopped.contains("killed by SIGKILL"), "{stopped}");
        // The child (SIGTERMed with its group, a zombie of the worker until the worker
        // died) was handed to the master, its subreaper, which reaped it.
        let reaped = Ev::Reaped.pid(child);
        m.wait_for(DEADLINE, |l| reaped.matches(l))
            .unwrap_or_else(|| panic!("the master never reaped {child}"));
    };

    m.signal(libc::SIGHUP);
    killed_after_timeout(&mut m, old, old_child);
    let new = m.reload_done(1)[0];
    assert_ne!(new, old);
    let new_child = child_of_worker(&m, new);
    assert_eq!(get_pid(m.tcp_addr()), new, "the new worker serves");

    m.signal(libc::SIGTERM);
    killed_after_timeout(&mut m, new, new_child);
    assert_eq!(m.wait_exit(), 0);
    for pid in [old, old_child, new, new_child] {
        assert!(wait_gone(pid, Duration::ZERO), "{pid} is gone");
    }
}

#[test]
fn a_daemon_left_by_a_worker_is_stopped_with_the_master_and_never_left_a_zombie() {
    let mut daemons = KillOnDrop::default();
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "-v"])
        .env("TW_FORK_CHILD", "daemon")
        .start();
    let first = m.wait_ready();
    let first_daemons: Vec<u32> = first.iter().map(|&w| child_of_worker(&m, w)).collect();
    for (&w, &d) in first.iter().zip(&first_daemons) {
        daemons.add(d);
        assert_eq!(parent_of(d), Some(w), "daemon {d} is a child of worker {w}");
    }

    // The first workers exit: their daemons, in sessions of their own out of reach of the
    // workers' process groups, are orphans, adopted by the master.
    let second = m.reload(1);
    for &d in &first_daemons {
        assert_eq!(
            parent_of(d),
            Some(m.pid()),
            "daemon {d} adopted by the master"
        );
    }
    no_zombie_child(m.pid());
    // A daemon that dies is reaped by the master, its parent now: no zombie.
    let (dead, left) = (first_daemons[0], first_daemons[1]);
    // SAFETY: kill(2) has no memory effects; `dead` is our daemon, adopted and not reaped.
    unsafe { libc::kill(dead as i32, libc::SIGKILL) };
    m.expect_ev(Ev::Reaped.pid(dead));
    assert_eq!(proc_state(dead), None, "daemon {dead} reaped");
    no_zombie_child(m.pid());

    let second_daemons: Vec<u32> = second.iter().map(|&w| child_of_worker(&m, w)).collect();
    for &d in &second_daemons {
        daemons.add(d);
    }
    m.signal(libc::SIGTERM);
    let stopping = m.expect_ev(Ev::OrphansStopping);
    let expected: BTreeSet<u32> = second_daemons.iter().copied().chain([left]).collect();
    assert_eq!(pid_list(&stopping), expected, "{stopping}");
    assert_eq!(m.wait_exit(), 0);
    for d in expected {
        assert!(wait_gone(d, Duration::ZERO), "daemon {d} is gone");
    }
}

/// The difference `--no-subreaper` makes: the master adopts nothing, so the daemons of its
/// workers are reparented to init (or another subreaper above the master) and outlive it.
#[test]
fn without_subreaper_a_daemon_left_by_a_worker_outlives_the_master() {
    let mut daemons = KillOnDrop::default();
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--no-subreaper"])
        .env("TW_FORK_CHILD", "daemon")
        .start();
    let first = m.wait_ready()[0];
    let first_daemon = child_of_worker(&m, first);
    daemons.add(first_daemon);
    let second = m.reload(1)[0];
    let second_daemon = child_of_worker(&m, second);
    daemons.add(second_daemon);
    let adopter = parent_of(first_daemon).expect("the daemon runs");
    assert_ne!(adopter, m.pid(), "the master adopted the daemon");
    assert_ne!(adopter, first, "the worker is gone");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
    assert!(!m.logged("reaping orphaned descendants"));
    assert!(m.events(Ev::OrphansStopping).is_empty());
    let both = [first_daemon, second_daemon];
    for d in both {
        // Alive (running or sleeping: under load the last one may not have reached its
        // `sleep` yet), and never the master's.
        assert!(
            alive(d),
            "daemon {d} outlived the master: {:?}",
            proc_state(d)
        );
        assert_ne!(parent_of(d), Some(m.pid()));
    }
    // Ours to clean up.
    for d in both {
        // SAFETY: kill(2) has no memory effects; `d` still runs (checked above).
        unsafe { libc::kill(d as i32, libc::SIGKILL) };
        assert!(wait_gone(d, DEADLINE));
    }
}

#[test]
fn a_worker_shutting_down_the_shared_listener_is_recovered_from() {
    let mut m = Master::cmd().args(["-l", "127.0.0.1:0", "-w", "2"]).start();
    let old = m.wait_ready();
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::Close, 4);

    let by = get(addr, "/shutdown").expect("GET /shutdown");
    // The log says what happened, and what to suspect.
    m.expect(&format!(
        "listener {addr} stopped listening (did a worker call shutdown() on it?)"
    ));
    // Bound again, and a reload hands it to new workers.
    let new = m.reload_done(1);
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} -> {new:?}");
    for &pid in &old {
        assert!(wait_gone(pid, DEADLINE), "old worker {pid} retired");
    }

    // The same port answers again, from the new workers, and keeps answering: a fresh load
    // (requests the old one had in flight at the rebind may still land as failures).
    let pid = get_pid(addr);
    assert!(new.contains(&pid), "{pid} answered; new workers {new:?}");
    let during = load.stop();
    let after = start_load(Target::Tcp(addr), Mode::Close, 4);
    let after = after.stop();
    no_failure("after the recovery", &after);
    assert!(
        after.by_pid.keys().all(|p| new.contains(p)),
        "only the new workers answer: {:?}",
        after.by_pid
    );
    let status = m.status();
    let listener = status.listeners().next().unwrap();
    assert_eq!(listener.get("addr"), addr.to_string());
    assert_eq!(listener.get("alive"), "true", "{status}");
    assert_eq!(status.serving(), new, "{status}");
    eprintln!(
        "worker {} shut the listener down; meanwhile {} requests failed, then none of {}",
        by.trim(),
        during.failed(),
        after.total()
    );
}

#[test]
fn a_dead_listener_that_cannot_be_bound_again_stops_the_master_loudly() {
    let cmd = Master::cmd();
    let sock = cmd.dir().join("web.sock");
    let mut m = cmd
        .program("systemd-socket-activate")
        .args([std::ffi::OsStr::new("-l"), sock.as_os_str()])
        .args([
            "-E",
            "TW_REPORT",
            "-E",
            "XDG_RUNTIME_DIR",
            master_bin(),
            "--",
        ])
        .args([test_worker()])
        .start();
    m.expect("Listening on");
    // The first connection starts the master; its worker answers it.
    get_unix(&sock, "/shutdown").expect("GET /shutdown");
    m.expect("(socket activation)");
    m.expect("stopped listening (did a worker call shutdown() on it?)");
    let fatal = m.expect("stopping rather than serve a dead port");
    assert!(
        fatal.contains("cannot bind") && fatal.contains("socket activation"),
        "{fatal}"
    );
    assert_eq!(m.wait_exit(), 1);
    assert!(!m.logged("bound again"));
}

/// Sets the descriptor limits (soft:hard) of process `pid` with prlimit(1).
fn prlimit_nofile(pid: u32, soft: &str, hard: &str) {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"));
    let out = run_bounded(cmd, DEADLINE);
    assert_eq!(out.code, 0, "prlimit: {out:?}");
}

/// The descriptor limits (soft, hard) of process `pid`, from /proc/PID/limits.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line["Max open files".len()..].split_whitespace();
    (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    )
}

/// A failed reload under load: `fault` is applied, a SIGHUP fails with `reason`, the old
/// workers serve every request, then `repair` is applied and the next reload succeeds.
fn a_reload_fails_then_succeeds(
    m: &mut Master,
    old: &[u32],
    fault: impl FnOnce(&Master),
    reason: &str,
    repair: impl FnOnce(&Master),
) {
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::Close, 4);
    fault(m);
    m.signal(libc::SIGHUP);
    // (Status once repaired: without descriptors the master cannot accept a control client.)
    let ended = m.expect_ev(Ev::ReloadEnded.generation(1));
    load_goes_on(&load, 200);
    let during = load.snapshot();
    assert!(
        during.by_pid.keys().all(|p| old.contains(p)),
        "only the old workers answered: {:?}",
        during.by_pid
    );
    for &pid in old {
        assert!(m.events(Ev::Stopping.pid(pid)).is_empty(), "{pid}");
    }
    repair(m);
    let s = m.status();
    let last = s.last_reload().unwrap();
    assert_eq!(
        (last.get("generation"), last.get("outcome")),
        ("1", "failed"),
        "{s}"
    );
    let why = last.get("reason");
    assert!(why.contains("cannot start worker"), "{s}");
    assert!(why.contains(reason), "{s}");
    assert_eq!(s.serving(), old, "{s}");
    // The log says why, and that the old workers keep serving.
    let failed = m
        .lines()
        .into_iter()
        .find(|l| l.contains(why) && *l != ended)
        .unwrap();
    assert!(
        failed.contains("the previous workers keep serving"),
        "{failed}"
    );
    // The failed reload used generation 1.
    let new = m.reload(2);
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} -> {new:?}");
    load_goes_on(&load, 200);
    no_failure("through a failed and a good reload", &load.stop());
}

#[test]
fn running_out_of_descriptors_during_a_reload_fails_it_and_the_old_workers_keep_serving() {
    let mut m = Master::cmd().args(["-l", "127.0.0.1:0", "-w", "2"]).start();
    let old = m.wait_ready();
    let pid = m.pid();
    let (soft, hard) = nofile_limits(pid);
    a_reload_fails_then_succeeds(
        &mut m,
        &old,
        |m| {
            // The lowest free descriptor number: with the limit there, no descriptor can be
            // opened any more (the count of open ones, when they are 0..N-1 as usual). Only
            // the soft limit, which is what open() checks: lowering the hard one could not
            // be undone without CAP_SYS_RESOURCE.
            let fds = quiet_snapshot(m.pid(), DEADLINE)
                .expect("the master sleeps")
                .fds;
            let free = (0..).find(|n| !fds.contains(n)).unwrap();
            eprintln!(
                "the master has {} descriptors open ({fds:?}); soft limit {free}",
                fds.len()
            );
            prlimit_nofile(pid, &free.to_string(), &hard);
        },
        "Too many open files",
        |_| prlimit_nofile(pid, &soft, &hard),
    );
}

/// A pids cgroup (v1) of our own under the master's, removed on drop: every process still
/// in it moved back first.
struct PidsCgroup {
    dir: PathBuf,
    parent: PathBuf,
}

impl PidsCgroup {
    const ROOT: &str = "/sys/fs/cgroup/pids";

    /// A new cgroup next to (under) the pids cgroup of process `pid`.
    fn create(pid: u32) -> std::io::Result<PidsCgroup> {
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let path = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "pids")
                    .then(|| path.to_string())
            })
            .ok_or_else(|| std::io::Error::other("no pids controller (cgroup v1) here"))?;
        let parent = Path::new(Self::ROOT).join(path.trim_start_matches('/'));
        let dir = parent.join(format!("master-process-test-{pid}"));
        std::fs::create_dir(&dir)?;
        Ok(PidsCgroup { dir, parent })
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("{value} > {}/{file}: {e}", self.dir.display()));
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("pids.max"), "max");
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                break;
            }
            for p in procs.split_whitespace() {
                let _ = std::fs::write(self.parent.join("cgroup.procs"), p);
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

#[test]
fn running_out_of_pids_during_a_reload_fails_it_and_the_old_workers_keep_serving() {
    let mut m = Master::cmd().args(["-l", "127.0.0.1:0", "-w", "2"]).start();
    let old = m.wait_ready();
    let cgroup = match PidsCgroup::create(m.pid()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot create a pids cgroup here ({e}); nothing to test");
            return;
        }
    };
    let threads = crate::support::proc_status(m.pid(), "Threads").unwrap();
    assert_eq!(threads, "1", "the master is single-threaded");
    a_reload_fails_then_succeeds(
        &mut m,
        &old,
        |m| {
            // The master alone in the cgroup, with room for itself only; its workers stay
            // where they were started.
            cgroup.write("cgroup.procs", &m.pid().to_string());
            cgroup.write("pids.max", "1");
        },
        "Resource temporarily unavailable",
        |_| cgroup.write("pids.max", "max"),
    );
}

/// A tmpfs mounted on a fresh directory, unmounted (and the directory removed) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options`; `Err` says why it cannot be done here.
    fn mount(options: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path());
        let out = run_bounded(cmd, DEADLINE);
        if out.code != 0 {
            return Err(format!("mount -o {options}: {}", out.stderr.trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut cmd = Command::new("umount");
        cmd.arg(self.dir.path());
        let out = run_bounded(cmd, DEADLINE);
        if out.code != 0 {
            eprintln!("umount {}: {}", self.dir.path().display(), out.stderr);
            let mut lazy = Command::new("umount");
            lazy.arg("-l").arg(self.dir.path());
            run_bounded(lazy, DEADLINE);
        }
    }
}

/// Runs a master that must listen on `DIR/app.sock`; asserts that it exits 2 with one error
/// line containing each of `expected` (then only its causes, one line each) and starts
/// nothing.
fn cannot_listen_in(dir: &Path, expected: &[&str]) {
    let runtime = tempfile::tempdir().unwrap();
    let sock = dir.join("app.sock");
    let mut cmd = Command::new(master_bin());
    cmd.arg("-l")
        .arg(&sock)
        .args(["--control", "off", "--"])
        .arg(test_worker())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env_remove("DEBUG");
    let out = run_bounded(cmd, DEADLINE);
    assert_eq!(out.code, 2, "{out:?}");
    let mut lines = out.stderr.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "master-process: error: cannot listen on {}",
            sock.display()
        )),
        "{out:?}"
    );
    for e in expected {
        assert!(first.contains(e), "{first:?} lacks {e:?}");
    }
    for more in lines {
        assert!(more.starts_with("  caused by: "), "{more:?} in {out:?}");
    }
    assert!(
        !out.stderr.lines().any(|l| Ev::Started.matches(l)),
        "{out:?}"
    );
}

#[test]
fn a_read_only_socket_folder_is_a_clear_error() {
    let fs = match Tmpfs::mount("ro,size=1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("cannot mount a tmpfs here ({why}); nothing to test");
            return;
        }
    };
    cannot_listen_in(fs.path(), &["read-only"]);
}

#[test]
fn a_full_socket_folder_is_a_clear_error() {
    let fs = match Tmpfs::mount("size=1m,nr_inodes=16") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("cannot mount a tmpfs here ({why}); nothing to test");
            return;
        }
    };
    // Take every inode left.
    let mut full = false;
    for i in 0..100 {
        match std::fs::File::create_new(fs.path().join(format!("f{i}"))) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                full = true;
                break;
            }
            Err(e) => panic!("filling {}: {e}", fs.path().display()),
        }
    }
    assert!(full, "{} never filled up", fs.path().display());
    cannot_listen_in(fs.path(), &["no space left"]);
}

#[test]
fn garbage_from_a_worker_on_the_notify_socket_never_disturbs_the_master() {
    // READY=1, then lines a careless or broken worker might send: empty values, no key,
    // control characters, a long line, a version that is none.
    let long = format!("STATUS={}", "x".repeat(3000));
    let extra = format!(
        "MONITOR=;===;MASTER_PROCESS_VERSION=;\u{1}\u{2};STATUS=;=;READY=;READY=0;\u{7f}=\u{1b}[2J;{long}"
    );
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify"])
        .env("TW_READY", "raw")
        .env("TW_NOTIFY_EXTRA", &extra)
        .start();
    let first = m.wait_ready();
    m.eventually(
        &first
            .iter()
            .map(|p| format!("test-worker[{p}]: ready sent (raw)"))
            .collect::<Vec<_>>(),
    );
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), Mode::Close, 4);
    // The next generation sends the same: it is ready too, and the master carries on.
    let second = m.reload(1);
    load_goes_on(&load, 200);
    assert!(second.contains(&get_pid(addr)));
    let status = m.status();
    assert_eq!(status[0].get("phase"), "running");
    assert_eq!(status[0].get("generation"), "1");
    let out = m.ctl(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    no_failure("garbage on the notify socket", &load.stop());
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait_exit(), 0);
}

/// One datagram to the notify socket: its bytes, whether it claims to come from a worker
/// (root may send any pid as its credentials), and how many descriptors ride along.
#[derive(Debug, Clone)]
struct Datagram {
    bytes: Vec<u8>,
    as_worker: bool,
    fds: usize,
}

fn datagrams() -> impl Strategy<Value = Datagram> {
    let keys = prop_oneof![
        prop::sample::select(vec![
            "READY",
            "STATUS",
            "MONITOR",
            "MASTER_PROCESS_VERSION",
            "BARRIER",
            "WATCHDOG",
            "MAINPID",
            "ERRNO",
            "",
        ])
        .prop_map(String::from),
        "[A-Z_]{1,12}",
    ];
    let fields = prop::collection::vec((keys, "[^\n]{0,40}"), 0..8).prop_map(|fields| {
        fields
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    });
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        fields,
        // Longer than the master reads (4096): truncated.
        (4097usize..6000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        Just(Vec::new()),
    ];
    // At most the 16 descriptors the master makes room for: more is the next test's case.
    (bytes, any::<bool>(), 0usize..=16).prop_map(|(bytes, as_worker, fds)| Datagram {
        bytes,
        as_worker,
        fds,
    })
}

/// Sends `d` to `socket`, as `pid` with credentials, with `d.fds` descriptors of /dev/null.
fn send_datagram(path: &Path, d: &Datagram, pid: u32) -> nix::Result<usize> {
    use nix::sys::socket::{
        AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, UnixCredentials,
        sendmsg, socket,
    };
    use std::os::fd::AsRawFd;
    let tx = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let files: Vec<std::fs::File> = (0..d.fds)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let raw: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let creds = UnixCredentials::from(libc::ucred {
        pid: pid as i32,
        // SAFETY: getuid and getgid cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
    });
    let mut cmsgs = vec![ControlMessage::ScmCredentials(&creds)];
    if !raw.is_empty() {
        cmsgs.push(ControlMessage::ScmRights(&raw));
    }
    let addr = UnixAddr::new(path)?;
    sendmsg(
        tx.as_raw_fd(),
        &[std::io::IoSlice::new(&d.bytes)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
}

#[test]
fn arbitrary_datagrams_on_the_notify_socket_never_disturb_the_master() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    let workers = m.wait_ready();
    let master = m.pid();
    let socket = m.dir().join(format!("master-process.{master}.0/notify"));
    let before = quiet_snapshot(master, DEADLINE).expect("the master sleeps");
    // Root may claim any pid in its credentials: then garbage comes "from a worker" and
    // reaches the parser of notify fields, not only the sender check.
    let spoofing = send_datagram(
        &socket,
        &Datagram {
            bytes: b"STATUS=probe".to_vec(),
            as_worker: true,
            fds: 0,
        },
        workers[0],
    )
    .is_ok();
    if !spoofing {
        eprintln!("we may not send another pid's credentials: garbage comes from us only");
    }
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(32)
    };
    proptest!(config, |(d in datagrams())| {
        let pid = if d.as_worker && spoofing { workers[0] } else { std::process::id() };
        send_datagram(&socket, &d, pid).expect("sendmsg to the notify socket");
        let status = m.status();
        prop_assert_eq!(status[0].get("pid"), master.to_string());
        prop_assert_eq!(status[0].get("phase"), "running");
    });
    // Same workers, nothing started or stopped, no descriptor kept from any datagram.
    let out = m.ctl(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.serving(), workers);
    assert_eq!(m.started_pids(), workers, "no worker was started");
    assert!(m.events(Ev::Stopping).is_empty());
    let after = quiet_snapshot(master, DEADLINE).expect("the master sleeps");
    assert_eq!(after.fds, before.fds, "the master's descriptors");
    assert_eq!(after.threads, 1);
    assert!(
        workers.contains(&get_pid(m.tcp_addr())),
        "the workers serve"
    );
}

/// The master reads at most 16 descriptors with a datagram (its control buffer); the kernel
/// installs those that fit and flags the message truncated (MSG_CTRUNC). They are the
/// master's to close all the same, or any worker can exhaust its descriptor table.
#[test]
fn a_datagram_with_more_descriptors_than_the_master_reads_leaves_none_open_in_it() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start();
    m.wait_ready();
    let master = m.pid();
    let socket = m.dir().join(format!("master-process.{master}.0/notify"));
    let before = quiet_snapshot(master, DEADLINE).expect("the master sleeps");
    for fds in [17, 20, 253] {
        let d = Datagram {
            bytes: b"STATUS=many descriptors".to_vec(),
            as_worker: false,
            fds,
        };
        send_datagram(&socket, &d, std::process::id()).expect("sendmsg");
        // The status answer comes after the master has handled the datagram.
        assert_eq!(m.status()[0].get("phase"), "running");
        let now = quiet_snapshot(master, DEADLINE).expect("the master sleeps");
        assert_eq!(
            now.fds.len(),
            before.fds.len(),
            "the master keeps {} more descriptors after a datagram with {fds}: {:?}",
            now.fds.len() - before.fds.len(),
            now.fds
        );
    }
}
