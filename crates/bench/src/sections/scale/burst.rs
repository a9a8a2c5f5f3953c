//! A burst of new connections during a reload whose new workers are slow to start.
//!
//! `master-process -w 2 --no-monitor` with workers that wait 1 s before they serve (every
//! generation), SIGHUP, then `--burst` connections opened at once (loadgen: one thread and
//! one request each, released together, 5 s deadline) while the new workers start: the old
//! workers still serve, from the same accept queue. Every connection must be answered; the
//! connect times show SYNs dropped by a full queue (about 1 s each).
//!
//! Three runs: test-worker (`TW_LISTEN_DELAY_MS`); the Node.js worker of the test suite
//! (`NODE_LISTEN_DELAY_MS`), whose `listen({fd: 3})` asks the kernel for a backlog of 511,
//! with adoption on (the default: that `listen()` is answered by the master without
//! running) and with `--adopt off` (it runs; the master asks for its own backlog again at its
//! next turn). Meanwhile the listening socket's queue length and backlog are read every
//! 200 µs (`TCP_INFO` on a duplicate of the master's socket, which reports both for a
//! socket in LISTEN).

use std::fs;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::slopes::Fit;
use crate::master::{self, Master, START_TIMEOUT};
use crate::measure::ms;
use crate::plot::{Chart, Series};
use crate::report::{Json, Metric, Section, obj};
use crate::sys::procfs;
use crate::{Ctx, setup};

/// How long the new workers take to start serving.
const DELAY: Duration = Duration::from_millis(1000);
/// Deadline of each request of the burst.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long the socket is still watched after `reload done`.
const AFTER: Duration = Duration::from_secs(1);
/// How often the listening socket's queue is read.
const SAMPLE_EVERY: Duration = Duration::from_micros(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    Fixture,
    Node,
    NodeAdoptOff,
}

impl Worker {
    fn name(self) -> &'static str {
        match self {
            Worker::Fixture => "test-worker",
            Worker::Node => "Node.js (listen({fd: 3}) asks 511; adoption on: not run)",
            Worker::NodeAdoptOff => "Node.js, --adopt off (its listen(511) runs)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Worker::Fixture => "test_worker",
            Worker::Node => "node",
            Worker::NodeAdoptOff => "node_adopt_off",
        }
    }
}

/// One sample of the listening socket: ms since the SIGHUP, queue length, backlog.
type SsSample = (f64, u64, u64);

/// A duplicate of the master's listening socket on `port` (found by inode in
/// /proc/net/tcp, then among the master's descriptors; `pidfd_getfd`).
fn listener_of(master: i32, port: u16) -> Result<OwnedFd, String> {
    let text = fs::read_to_string("/proc/net/tcp").map_err(|e| format!("/proc/net/tcp: {e}"))?;
    let ino = text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f.get(1)?.rsplit(':').next()?;
        (f.get(3) == Some(&"0A") && u16::from_str_radix(local, 16).ok() == Some(port))
            .then(|| f.get(9)?.parse::<u64>().ok())?
    });
    let ino = ino.ok_or_else(|| format!("no listening socket on port {port} in /proc/net/tcp"))?;
    let want = format!("socket:[{ino}]");
    let fds =
        fs::read_dir(format!("/proc/{master}/fd")).map_err(|e| format!("master's fds: {e}"))?;
    let fd = fds
        .flatten()
        .find(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .ok_or_else(|| format!("the master holds no {want}"))?;
    let pidfd =
        procfs::pidfd_open(master.unsigned_abs()).map_err(|e| format!("pidfd_open: {e}"))?;
    procfs::pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| format!("pidfd_getfd: {e}"))
}

