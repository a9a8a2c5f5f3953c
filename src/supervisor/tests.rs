//! The state machine against a fake clock and a recording fake of the OS.

use std::collections::HashSet;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Spawn {
        index: usize,
        generation: u64,
        pid: Pid,
    },
    Signal(Target, Signal),
}

#[derive(Debug, Default)]
struct FakeOs {
    next_pid: Pid,
    calls: Vec<Call>,
    fail_spawn: bool,
    /// Process groups that still have members.
    groups: HashSet<Pid>,
}

impl Os for FakeOs {
    fn spawn(&mut self, index: usize, generation: u64) -> Result<Pid, String> {
        if self.fail_spawn {
            return Err("Resource temporarily unavailable".into());
        }
        self.next_pid += 1;
        let pid = 100 + self.next_pid;
        self.calls.push(Call::Spawn {
            index,
            generation,
            pid,
        });
        Ok(pid)
    }
    fn signal(&mut self, target: Target, signal: Signal) {
        self.calls.push(Call::Signal(target, signal));
    }
    fn group_alive(&mut self, pgid: Pid) -> bool {
        self.groups.contains(&pgid)
    }
}

/// A supervisor, a fake clock, and helpers to drive both.
struct Harness {
    sup: Supervisor<FakeOs>,
    t0: Instant,
    now: Instant,
}

fn settings(workers: usize) -> Settings {
    Settings {
        workers,
        throttle: Duration::from_secs(1),
        kill_timeout: Duration::from_secs(5),
        ready: ReadyMode::Notify,
        ready_timeout: Duration::from_secs(60),
        on_crash: OnCrash::Restart,
        max_backoff: Duration::from_secs(30),
        strategy: Strategy::Parallel,
        canary: None,
    }
}

impl Harness {
    fn new(settings: Settings) -> Self {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(FakeOs::default(), settings);
        sup.start(t0);
        Harness { sup, t0, now: t0 }
    }

    /// Advances the clock to `ms` after start, ticking at every deadline on the way.
    fn at(&mut self, ms: u64) -> &mut Self {
        let target = self.t0 + Duration::from_millis(ms);
        while let Some(d) = self.sup.next_deadline().filter(|&d| d <= target) {
            self.now = d.max(self.now);
            self.sup.on_tick(self.now);
        }
        self.now = target;
        self.sup.on_tick(self.now);
        self
    }

    fn calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.sup.os_mut().calls)
    }

    fn spawned(&mut self) -> Vec<Pid> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Spawn { pid, .. } => Some(pid),
                Call::Signal(..) => None,
            })
            .collect()
    }

    fn ready(&mut self, pid: Pid) {
        self.sup.on_ready(pid, self.now);
    }

    fn exit(&mut self, pid: Pid, status: ExitStatus) {
        self.sup.on_exit(pid, status, self.now);
    }

    fn signal(&mut self, s: Signal) {
        self.sup.on_signal(s, self.now);
    }

    fn serving(&self) -> Vec<(usize, Pid, u64)> {
        let mut v: Vec<_> = self
            .sup
            .workers()
            .iter()
            .filter(|w| w.role == Role::Serving)
            .map(|w| (w.index, w.pid, w.generation))
            .collect();
        v.sort();
        v
    }

    /// Starts `n` workers and makes them ready; returns their pids.
    fn running(n: usize) -> (Harness, Vec<Pid>) {
        let mut h = Harness::new(settings(n));
        let pids = h.spawned();
        for &p in &pids {
            h.ready(p);
        }
        assert_eq!(h.sup.phase(), Phase::Running);
        (h, pids)
    }
}

fn term(pid: Pid) -> Call {
    Call::Signal(Target::Group(pid), Signal::Terminate)
}

fn kill(pid: Pid) -> Call {
    Call::Signal(Target::Group(pid), Signal::Kill)
}

#[test]
fn start_spawns_one_worker_per_slot_with_reload_index_zero() {
    let mut h = Harness::new(settings(3));
    let calls = h.calls();
    assert_eq!(
        calls,
        vec![
            Call::Spawn {
                index: 0,
                generation: 0,
                pid: 101
            },
            Call::Spawn {
                index: 1,
                generation: 0,
                pid: 102
            },
            Call::Spawn {
                index: 2,
                generation: 0,
                pid: 103
            },
        ]
    );
    assert_eq!(h.sup.phase(), Phase::Starting);
}

