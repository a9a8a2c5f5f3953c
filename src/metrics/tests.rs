use std::time::Duration;

use super::render::render_number;
use super::server::{Asked, parse};
use super::*;
use crate::supervisor::{Failure, ReloadOutcome};

#[test]
fn histograms_count_each_observation_in_its_bucket() {
    let mut h = Histogram::new(&RELOAD_BUCKETS);
    h.observe(Duration::from_millis(30));
    h.observe(Duration::from_millis(300));
    h.observe(Duration::from_secs(100));
    assert_eq!(h.count, 3);
    assert_eq!(h.counts[0], 1);
    assert_eq!(h.counts[3], 1);
    assert_eq!(h.counts.iter().sum::<u64>(), 2, "100 s is only in +Inf");
}

#[test]
fn notices_are_counted() {
    let mut c = Counters::default();
    let event = |kind| {
        Notice::Worker(crate::supervisor::WorkerEvent {
            pid: 10,
            index: 0,
            generation: 0,
            role: Role::Serving,
            kind,
        })
    };
    c.on_notice(&event(WorkerEventKind::Exited {
        status: crate::worker::ExitStatus::Code(1),
        expected: false,
    }));
    c.on_notice(&event(WorkerEventKind::Exited {
        status: crate::worker::ExitStatus::Code(0),
        expected: true,
    }));
    c.on_notice(&event(WorkerEventKind::Ready(Duration::from_millis(3))));
    c.on_notice(&Notice::ReloadEnded(ReloadOutcome {
        generation: 1,
        failure: Some(Failure {
            kind: FailureKind::NotReady,
            reason: "slow".into(),
        }),
        took: Duration::from_secs(1),
        serving: Vec::new(),
    }));
    c.replaced(Resource::Cpu);
    assert_eq!(c.crashes, 1);
    assert_eq!(c.ready_seconds.count, 1);
    assert_eq!(c.reload_seconds.count, 1);
    assert!(c.reload_failures.contains(&(FailureKind::NotReady, 1)));
    assert!(c.replacements.contains(&(Resource::Cpu, 1)));
}

#[test]
fn requests_are_parsed_strictly() {
    assert_eq!(
        parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        None,
        "incomplete"
    );
    assert_eq!(
        parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Some(Asked::Metrics { head_only: false })
    );
    assert_eq!(
        parse(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
        Some(Asked::Metrics { head_only: true })
    );
    assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Some(Asked::NotFound));
    assert_eq!(
        parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
        Some(Asked::NotAllowed)
    );
    assert_eq!(parse(b"garbage\r\n\r\n"), Some(Asked::Bad));
    assert_eq!(parse(b"GET /metrics SPDY/3\r\n\r\n"), Some(Asked::Bad));
    assert_eq!(parse(b"\xff\xfe\r\n\r\n"), Some(Asked::Bad));
}

#[test]
fn numbers_are_written_as_the_format_wants() {
    assert_eq!(render_number(3.0), "3");
    assert_eq!(render_number(0.25), "0.25");
    assert_eq!(render_number(f64::INFINITY), "+Inf");
    assert_eq!(render_number(f64::NAN), "NaN");
}
