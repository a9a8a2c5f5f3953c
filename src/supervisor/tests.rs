//! The state machine against a fake clock and a recording fake of the OS.

use std::collections::{HashSet, VecDeque};

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
    /// How many times the supervisor asked for a crash-loop hint.
    hints: std::cell::Cell<u32>,
}

impl Os for FakeOs {
    fn spawn(&mut self, index: usize, generation: u64) -> Result<Pid, SpawnError> {
        if self.fail_spawn {
            return Err(SpawnError::Exhausted(
                "Resource temporarily unavailable".into(),
            ));
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
    fn crash_hint(&self) -> Option<String> {
        self.hints.set(self.hints.get() + 1);
        Some("a hint".into())
    }
}

/// A supervisor, a fake clock, and helpers to drive both.
struct Harness {
    sup: Supervisor,
    os: FakeOs,
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
        let mut os = FakeOs::default();
        let mut sup = Supervisor::new(settings);
        sup.start(&mut os, t0);
        Harness {
            sup,
            os,
            t0,
            now: t0,
        }
    }

    /// Advances the clock to `ms` after start, ticking at every deadline on the way.
    fn at(&mut self, ms: u64) -> &mut Self {
        let target = self.t0 + Duration::from_millis(ms);
        while let Some(d) = self.sup.next_deadline().filter(|&d| d <= target) {
            self.now = d.max(self.now);
            self.sup.on_tick(&mut self.os, self.now);
        }
        self.now = target;
        self.sup.on_tick(&mut self.os, self.now);
        self
    }

    fn calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.os.calls)
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

    /// The notices since the last call, but those only metrics count.
    fn lifecycle_notices(&mut self) -> Vec<Notice> {
        self.sup
            .take_notices()
            .into_iter()
            .filter(|n| !matches!(n, Notice::Worker(_)))
            .collect()
    }

    fn ready(&mut self, pid: Pid) {
        self.sup.on_ready(&mut self.os, pid, self.now);
    }

    fn exit(&mut self, pid: Pid, status: ExitStatus) {
        self.sup.on_exit(&mut self.os, pid, status, self.now);
    }

    fn signal(&mut self, s: Signal) {
        self.sup.on_signal(&mut self.os, s, self.now);
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
        Harness::running_with(settings(n))
    }