/// A listening socket's (queue length, backlog): `TCP_INFO`'s `tcpi_unacked` and
/// `tcpi_sacked`, which Linux fills with them for a socket in LISTEN.
fn queue(fd: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: a zeroed tcp_info is valid; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writing; `fd` is an open socket.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (r == 0).then(|| (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}

/// Samples the listening socket until `stop`; a sample is kept when it differs from the
/// last one (and the last one is kept too).
fn sampler(fd: OwnedFd, t0: Instant, stop: Arc<AtomicBool>) -> JoinHandle<Vec<SsSample>> {
    thread::spawn(move || {
        let mut out: Vec<SsSample> = Vec::new();
        let mut last = None;
        while !stop.load(Ordering::Relaxed) {
            if let Some(q) = queue(&fd).filter(|q| last != Some(*q)) {
                out.push((ms(t0.elapsed()), q.0, q.1));
                last = Some(q);
            }
            thread::sleep(SAMPLE_EVERY);
        }
        if let Some((q, b)) = last {
            out.push((ms(t0.elapsed()), q, b));
        }
        out
    })
}

#[derive(Debug)]
struct Run {
    worker: Worker,
    report: loadgen::Report,
    /// From the SIGHUP to the burst's start and to its last answer, ms.
    fired_ms: f64,
    ended_ms: f64,
    took_ms: Option<f64>,
    ss: Vec<SsSample>,
    backlog: u64,
}

fn start(ctx: &Ctx, worker: Worker, node: &std::path::Path) -> Result<Master, String> {
    let mut cmd = master::command(&ctx.bins.master, 2);
    cmd.arg("--no-monitor");
    if worker == Worker::NodeAdoptOff {
        cmd.args(["--adopt", "off"]);
    }
    cmd.arg("--");
    let delay = DELAY.as_millis().to_string();
    if worker == Worker::Fixture {
        cmd.arg(&ctx.bins.worker).env("TW_LISTEN_DELAY_MS", &delay);
    } else {
        let dir = setup::workspace_root().join("tests/fixtures/node");
        cmd.arg(node).arg(dir.join("server.js")).current_dir(&dir);
        cmd.env("NODE_LISTEN_DELAY_MS", &delay);
    }
    let (proc, addr) = master::start(cmd, ctx.opts.verbose, START_TIMEOUT)?;
    Ok(Master { proc, addr })
}

fn burst(ctx: &Ctx, worker: Worker, node: &std::path::Path) -> Result<Run, String> {
    let mut master = start(ctx, worker, node)?;
    thread::sleep(Duration::from_millis(300));
    let backlog = master
        .proc
        .log()
        .lines()
        .iter()
        .find_map(|l| crate::lines::parsed(l, "backlog"))
        .unwrap_or(0);
    let (log, from) = (Arc::clone(master.proc.log()), master.proc.log().len());
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let listener = listener_of(master.pid(), master.addr.port())?;
    let sampler = sampler(listener, t0, Arc::clone(&stop));
    master.proc.signal(libc::SIGHUP)?;
    // The burst lands around the new workers' listen(): thread start-up takes a moment.
    let fire_at = match worker {
        Worker::Fixture => DELAY / 2,
        _ => DELAY.saturating_sub(Duration::from_millis(150)),
    };
    crate::storm::sleep_until(t0 + fire_at);
    let fired_ms = ms(t0.elapsed());
    let report = fire(master.addr, ctx.opts.burst)?;
    let ended_ms = ms(t0.elapsed());
    let done = log.wait_from(from, Duration::from_secs(60), |l| {
        l.contains("reload done") || l.contains("reload ended")
    });
    // A little longer: does the backlog stay as the last worker's listen() left it?
    thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    let ss = sampler.join().unwrap_or_default();
    master.stop();
    let took_ms = done.and_then(|(_, l)| crate::lines::parsed(&l, "took_ms"));
    eprintln!("bench: scale burst {}: {report}", worker.key());
    Ok(Run {
        worker,
        report,
        fired_ms,
        ended_ms,
        took_ms,
        ss,
        backlog,
    })
}

/// `n` connections at once, one request each.
fn fire(addr: SocketAddr, n: usize) -> Result<loadgen::Report, String> {
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(addr));
    cfg.connections = n;
    cfg.requests_per_connection = Some(1);
    cfg.start_together = true;
    cfg.request_timeout = DEADLINE;
    let load = loadgen::start(cfg);
    if !load.wait_for_requests(n as u64, DEADLINE * 4) {
        return Err(format!("the burst did not end: {}", load.stop()));
    }
    Ok(load.stop())
}

/// Runs the part.
pub fn run(ctx: &Ctx, _: &mut Vec<Fit>) -> Result<Vec<Section>, String> {
    let node = setup::find_in_path("node");
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for worker in [Worker::Fixture, Worker::Node, Worker::NodeAdoptOff] {
        let result = match (&node, worker) {
            (_, Worker::Fixture) => burst(ctx, worker, std::path::Path::new("")),
            (Some(node), _) => burst(ctx, worker, node),
            (None, _) => Err("node is not installed".to_owned()),
        };
        match result {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(format!("{}: {e}", worker.name())),
        }
    }
    let mut s = section(ctx, &runs);
    s.errors = errors;
    Ok(vec![s])
}

fn section(ctx: &Ctx, runs: &[Run]) -> Section {
    let n = ctx.opts.burst;
    let mut s = Section::new(
        "scale.burst",
        &format!("Scale: a burst of {n} new connections during a reload"),
    );
    s.intro.push(format!(
        "`master-process -w 2 --no-monitor` with workers that wait {} ms before they serve; \
         SIGHUP, then {n} connections opened at once (one request each, {} s deadline) while \
         the new workers start. The master's backlog is its `listening on ... backlog=` line. \
         The listening socket's queue length and backlog every {} µs during the reload \
         (`TCP_INFO` on a duplicate of the master's socket: `tcpi_unacked`, `tcpi_sacked`; \
         samples kept when they change), until {} s after `reload done`.",
        DELAY.as_millis(),
        DEADLINE.as_secs(),
        SAMPLE_EVERY.as_micros(),
        AFTER.as_secs()
    ));
    for r in runs {
        let key = r.worker.key();
        let l = &r.report;
        let lost = l.refused + l.reset + l.timeout + l.closed_early;
        let value = obj! {"refused": l.refused, "reset": l.reset, "timeout": l.timeout, "closed_early": l.closed_early, "ok": l.ok, "total": l.total()};
        let shown = format!(
            "{lost} (refused {}, reset {}, timed out {}, closed early {}; {} ok of {})",
            l.refused,
            l.reset,
            l.timeout,
            l.closed_early,
            l.ok,
            l.total()
        );
        s.push(
            Metric::info(
                format!("{key}.lost"),
                format!("{}: connections lost", r.worker.name()),
                value,
                shown,
            )
            .target("0", lost == 0 && l.total() == n as u64),
        );
        let min_backlog = r.ss.iter().map(|x| x.2).min().unwrap_or(0);
        let max_queue = r.ss.iter().map(|x| x.1).max().unwrap_or(0);
        let at_511: Vec<f64> =
            r.ss.iter()
                .filter(|x| x.2 < r.backlog)
                .map(|x| x.0)
                .collect();
        let below_ms: f64 =
            r.ss.windows(2)
                .filter(|w| w[0].2 < r.backlog)
                .map(|w| w[1].0 - w[0].0)
                .sum();
        let value = obj! {
            "connect_p50_ms": ms(l.connect_p50), "connect_p99_ms": ms(l.connect_p99), "connect_max_ms": ms(l.connect_max),
            "fired_ms": r.fired_ms, "ended_ms": r.ended_ms, "reload_took_ms": r.took_ms,
            "backlog": r.backlog, "min_backlog_seen": min_backlog, "max_queue_seen": max_queue,
            "changes": r.ss.len(), "below_backlog_ms": below_ms,
        };
        let shown = format!(
            "p99 {:.1} ms (p50 {:.1}, max {:.1}); burst at {:.0}-{:.0} ms after SIGHUP, reload took {}; backlog {} (lowest seen {min_backlog}; below it for {below_ms:.1} ms{}), longest queue seen {max_queue}",
            ms(l.connect_p99),
            ms(l.connect_p50),
            ms(l.connect_max),
            r.fired_ms,
            r.ended_ms,
            r.took_ms.map_or("?".to_owned(), |t| format!("{t:.0} ms")),
            r.backlog,
            match (at_511.first(), at_511.last()) {
                (Some(a), Some(b)) => format!(", at {a:.0}-{b:.0} ms"),
                _ => String::new(),
            },
        );
        s.push(Metric::info(
            format!("{key}.connect"),
            format!(
                "{}: connect time; the socket's backlog and queue",
                r.worker.name()
            ),
            value,
            shown,
        ));
        s.detail(
            format!("{key}.ss"),
            Json::arr(
                r.ss.iter()
                    .map(|&(t, q, b)| Json::arr([t, q as f64, b as f64])),
            ),
        );
        s.detail(format!("{key}.loadgen"), Json::Raw(l.to_json()));
    }
    let series = |f: fn(&SsSample) -> f64, what: &str| -> Vec<Series> {
        runs.iter()
            .map(|r| Series {
                name: format!("{} {what}", r.worker.key()),
                points: r.ss.iter().map(|x| (x.0, f(x))).collect(),
            })
            .collect()
    };
    let mut all = series(|x| x.1 as f64, "queue");
    all.extend(series(|x| x.2 as f64, "backlog"));
    s.plot(
        "scale-burst.svg",
        Chart {
            title: format!("Accept queue during a reload with a burst of {n}"),
            x_label: "ms since SIGHUP".into(),
            y_label: "connections queued; backlog".into(),
            log2_x: false,
            series: all,
        },
    );
    s
}