#[test]
fn phase_is_running_only_once_every_slot_is_ready() {
    let mut h = Harness::new(settings(2));
    h.ready(101);
    assert_eq!(h.sup.phase(), Phase::Starting);
    h.ready(102);
    assert_eq!(h.sup.phase(), Phase::Running);
}

#[test]
fn delay_readiness_marks_a_live_worker_ready_after_the_delay() {
    let mut s = settings(1);
    s.ready = ReadyMode::Delay(Duration::from_millis(500));
    let mut h = Harness::new(s);
    h.at(499);
    assert_eq!(h.sup.phase(), Phase::Starting);
    h.at(500);
    assert_eq!(h.sup.phase(), Phase::Running);
}

#[test]
fn reload_retires_each_old_worker_only_once_its_replacement_is_ready() {
    let (mut h, old) = Harness::running(2);
    h.signal(Signal::Hangup);
    assert_eq!(
        h.calls(),
        vec![
            Call::Spawn {
                index: 0,
                generation: 1,
                pid: 103
            },
            Call::Spawn {
                index: 1,
                generation: 1,
                pid: 104
            },
        ]
    );
    h.ready(104);
    assert_eq!(
        h.calls(),
        vec![term(old[1])],
        "only slot 1's old worker is retired"
    );
    assert!(h.sup.reload().is_some());
    h.ready(103);
    assert_eq!(h.calls(), vec![term(old[0])]);
    assert_eq!(h.serving(), vec![(0, 103, 1), (1, 104, 1)]);
    // The reload ends when the retired workers are gone.
    h.exit(old[0], ExitStatus::Code(0));
    assert!(h.sup.reload().is_some());
    h.exit(old[1], ExitStatus::Code(0));
    assert!(h.sup.reload().is_none());
    assert!(h.calls().is_empty(), "a clean reload restarts nothing");
}

#[test]
fn new_worker_that_exits_fails_the_reload_and_old_workers_keep_serving() {
    let (mut h, old) = Harness::running(2);
    h.signal(Signal::Hangup);
    let new = h.spawned();
    h.exit(new[0], ExitStatus::Code(3));
    let failure = h
        .sup
        .reload()
        .and_then(|r| r.failure.clone())
        .expect("failed");
    assert!(failure.contains("exited with code 3"), "{failure}");
    // The other candidate is stopped; the old workers are not touched.
    assert_eq!(h.calls(), vec![term(new[1])]);
    assert_eq!(h.serving(), vec![(0, old[0], 0), (1, old[1], 0)]);
    h.exit(new[1], ExitStatus::Code(0));
    assert!(h.sup.reload().is_none());
    assert!(h.calls().is_empty(), "no restart, no signal to old workers");
}

#[test]
fn new_worker_not_ready_in_time_fails_the_reload_and_is_stopped() {
    let (mut h, old) = Harness::running(1);
    h.signal(Signal::Hangup);
    let new = h.spawned();
    h.at(59_999);
    assert!(h.calls().is_empty());
    h.at(60_000);
    assert_eq!(h.calls(), vec![term(new[0])]);
    assert!(
        h.sup
            .reload()
            .unwrap()
            .failure
            .as_ref()
            .unwrap()
            .contains("not ready within 1m")
    );
    // It ignores SIGTERM: SIGKILL after MAX_KILL_TIMEOUT.
    h.at(65_000);
    assert_eq!(h.calls(), vec![kill(new[0])]);
    h.exit(new[0], ExitStatus::Signal(9));
    assert!(h.sup.reload().is_none());
    assert_eq!(h.serving(), vec![(0, old[0], 0)]);
}

