//! Throughput: the bare test-worker against the same test-worker under the master (one
//! worker), measured with `wrk`, in new-connection and keep-alive modes.
//!
//! Both servers run for the whole section (the idle one sleeps in poll and costs nothing),
//! and wrk runs alternate between them, the side that goes first alternating per pair
//! (bare, master, master, bare, ...) so a position effect cancels out. Medians per side
//! and mode, and their ratio master/bare. The master never proxies, so the ratio should be
//! about 1 (target >= 0.97 in new-connection mode).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::Ctx;
use crate::procs::{Bare, Master, Proc};
use crate::report::{Json, Metric, Section};
use crate::stats;

/// The ratio master/bare that new-connection mode must reach.
const RATIO_TARGET: f64 = 0.97;
const THREADS: u32 = 2;
const CONNECTIONS: u32 = 32;

/// One wrk run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkRun {
    /// `Requests/sec:`.
    pub rps: f64,
    /// `N requests in ...`.
    pub requests: u64,
    /// `Socket errors: connect, read, write, timeout` (all 0 when the line is absent).
    pub socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses:`.
    pub non2xx: u64,
}

impl WrkRun {
    fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non2xx
    }

    fn json(&self) -> Json {
        let [connect, read, write, timeout] = self.socket_errors;
        Json::obj([
            ("requests_per_sec", Json::Num(self.rps)),
            ("requests", Json::uint(self.requests)),
            ("socket_errors_connect", Json::uint(connect)),
            ("socket_errors_read", Json::uint(read)),
            ("socket_errors_write", Json::uint(write)),
            ("socket_errors_timeout", Json::uint(timeout)),
            ("non_2xx", Json::uint(self.non2xx)),
        ])
    }
}

/// Parses wrk's output.
pub fn parse_wrk(out: &str) -> Result<WrkRun, String> {
    let mut run = WrkRun::default();
    let mut found = false;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            run.rps = v
                .trim()
                .parse()
                .map_err(|_| format!("bad Requests/sec line {line:?}"))?;
            found = true;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // `Socket errors: connect 0, read 12, write 0, timeout 0`
            for part in v.split(',') {
                let mut words = part.split_whitespace();
                let (Some(name), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n = n.parse().unwrap_or(0);
                match name {
                    "connect" => run.socket_errors[0] = n,
                    "read" => run.socket_errors[1] = n,
                    "write" => run.socket_errors[2] = n,
                    "timeout" => run.socket_errors[3] = n,
                    _ => {}
                }
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non2xx = v.trim().parse().unwrap_or(0);
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            run.requests = n.trim().parse().unwrap_or(0);
        }
    }
    if !found {
        return Err(format!("no Requests/sec line in wrk's output:\n{out}"));
    }
    Ok(run)
}

/// Runs wrk once against `addr`.
pub fn wrk(ctx: &Ctx, addr: SocketAddr, close: bool, secs: u64) -> Result<WrkRun, String> {
    let mut cmd = Command::new(&ctx.bins.wrk);
    cmd.arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "2s"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/"));
    let mut proc = Proc::spawn("wrk", cmd, true, ctx.opts.verbose)?;
    let status = proc.wait_exit(Duration::from_secs(secs + 30))?;
    let out = proc.out().cloned().ok_or("wrk's stdout was not captured")?;
    out.wait_closed(Duration::from_secs(5));
    let text = out.lines().join("\n");
    if !status.success() {
        return Err(format!(
            "wrk failed ({status}):\n{text}{}",
            proc.log().tail(5)
        ));
    }
    parse_wrk(&text)
}

/// The two sides' runs in one mode.
struct ModeRuns {
    name: &'static str,
    close: bool,
    bare: Vec<WrkRun>,
    master: Vec<WrkRun>,
}

fn check_alive(bare: &mut Bare, master: &mut Master) -> Result<(), String> {
    if !bare.proc.running() {
        return Err(format!(
            "the bare test-worker exited:{}",
            bare.proc.log().tail(10)
        ));
    }
    if !master.proc.running() {
        return Err(format!("the master exited:{}", master.proc.log().tail(10)));
    }
    Ok(())
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let secs = ctx.opts.duration_s;
    let reps = ctx.opts.reps;
    let mut bare = Bare::start(&ctx.bins.worker, ctx.opts.verbose)?;
    let mut master = Master::start(&ctx.bins.master, &ctx.bins.worker, 1, ctx.opts.verbose)?;
    let worker_pid = master
        .workers_seen()
        .into_iter()
        .next()
        .ok_or("no worker started line in the master's log")?;
    eprintln!(
        "bench: throughput: bare test-worker on {} (pid {}), master on {} (pid {}, worker {worker_pid})",
        bare.addr,
        bare.proc.pid(),
        master.addr,
        master.pid()
    );
    // Warm-up, not counted: first connections, page faults, thread stacks.
    for (addr, close) in [
        (bare.addr, true),
        (master.addr, true),
        (bare.addr, false),
        (master.addr, false),
    ] {
        wrk(ctx, addr, close, 1)?;
    }
    let master_lines = master.proc.log().len();
    let mut modes = vec![
        ModeRuns {
            name: "new connection",
            close: true,
            bare: Vec::new(),
            master: Vec::new(),
        },
        ModeRuns {
            name: "keep-alive",
            close: false,
            bare: Vec::new(),
            master: Vec::new(),
        },
    ];
    for mode in &mut modes {
        for rep in 1..=reps {
            // Alternate which side goes first (bare, master, master, bare, ...), so that a
            // position effect or a drift does not favour one side.
            let (b, m) = if rep % 2 == 1 {
                let b = wrk(ctx, bare.addr, mode.close, secs)?;
                (b, wrk(ctx, master.addr, mode.close, secs)?)
            } else {
                let m = wrk(ctx, master.addr, mode.close, secs)?;
                (wrk(ctx, bare.addr, mode.close, secs)?, m)
            };
            check_alive(&mut bare, &mut master)?;
            eprintln!(
                "bench: throughput {} {rep}/{reps}: bare {:.0} req/s, master {:.0} req/s ({:.3})",
                mode.name,
                b.rps,
                m.rps,
                m.rps / b.rps
            );
            mode.bare.push(b);
            mode.master.push(m);
        }
    }
    // The master must not have done anything while it only held the socket.
    let unexpected: Vec<String> = master.proc.log().lines()[master_lines..]
        .iter()
        .filter(|l| !l.starts_with("test-worker["))
        .cloned()
        .collect();
    master.stop();
    bare.proc.stop(Duration::from_secs(5));
    Ok(vec![section(ctx, &modes, &unexpected)])
}

fn section(ctx: &Ctx, modes: &[ModeRuns], unexpected: &[String]) -> Section {
    let mut s = Section::new(
        "throughput",
        &format!(
            "Throughput: bare test-worker vs under the master (wrk -t{THREADS} -c{CONNECTIONS} -d{}s)",
            ctx.opts.duration_s
        ),
    );
    s.intro.push(format!(
        "Bare: test-worker binding 127.0.0.1:0 itself. Master: `master-process -l 127.0.0.1:0 -w 1 \
         --ready notify -- test-worker` (TW_READY=notify), the worker serving the inherited fd 3. \
         Both run all along; wrk runs alternate between them, the side that goes first \
         alternating too (bare, master, master, bare, bare, master...: {} repetitions of each \
         per mode, after a 1 s warm-up of each). Figures are medians of requests/s; the \
         ratio is median(master) / median(bare). New-connection mode sends `Connection: close`.",
        ctx.opts.reps
    ));
    let mut details = Vec::new();
    for mode in modes {
        let key = if mode.close { "close" } else { "keepalive" };
        let bare: Vec<f64> = mode.bare.iter().map(|r| r.rps).collect();
        let master: Vec<f64> = mode.master.iter().map(|r| r.rps).collect();
        let pair_ratios: Vec<f64> = master.iter().zip(&bare).map(|(m, b)| m / b).collect();
        let (mb, mm) = (stats::median(&bare), stats::median(&master));
        let ratio = mm / mb;
        s.push(Metric::info(
            &format!("{key}.bare_rps"),
            &format!("{}: bare, median req/s", mode.name),
            Json::Num(mb),
            format!("{mb:.0}"),
        ));
        s.push(Metric::info(
            &format!("{key}.master_rps"),
            &format!("{}: under the master, median req/s", mode.name),
            Json::Num(mm),
            format!("{mm:.0}"),
        ));
        let metric = Metric::info(
            &format!("{key}.ratio"),
            &format!("{}: ratio master / bare", mode.name),
            Json::Num(ratio),
            format!("{ratio:.3}"),
        );
        s.push(if mode.close {
            metric.target(format!(">= {RATIO_TARGET}"), ratio >= RATIO_TARGET)
        } else {
            metric.expect(format!("about 1, no target; >= {RATIO_TARGET} expected"))
        });
        let pair_median = stats::median(&pair_ratios);
        s.push(
            Metric::info(
                &format!("{key}.pair_ratio_median"),
                &format!("{}: median of the per-pair ratios", mode.name),
                Json::Num(pair_median),
                format!(
                    "{pair_median:.3} (range {:.3}..{:.3})",
                    stats::min(&pair_ratios),
                    stats::max(&pair_ratios)
                ),
            )
            .expect("robust to drift between pairs"),
        );
        let errors = |runs: &[WrkRun]| runs.iter().map(WrkRun::errors).sum::<u64>();
        let (eb, em) = (errors(&mode.bare), errors(&mode.master));
        s.push(Metric::info(
            &format!("{key}.wrk_errors"),
            &format!(
                "{}: wrk socket errors + non-2xx, all runs (bare / master)",
                mode.name
            ),
            Json::obj([("bare", Json::uint(eb)), ("master", Json::uint(em))]),
            format!("{eb} / {em}"),
        ));
        s.notes.push(format!(
            "- {}: bare req/s {}; master req/s {}; per-pair ratios {}; \
             spread (max-min)/median: bare {:.1}%, master {:.1}%.",
            mode.name,
            list(&bare, 0),
            list(&master, 0),
            list(&pair_ratios, 3),
            stats::spread(&bare) * 100.0,
            stats::spread(&master) * 100.0,
        ));
        for (side, values) in [("bare", &bare), ("master", &master)] {
            let median = stats::median(values);
            let odd: Vec<String> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| (**v / median - 1.0).abs() > 0.3)
                .map(|(i, v)| format!("run {} ({v:.0} req/s)", i + 1))
                .collect();
            if !odd.is_empty() {
                s.notes.push(format!(
                    "- {} {side}: {} more than 30% away from the median (other work, or how \
                     the client's and the server's threads landed on the CPUs); the medians \
                     discount it.",
                    mode.name,
                    odd.join(", ")
                ));
            }
        }
        for (side, runs) in [("bare", &mode.bare), ("master", &mode.master)] {
            let with_errors: Vec<String> = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.errors() > 0)
                .map(|(i, r)| {
                    let [c, rd, w, t] = r.socket_errors;
                    format!(
                        "run {}: connect {c}, read {rd}, write {w}, timeout {t}, non-2xx {}",
                        i + 1,
                        r.non2xx
                    )
                })
                .collect();
            if !with_errors.is_empty() {
                s.notes.push(format!(
                    "- {} {side}: wrk reported errors: {}. (wrk lumps error kinds together; \
                     the storm section's loadgen counts them exactly.)",
                    mode.name,
                    with_errors.join("; ")
                ));
            }
        }
        details.push((
            key.to_owned(),
            Json::obj([
                (
                    "bare",
                    Json::Arr(mode.bare.iter().map(WrkRun::json).collect()),
                ),
                (
                    "master",
                    Json::Arr(mode.master.iter().map(WrkRun::json).collect()),
                ),
                ("pair_ratios", Json::nums(&pair_ratios)),
            ]),
        ));
    }
    if !unexpected.is_empty() {
        s.notes.push(format!(
            "- The master logged {} line(s) during the runs (expected none): {}",
            unexpected.len(),
            unexpected
                .iter()
                .take(5)
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s.notes.push(format!(
        "- Noise: wrk ({THREADS} threads), the server and the kernel's loopback share {} CPU(s); \
         compare the ratio, not absolute req/s across runs.",
        ctx.machine.cpus
    ));
    details.push((
        "master_log_lines_during_runs".to_owned(),
        Json::Arr(unexpected.iter().map(Json::str).collect()),
    ));
    s.details = details;
    s
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.00ms   80.00%
    Req/Sec    12.34k     1.00k   14.00k    70.00%
  123456 requests in 5.00s, 12.34MB read
  Socket errors: connect 1, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 2
Requests/sec:  24691.20
Transfer/sec:      2.47MB";
        let run = parse_wrk(out).expect("parse");
        assert_eq!(
            run,
            WrkRun {
                rps: 24691.20,
                requests: 123456,
                socket_errors: [1, 12, 0, 3],
                non2xx: 2,
            }
        );
        assert_eq!(run.errors(), 18);
        assert!(parse_wrk("garbage").is_err());
    }
}