    /// Starts the workers of `settings` and makes them ready; returns their pids.
    fn running_with(settings: Settings) -> (Harness, Vec<Pid>) {
        let mut h = Harness::new(settings);
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
fn a_ready_message_counts_only_under_notify_readiness() {
    let mut s = settings(1);
    s.ready = ReadyMode::Listening(crate::readiness::Coverage::All);
    let mut h = Harness::new(s);
    let pid = h.spawned()[0];
    assert!(!h.sup.on_ready_message(&mut h.os, pid, h.now));
    assert_eq!(
        h.sup.phase(),
        Phase::Starting,
        "READY=1 before the probe saw it serve"
    );
    h.ready(pid);
    assert_eq!(h.sup.phase(), Phase::Running, "the probe decides");

    let mut s = settings(1);
    s.ready = ReadyMode::Delay(Duration::from_millis(500));
    let mut h = Harness::new(s);
    let pid = h.spawned()[0];
    assert!(!h.sup.on_ready_message(&mut h.os, pid, h.now));
    h.at(499);
    assert_eq!(
        h.sup.phase(),
        Phase::Starting,
        "READY=1 does not cut the delay short"
    );

    let mut h = Harness::new(settings(1));
    let pid = h.spawned()[0];
    assert!(h.sup.on_ready_message(&mut h.os, pid, h.now));
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
        .expect("failed")
        .reason;
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
            .reason
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
fn a_second_stop_notices_each_worker_killed_once() {
    let (mut h, pids) = Harness::running(2);
    h.signal(Signal::Interrupt);
    h.sup.take_notices();
    h.signal(Signal::Terminate);
    h.signal(Signal::Terminate);
    let killed: Vec<Pid> = (h.sup.take_notices().into_iter())
        .filter_map(|n| match n {
            Notice::Worker(e) if e.kind == WorkerEventKind::Killed => Some(e.pid),
            _ => None,
        })
        .collect();
    assert_eq!(
        killed, pids,
        "one worker_killed each, as the metrics count them"
    );
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
    h.os.fail_spawn = true;
    h.signal(Signal::Hangup);
    assert!(h.sup.reload().is_none(), "nothing to wait for");
    assert_eq!(h.serving(), vec![(0, old[0], 0), (1, old[1], 0)]);
    assert!(h.calls().is_empty());
}

#[test]
fn a_failing_fork_is_retried_no_faster_than_the_throttle() {
    let (mut h, pids) = Harness::running(1);
    h.at(10_000);
    h.os.fail_spawn = true;
    h.exit(pids[0], ExitStatus::Code(1));
    h.at(10_999);
    h.os.fail_spawn = false;
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
    h.os.groups.insert(pids[0]);
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
    h.os.groups.insert(pids[0]);
    h.exit(pids[0], ExitStatus::Code(0));
    h.os.groups.clear();
    h.at(200);
    assert_eq!(h.sup.phase(), Phase::Exited(0));
}

#[test]
fn idle_master_has_no_deadline() {
    let (h, _) = Harness::running(4);
    assert_eq!(h.sup.next_deadline(), None, "nothing to wake up for");
}

fn spawn(index: usize, generation: u64, pid: Pid) -> Call {
    Call::Spawn {
        index,
        generation,
        pid,
    }
}

fn rolling(workers: usize, max_surge: usize) -> Settings {
    let mut s = settings(workers);
    s.strategy = Strategy::Rolling { max_surge };
    s
}

impl Harness {
    /// Workers that are new or on their way out: what `--max-surge` bounds.
    fn in_flight(&self) -> usize {
        self.sup
            .workers()
            .iter()
            .filter(|w| matches!(w.role, Role::Candidate | Role::Retired))
            .count()
    }

    /// Slots with a ready serving worker.
    fn ready_slots(&self) -> usize {
        self.sup
            .workers()
            .iter()
            .filter(|w| w.role == Role::Serving && matches!(w.state, WorkerState::Ready { .. }))
            .count()
    }

    /// The time `ms` after start.
    fn t(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
}

/// Drives a rolling reload of `workers` slots to its end, one event at a time: the oldest
/// candidate becomes ready, then the old worker it replaced exits. Checks after every event
/// that each slot has a ready serving worker and that at most `max_surge` workers are new or
/// retiring (at least one: a surge of 0 would never make progress); returns the most seen at
/// once.
fn drive_rolling_reload(workers: usize, surge: usize) -> usize {
    let (mut h, old) = Harness::running_with(rolling(workers, surge));
    let max_surge = surge.max(1);
    h.signal(Signal::Hangup);
    let mut candidates: VecDeque<(usize, Pid)> = VecDeque::new();
    let take_spawns = |h: &mut Harness, candidates: &mut VecDeque<(usize, Pid)>| {
        let mut n = 0;
        for c in h.calls() {
            match c {
                Call::Spawn {
                    index,
                    generation,
                    pid,
                } => {
                    assert_eq!(generation, 1);
                    candidates.push_back((index, pid));
                    n += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        n
    };
    assert_eq!(take_spawns(&mut h, &mut candidates), max_surge.min(workers));
    let mut most = h.in_flight();
    let mut started = candidates.len();
    while let Some((index, pid)) = candidates.pop_front() {
        h.ready(pid);
        assert_eq!(
            h.calls(),
            vec![term(old[index])],
            "a ready candidate retires its slot's old worker, and starts nothing"
        );
        assert_eq!(h.ready_slots(), workers);
        assert!(h.in_flight() <= max_surge, "{:?}", h.sup.workers());
        most = most.max(h.in_flight());
        h.exit(old[index], ExitStatus::Code(0));
        // The old worker's exit frees one place: at most one more candidate.
        let spawned = take_spawns(&mut h, &mut candidates);
        assert!(spawned <= 1);
        started += spawned;
        assert_eq!(h.ready_slots(), workers);
        assert!(h.in_flight() <= max_surge, "{:?}", h.sup.workers());
        assert!(h.sup.workers().len() <= workers + max_surge);
        most = most.max(h.in_flight());
    }
    assert_eq!(started, workers, "every slot got a new worker");
    assert!(h.sup.reload().is_none(), "the reload ended");
    assert_eq!(h.sup.reload_counts(), ReloadCounts { done: 1, failed: 0 });
    assert!(h.serving().iter().all(|&(_, _, g)| g == 1));
    most
}

#[test]
fn rolling_reload_with_max_surge_1_starts_each_new_worker_after_the_previous_old_one_exited() {
    let (mut h, old) = Harness::running_with(rolling(4, 1));
    h.signal(Signal::Hangup);
    assert_eq!(h.calls(), vec![spawn(0, 1, 105)], "one at a time");
    h.ready(105);
    assert_eq!(h.calls(), vec![term(old[0])]);
    h.at(4_999);
    assert!(
        h.calls().is_empty(),
        "the next waits while the old one drains"
    );
    h.at(5_000);
    assert_eq!(
        h.calls(),
        vec![kill(old[0])],
        "and still once it is killed, until it is gone"
    );
    h.exit(old[0], ExitStatus::Signal(9));
    assert_eq!(h.calls(), vec![spawn(1, 1, 106)]);
    h.ready(106);
    assert_eq!(h.calls(), vec![term(old[1])]);
    h.exit(old[1], ExitStatus::Code(0));
    assert_eq!(h.calls(), vec![spawn(2, 1, 107)]);
    h.ready(107);
    assert_eq!(h.calls(), vec![term(old[2])]);
    h.exit(old[2], ExitStatus::Code(0));
    assert_eq!(h.calls(), vec![spawn(3, 1, 108)]);
    h.ready(108);
    assert_eq!(h.calls(), vec![term(old[3])]);
    assert!(
        h.sup.reload().is_some(),
        "not over until the last old one exits"
    );
    h.exit(old[3], ExitStatus::Code(0));
    assert!(h.sup.reload().is_none());
    assert!(h.calls().is_empty());
    assert_eq!(
        h.serving(),
        vec![(0, 105, 1), (1, 106, 1), (2, 107, 1), (3, 108, 1)]
    );
}

#[test]
fn rolling_reload_never_exceeds_max_surge_and_keeps_every_slot_served() {
    for surge in 1..=5 {
        let most = drive_rolling_reload(4, surge);
        assert_eq!(most, surge.min(4), "max surge {surge} is used to the full");
    }
}

#[test]
fn rolling_reload_with_max_surge_0_still_makes_progress_one_at_a_time() {
    assert_eq!(drive_rolling_reload(3, 0), 1);
}

#[test]
fn failure_midway_through_a_rolling_reload_stops_it_where_it_is() {
    let (mut h, old) = Harness::running_with(rolling(3, 1));
    h.signal(Signal::Hangup);
    assert_eq!(h.calls(), vec![spawn(0, 1, 104)]);
    h.ready(104);
    h.exit(old[0], ExitStatus::Code(0));
    assert_eq!(h.calls(), vec![term(old[0]), spawn(1, 1, 105)]);
    h.exit(105, ExitStatus::Code(3));
    assert!(h.sup.reload().is_none(), "nothing left in flight: it ended");
    let failure = h
        .sup
        .last_reload()
        .and_then(|r| r.failure.clone())
        .unwrap()
        .reason;
    assert!(failure.contains("worker 1 (pid 105)"), "{failure}");
    h.at(60_000);
    assert!(h.calls().is_empty(), "no further slot is touched");
    // The slot already replaced keeps its new worker; the others keep the old ones.
    assert_eq!(
        h.serving(),
        vec![(0, 104, 1), (1, old[1], 0), (2, old[2], 0)]
    );
    assert_eq!(h.sup.reload_counts(), ReloadCounts { done: 0, failed: 1 });
}

fn canary(workers: usize, strategy: Strategy, canary_ms: u64) -> Settings {
    let mut s = settings(workers);
    s.strategy = strategy;
    s.canary = Some(Duration::from_millis(canary_ms));
    s
}

#[test]
fn canary_starts_alone_and_its_old_worker_serves_until_the_canary_time_has_passed() {
    let (mut h, old) = Harness::running_with(canary(3, Strategy::Parallel, 2_000));
    h.at(1_000);
    h.signal(Signal::Hangup);
    assert_eq!(
        h.calls(),
        vec![spawn(0, 1, 104)],
        "the canary goes first, alone"
    );
    h.at(1_500);
    h.ready(104);
    assert!(
        h.calls().is_empty(),
        "a ready canary retires nothing and starts nothing yet"
    );
    assert!(matches!(
        h.sup.reload().unwrap().canary,
        Canary::Watching { pid: 104, .. }
    ));
    assert_eq!(h.sup.next_deadline(), Some(h.t(3_500)));
    h.at(3_499);
    assert!(h.calls().is_empty());
    assert_eq!(
        h.serving(),
        vec![(0, old[0], 0), (1, old[1], 0), (2, old[2], 0)]
    );
    h.at(3_500);
    // Passed: it takes its slot over, and the rest follow (all at once: parallel).
    assert_eq!(
        h.calls(),
        vec![term(old[0]), spawn(1, 1, 105), spawn(2, 1, 106)]
    );
    h.ready(105);
    h.ready(106);
    for pid in &old {
        h.exit(*pid, ExitStatus::Code(0));
    }
    assert!(h.sup.reload().is_none());
    assert_eq!(h.sup.reload_counts(), ReloadCounts { done: 1, failed: 0 });
    assert_eq!(h.serving(), vec![(0, 104, 1), (1, 105, 1), (2, 106, 1)]);
}

#[test]
fn canary_under_a_rolling_reload_passes_then_the_rest_follow_within_max_surge() {
    let (mut h, old) = Harness::running_with(canary(2, Strategy::Rolling { max_surge: 1 }, 500));
    h.signal(Signal::Hangup);
    assert_eq!(h.calls(), vec![spawn(0, 1, 103)]);
    h.ready(103);
    h.at(499);
    assert!(h.calls().is_empty());
    h.at(500);
    assert_eq!(h.calls(), vec![term(old[0])], "the old worker drains first");
    h.exit(old[0], ExitStatus::Code(0));
    assert_eq!(h.calls(), vec![spawn(1, 1, 104)]);
    h.ready(104);
    assert_eq!(
        h.calls(),
        vec![term(old[1])],
        "only the first new worker is a canary"
    );
}

#[test]
fn canary_that_crashes_during_its_canary_time_fails_the_reload_and_retires_nothing() {
    let (mut h, old) = Harness::running_with(canary(3, Strategy::Parallel, 2_000));
    assert_eq!(h.lifecycle_notices(), vec![Notice::Running]);
    h.signal(Signal::Hangup);
    assert_eq!(h.lifecycle_notices(), vec![Notice::ReloadStarted(1)]);
    assert_eq!(h.spawned(), vec![104]);
    h.ready(104);
    h.at(500);
    h.exit(104, ExitStatus::Code(1));
    assert!(
        h.calls().is_empty(),
        "no old worker stopped, no other started"
    );
    assert!(h.sup.reload().is_none(), "nothing left to wait for");
    let outcome = h.sup.last_reload().unwrap().clone();
    let failure = outcome.failure.clone().unwrap().reason;
    assert!(
        failure.contains("the canary, worker 0 (pid 104)")
            && failure.contains("during its canary time"),
        "{failure}"
    );
    assert_eq!(
        outcome
            .serving
            .iter()
            .map(|s| (s.index, s.pid, s.generation))
            .collect::<Vec<_>>(),
        vec![(0, old[0], 0), (1, old[1], 0), (2, old[2], 0)]
    );
    assert_eq!(h.lifecycle_notices(), vec![Notice::ReloadEnded(outcome)]);
    assert_eq!(h.sup.reload_counts(), ReloadCounts { done: 0, failed: 1 });
    h.at(60_000);
    assert!(h.calls().is_empty(), "and nothing later either");
}

#[test]
fn canary_that_crashes_before_it_is_ready_fails_the_reload_and_retires_nothing() {
    let (mut h, old) = Harness::running_with(canary(2, Strategy::Parallel, 2_000));
    h.signal(Signal::Hangup);
    assert_eq!(h.spawned(), vec![103]);
    h.exit(103, ExitStatus::Code(3));
    assert!(h.calls().is_empty());
    let failure = h.sup.last_reload().unwrap().failure.clone().unwrap().reason;
    assert!(
        failure.contains("exited with code 3 before it was ready"),
        "{failure}"
    );
    assert_eq!(h.serving(), vec![(0, old[0], 0), (1, old[1], 0)]);
}

/// Crashes the only worker at once, every time, and returns when each start happened (ms
/// after the first start) for `starts` starts. Checks that nothing starts a millisecond
/// before its time.
fn crash_loop_starts(s: Settings, starts: usize) -> Vec<u64> {
    let mut h = Harness::new(s);
    let mut pid = h.spawned()[0];
    let mut times = vec![0];
    while times.len() < starts {
        h.exit(pid, ExitStatus::Code(1));
        let crashes = h.sup.slots()[0].crashes;
        assert_eq!(crashes as usize, times.len(), "crashes in a row");
        let spawned = h.spawned();
        if let [p] = spawned[..] {
            pid = p;
            times.push((h.now - h.t0).as_millis() as u64);
            continue;
        }
        assert!(spawned.is_empty());
        let due = h.sup.slots()[0].restart_at.expect("a restart is scheduled");
        assert_eq!(h.sup.next_deadline(), Some(due));
        let due_ms = (due - h.t0).as_millis() as u64;
        h.at(due_ms - 1);
        assert!(h.calls().is_empty(), "restarted before {due_ms} ms");
        h.at(due_ms);
        pid = h.spawned()[0];
        times.push(due_ms);
    }
    times
}

fn backoff_settings(throttle_ms: u64, max_backoff_ms: u64) -> Settings {
    let mut s = settings(1);
    s.throttle = Duration::from_millis(throttle_ms);
    s.max_backoff = Duration::from_millis(max_backoff_ms);
    s
}

#[test]
fn crash_loop_restart_delay_doubles_from_the_throttle_up_to_max_backoff() {
    let times = crash_loop_starts(backoff_settings(100, 800), 8);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, vec![100, 200, 400, 800, 800, 800, 800]);
}

#[test]
fn crash_loop_backoff_starts_from_the_throttle_when_it_is_above_the_minimum() {
    let times = crash_loop_starts(backoff_settings(1_000, 30_000), 8);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
    );
}

#[test]
fn crash_loop_never_spins_even_with_a_zero_throttle() {
    let times = crash_loop_starts(backoff_settings(0, 1_000), 7);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // The first crash restarts at once (WORKER_THROTTLE=0); then from 100 ms doubled.
    assert_eq!(gaps, vec![0, 200, 400, 800, 1_000, 1_000]);
}

#[test]
fn crash_loop_is_flagged_from_the_third_crash_in_a_row() {
    let mut h = Harness::new(backoff_settings(100, 800));
    let mut pid = h.spawned()[0];
    for crashes in 1..=4u32 {
        h.exit(pid, ExitStatus::Code(1));
        assert_eq!(h.sup.slots()[0].crashes, crashes);
        assert_eq!(h.sup.slots()[0].crashes >= CRASH_LOOP, crashes >= 3);
        let due = h.sup.slots()[0].restart_at.unwrap();
        h.at((due - h.t0).as_millis() as u64);
        pid = h.spawned()[0];
        assert_eq!(h.sup.slots()[0].restarts, crashes);
    }
}

#[test]
fn the_crash_loop_hint_is_asked_for_once_when_every_slot_loops() {
    let mut s = backoff_settings(100, 800);
    s.workers = 3;
    let mut h = Harness::new(s);
    h.spawned();
    for _ in 0..5 {
        let pids: Vec<Pid> = h.sup.workers().iter().map(|w| w.pid).collect();
        assert_eq!(pids.len(), 3);
        for pid in pids {
            h.exit(pid, ExitStatus::Code(1));
        }
        let due = (h.sup.slots().iter()).filter_map(|s| s.restart_at).max();
        h.at((due.unwrap() - h.t0).as_millis() as u64);
        h.spawned();
    }
    assert!(h.sup.slots().iter().all(|s| s.crashes >= CRASH_LOOP));
    assert_eq!(h.os.hints.get(), 1, "one hint per crash loop, not per slot");
}

#[test]
fn worker_that_stays_up_max_backoff_resets_the_crash_count() {
    let mut h = Harness::new(backoff_settings(100, 800));
    let mut pid = h.spawned()[0];
    // Three crashes at once: starts at 0, 100, 300; the fourth start is due at 700.
    for _ in 0..3 {
        h.exit(pid, ExitStatus::Code(1));
        let due = h.sup.slots()[0].restart_at.unwrap();
        h.at((due - h.t0).as_millis() as u64);
        pid = h.spawned()[0];
    }
    assert_eq!((h.now - h.t0).as_millis(), 700);
    assert_eq!(h.sup.slots()[0].crashes, 3);
    // This one works: ready, and up for --max-backoff.
    h.ready(pid);
    h.at(1_499);
    assert_eq!(h.sup.slots()[0].crashes, 3, "not yet: up 799 ms");
    assert_eq!(h.sup.next_deadline(), Some(h.t(1_500)));
    h.at(1_500);
    assert_eq!(h.sup.slots()[0].crashes, 0, "stable again");
    assert_eq!(h.sup.next_deadline(), None, "nothing more to wake up for");
    // It crashes much later: the first crash of a new series, restarted at once (its
    // start was more than the throttle ago); the next one waits backoff(2) = 200 ms.
    h.at(5_000);
    h.exit(pid, ExitStatus::Code(1));
    assert_eq!(h.sup.slots()[0].crashes, 1);
    let again = h.spawned();
    assert_eq!(again.len(), 1, "restarted at once");
    h.exit(again[0], ExitStatus::Code(1));
    assert_eq!(h.sup.slots()[0].crashes, 2);
    assert_eq!(h.sup.slots()[0].restart_at, Some(h.t(5_200)));
}

#[test]
fn worker_that_crashes_before_max_backoff_keeps_the_count_growing() {
    let mut h = Harness::new(backoff_settings(100, 800));
    let mut pid = h.spawned()[0];
    for _ in 0..3 {
        h.exit(pid, ExitStatus::Code(1));
        let due = h.sup.slots()[0].restart_at.unwrap();
        h.at((due - h.t0).as_millis() as u64);
        pid = h.spawned()[0];
    }
    h.ready(pid);
    h.at(700 + 799);
    h.exit(pid, ExitStatus::Code(1));
    assert_eq!(
        h.sup.slots()[0].crashes,
        4,
        "up 799 ms: still the same series"
    );
    // backoff(4) = 800 ms from its start at 700: due at 1500, one ms from now.
    assert_eq!(h.sup.slots()[0].restart_at, Some(h.t(1_500)));
}

#[test]
fn worker_that_lived_max_backoff_before_crashing_starts_a_new_series() {
    // The reset also holds when no tick came between (the crash is the first event).
    let mut h = Harness::new(backoff_settings(100, 800));
    let mut pid = h.spawned()[0];
    for _ in 0..3 {
        h.exit(pid, ExitStatus::Code(1));
        let due = h.sup.slots()[0].restart_at.unwrap();
        h.now = due;
        h.sup.on_tick(&mut h.os, due);
        pid = h.spawned()[0];
    }
    let started = h.now;
    h.now = started + Duration::from_millis(800);
    h.exit(pid, ExitStatus::Code(1));
    assert_eq!(h.sup.slots()[0].crashes, 1);
    assert_eq!(h.spawned().len(), 1, "restarted at once");
}

#[test]
fn request_reload_returns_the_generation_that_will_carry_the_request() {
    let (mut h, _) = Harness::running(1);
    let now = h.now;
    assert_eq!(
        h.sup.request_reload(&mut h.os, now),
        Ok(1),
        "starts reload 1"
    );
    assert_eq!(h.sup.reload().unwrap().generation, 1);
    assert_eq!(h.spawned(), vec![102]);
    assert_eq!(
        h.sup.request_reload(&mut h.os, now),
        Ok(2),
        "queued: carried by reload 2"
    );
    assert_eq!(
        h.sup.request_reload(&mut h.os, now),
        Ok(2),
        "coalesced into reload 2"
    );
    assert!(h.calls().is_empty(), "reload 2 waits for reload 1");
    h.ready(102);
    h.exit(101, ExitStatus::Code(0));
    assert_eq!(h.sup.reload().unwrap().generation, 2);
    assert_eq!(h.calls(), vec![term(101), spawn(0, 2, 103)]);
    let notices = h.sup.take_notices();
    assert!(
        notices.contains(&Notice::ReloadEnded(ReloadOutcome {
            generation: 1,
            failure: None,
            took: Duration::ZERO,
            serving: vec![Serving {
                index: 0,
                pid: 102,
                generation: 1,
            }],
        })),
        "{notices:?}"
    );
    assert!(notices.contains(&Notice::ReloadStarted(2)), "{notices:?}");
    assert_eq!(
        h.sup.request_reload(&mut h.os, now),
        Ok(3),
        "during reload 2: reload 3"
    );
    h.signal(Signal::Terminate);
    assert_eq!(
        h.sup.request_reload(&mut h.os, now),
        Err("the master is stopping")
    );
}

#[test]
fn every_worker_event_is_noticed_in_order() {
    let (mut h, pids) = Harness::running(1);
    let kinds = |h: &mut Harness| -> Vec<WorkerEventKind> {
        h.sup
            .take_notices()
            .into_iter()
            .filter_map(|n| match n {
                Notice::Worker(e) => Some(e.kind),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        kinds(&mut h),
        vec![
            WorkerEventKind::Started,
            WorkerEventKind::Ready(Duration::ZERO)
        ]
    );
    h.exit(pids[0], ExitStatus::Code(1));
    assert_eq!(
        kinds(&mut h)[0],
        WorkerEventKind::Exited {
            status: ExitStatus::Code(1),
            expected: false
        },
        "a crash"
    );
    h.at(1_000);
    assert_eq!(kinds(&mut h), vec![WorkerEventKind::Started], "the restart");
    h.signal(Signal::Terminate);
    let stopping = kinds(&mut h);
    assert!(
        stopping.contains(&WorkerEventKind::Stopping),
        "{stopping:?}"
    );
    h.at(60_000);
    assert!(kinds(&mut h).contains(&WorkerEventKind::Killed));
}

#[test]
fn time_arithmetic_never_overflows() {
    let now = Instant::now();
    assert!(later(now, Duration::MAX) > now);
    assert_eq!(
        later(now, Duration::from_secs(1)),
        now + Duration::from_secs(1)
    );
}

/// A worker that was starting with `--ready delay:` when the master upgraded becomes ready
/// at its time in the new image.
#[test]
fn a_restored_starting_worker_keeps_its_delay_and_becomes_ready() {
    let mut s = settings(1);
    s.ready = ReadyMode::Delay(Duration::from_millis(500));
    let mut h = Harness::new(s.clone());
    let pid = h.spawned()[0];
    h.at(200);
    let snap = h.sup.snapshot(h.now).unwrap();
    assert!(matches!(
        snap.workers[0].state,
        StateSnapshot::Starting {
            ready_in: Some(d),
            ..
        } if d == Duration::from_millis(300)
    ));
    let t0 = h.now;
    let mut os = FakeOs::default();
    let mut restored = Supervisor::restore(&mut os, s, snap, t0);
    assert_eq!(restored.phase(), Phase::Starting);
    let due = restored.next_deadline().unwrap();
    assert_eq!(due, t0 + Duration::from_millis(300));
    restored.on_tick(&mut os, due);
    assert!(matches!(
        restored.workers()[0].state,
        WorkerState::Ready { .. }
    ));
    assert_eq!(restored.workers()[0].pid, pid);
    assert_eq!(restored.phase(), Phase::Running);
    assert!(os.calls.is_empty(), "nothing restarted: {:?}", os.calls);
}