#[test]
fn sighups_during_a_reload_are_coalesced_into_one_more_reload() {
    let (mut h, old) = Harness::running(1);
    h.signal(Signal::Hangup);
    let gen1 = h.spawned();
    h.signal(Signal::Hangup);
    h.signal(Signal::Hangup);
    h.signal(Signal::Hangup);
    assert!(
        h.calls().is_empty(),
        "no second reload while one is in flight"
    );
    h.ready(gen1[0]);
    h.exit(old[0], ExitStatus::Code(0));
    assert_eq!(
        h.calls(),
        vec![
            term(old[0]),
            Call::Spawn {
                index: 0,
                generation: 2,
                pid: 103
            }
        ]
    );
    h.ready(103);
    h.exit(gen1[0], ExitStatus::Code(0));
    assert_eq!(h.calls(), vec![term(gen1[0])], "exactly one more reload");
    assert!(h.sup.reload().is_none());
}

#[test]
fn crash_restart_waits_the_rest_of_the_throttle() {
    let (mut h, pids) = Harness::running(1);
    h.at(300);
    h.exit(pids[0], ExitStatus::Signal(11));
    assert!(h.calls().is_empty(), "lived 300 ms < 1 s: waits");
    h.at(999);
    assert!(h.calls().is_empty());
    h.at(1000);
    assert_eq!(
        h.calls(),
        vec![Call::Spawn {
            index: 0,
            generation: 0,
            pid: 102
        }]
    );
}

#[test]
fn crash_after_the_throttle_restarts_at_once() {
    let (mut h, pids) = Harness::running(1);
    h.at(5000);
    h.exit(pids[0], ExitStatus::Code(1));
    assert_eq!(
        h.calls(),
        vec![Call::Spawn {
            index: 0,
            generation: 0,
            pid: 102
        }]
    );
}

#[test]
fn restart_uses_the_latest_reload_index() {
    let (mut h, old) = Harness::running(1);
    h.signal(Signal::Hangup);
    let new = h.spawned();
    h.ready(new[0]);
    h.exit(old[0], ExitStatus::Code(0));
    h.calls();
    h.at(10_000);
    h.exit(new[0], ExitStatus::Code(1));
    assert_eq!(
        h.calls(),
        vec![Call::Spawn {
            index: 0,
            generation: 1,
            pid: 103
        }]
    );
}

