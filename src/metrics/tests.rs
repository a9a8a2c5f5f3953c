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

#[test]
fn an_answer_is_written_whole_to_a_client_that_half_closed_after_its_request() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.sock");
    let spec = crate::socket::ListenerSpec {
        name: None,
        addr: crate::socket::ListenAddr::Unix(path.clone()),
    };
    let mut server = Server::bind(&spec).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let now = std::time::Instant::now();
    server.accept(now);
    let id = server.client_fds().map(|(id, _, _)| id).next().unwrap();
    assert!(matches!(server.read(id), Some(Asked::Metrics { .. })));
    // Larger than the socket's buffers: written over several wakes, as the loop does it
    // (read, then write).
    let body = "x".repeat(4 << 20);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    });
    server.answer(id, "200 OK", &body, false);
    let deadline = now + Duration::from_secs(60);
    while server.client_fds().any(|(c, _, _)| c == id) {
        assert!(server.read(id).is_none(), "asked again");
        server.write(id);
        assert!(
            std::time::Instant::now() < deadline,
            "the answer was never written"
        );
        std::thread::yield_now();
    }
    let got = reader.join().unwrap();
    assert!(
        got.ends_with(body.as_bytes()),
        "{} bytes of {}",
        got.len(),
        body.len()
    );
}