#[test]
fn on_crash_exit_stops_the_others_and_exits_with_the_workers_code() {
    let mut s = settings(2);
    s.on_crash = OnCrash::Exit;
    let mut h = Harness::new(s);
    let pids = h.spawned();
    h.ready(pids[0]);
    h.ready(pids[1]);
    h.exit(pids[0], ExitStatus::Code(7));
    assert_eq!(h.calls(), vec![term(pids[1])]);
    assert_eq!(h.sup.phase(), Phase::Stopping { code: 7 });
    h.exit(pids[1], ExitStatus::Code(0));
    assert_eq!(h.sup.phase(), Phase::Exited(7));
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_the_kill_timeout() {
    let (mut h, pids) = Harness::running(2);
    h.signal(Signal::Terminate);
    assert_eq!(h.calls(), vec![term(pids[0]), term(pids[1])]);
    h.exit(pids[0], ExitStatus::Code(0));
    h.at(4_999);
    assert!(h.calls().is_empty());
    h.at(5_000);
    assert_eq!(h.calls(), vec![kill(pids[1])]);
    assert_eq!(h.sup.phase(), Phase::Stopping { code: 0 });
    h.exit(pids[1], ExitStatus::Signal(9));
    assert_eq!(h.sup.phase(), Phase::Exited(0));
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let (mut h, pids) = Harness::running(1);
    h.signal(Signal::Interrupt);
    h.calls();
    h.signal(Signal::Terminate);
    assert_eq!(h.calls(), vec![kill(pids[0])]);
}

#[test]
fn stop_during_a_reload_stops_old_and_new_and_starts_nothing() {
    let (mut h, old) = Harness::running(1);
    h.signal(Signal::Hangup);
    let new = h.spawned();
    h.signal(Signal::Terminate);
    assert_eq!(h.calls(), vec![term(old[0]), term(new[0])]);
    h.signal(Signal::Hangup);
    h.exit(old[0], ExitStatus::Code(0));
    h.exit(new[0], ExitStatus::Code(0));
    assert_eq!(h.sup.phase(), Phase::Exited(0));
    h.at(100_000);
    assert!(h.calls().is_empty());
}

#[test]
fn sigusr2_is_forwarded_to_every_worker_process() {
    let (mut h, pids) = Harness::running(2);
    h.signal(Signal::User2);
    assert_eq!(
        h.calls(),
        vec![
            Call::Signal(Target::Process(pids[0]), Signal::User2),
            Call::Signal(Target::Process(pids[1]), Signal::User2),
        ]
    );
}

#[test]
fn a_spawn_failure_fails_the_reload() {
    let (mut h, old) = Harness::running(2);
    h.sup.os_mut().fail_spawn = true;
    h.signal(Signal::Hangup);
    assert!(h.sup.reload().is_none(), "nothing to wait for");
    assert_eq!(h.serving(), vec![(0, old[0], 0), (1, old[1], 0)]);
    assert!(h.calls().is_empty());
}

#[test]
fn a_failing_fork_is_retried_no_faster_than_the_throttle() {
    let (mut h, pids) = Harness::running(1);
    h.at(10_000);
    h.sup.os_mut().fail_spawn = true;
    h.exit(pids[0], ExitStatus::Code(1));
    h.at(10_999);
    h.sup.os_mut().fail_spawn = false;
    assert!(h.calls().is_empty());
    h.at(11_000);
    assert_eq!(h.spawned().len(), 1);
}

#[test]
fn crash_of_an_old_worker_during_a_reload_leaves_the_slot_to_its_candidate() {
    let (mut h, old) = Harness::running(1);
    h.at(5_000);
    h.signal(Signal::Hangup);
    let new = h.spawned();
    h.exit(old[0], ExitStatus::Code(1));
    h.at(20_000);
    assert!(
        h.calls().is_empty(),
        "no restart: the candidate covers the slot"
    );
    h.ready(new[0]);
    assert!(h.sup.reload().is_none());
    assert_eq!(h.serving(), vec![(0, new[0], 1)]);
}

#[test]
fn slot_left_empty_by_a_failed_reload_is_restarted() {
    let (mut h, old) = Harness::running(1);
    h.at(5_000);
    h.signal(Signal::Hangup);
    let new = h.spawned();
    h.exit(old[0], ExitStatus::Code(1));
    h.at(5_100);
    h.exit(new[0], ExitStatus::Code(1));
    // The slot's last start was at 5000 ms: the restart waits until 6000 ms.
    assert!(h.calls().is_empty());
    h.at(6_000);
    assert_eq!(
        h.calls(),
        vec![Call::Spawn {
            index: 0,
            generation: 1,
            pid: 103
        }]
    );
}

#[test]
fn initial_worker_not_ready_in_time_is_stopped_and_restarted() {
    let mut h = Harness::new(settings(1));
    let pid = h.spawned()[0];
    h.at(60_000);
    assert_eq!(h.calls(), vec![term(pid)]);
    h.exit(pid, ExitStatus::Code(0));
    assert_eq!(
        h.calls(),
        vec![Call::Spawn {
            index: 0,
            generation: 0,
            pid: 102
        }]
    );
}

#[test]
fn processes_left_by_a_worker_are_killed_at_the_drain_deadline() {
    let (mut h, pids) = Harness::running(1);
    h.signal(Signal::Terminate);
    h.calls();
    h.sup.os_mut().groups.insert(pids[0]);
    h.exit(pids[0], ExitStatus::Code(0));
    assert_eq!(
        h.sup.phase(),
        Phase::Stopping { code: 0 },
        "waits for the group"
    );
    h.at(4_900);
    assert!(h.calls().is_empty());
    h.at(5_000);
    assert_eq!(h.calls(), vec![kill(pids[0])]);
    assert_eq!(h.sup.phase(), Phase::Exited(0));
}

#[test]
fn a_process_group_that_empties_early_ends_the_stop_early() {
    let (mut h, pids) = Harness::running(1);
    h.signal(Signal::Terminate);
    h.sup.os_mut().groups.insert(pids[0]);
    h.exit(pids[0], ExitStatus::Code(0));
    h.sup.os_mut().groups.clear();
    h.at(200);
    assert_eq!(h.sup.phase(), Phase::Exited(0));
}

#[test]
fn idle_master_has_no_deadline() {
    let (h, _) = Harness::running(4);
    assert_eq!(h.sup.next_deadline(), None, "nothing to wake up for");
}
