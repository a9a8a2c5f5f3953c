//! What `--metrics` costs the master (issue 15): its memory and idle wakeups with the endpoint
//! on and off, and the CPU of one scrape.
//!
//! Two masters, one after the other, identical but for `--metrics 127.0.0.1:0`:
//! `master-process -l 127.0.0.1:0 -w 2 --no-monitor -- test-worker` (no monitor, whose timer
//! would wake the master every 2 s). Each goes through `RELOADS` reloads, one at a time (so
//! that every counter and histogram has values), then stays idle for `--idle-secs` (CPU ticks
//! and wakeups: both targets 0), then for `--scrape-secs` seconds gets one `GET /metrics` per
//! second (a new connection each, as Prometheus does at a 1 s interval) when the endpoint is
//! on, nothing when it is off; then its VmRSS and VmHWM (target <= 4 MiB, with the endpoint
//! on).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::lines::Reloads;
use crate::master::{Extra, Master, Ready};
use crate::measure::{Cpu, Spent, io, ms};
use crate::report::{Metric, Section, obj};
use crate::storm::sleep_until;
use crate::{Ctx, stats, sys};

/// Workers of each master.
const WORKERS: usize = 2;
/// Reloads before the measures.
const RELOADS: usize = 5;
/// How long one reload may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// One master's figures.
#[derive(Debug)]
struct Run {
    metrics: bool,
    command: String,
    idle: Spent,
    /// CPU and wakeups over the scrape period (no scrape when the endpoint is off).
    period: Spent,
    period_s: f64,
    /// Client-side time of each scrape, ms.
    scrape_ms: Vec<f64>,
    /// Bytes of the last answer's body.
    body_bytes: usize,
    scrape_errors: Vec<String>,
    /// Series (lines not starting with `#`) in the last answer.
    series: usize,
    rss_kb: u64,
    anon_kb: u64,
    hwm_kb: u64,
    fds: usize,
    exit: String,
}

/// The metrics address from the master's `metrics at http://ADDR/metrics` line.
fn metrics_addr(master: &Master) -> Result<SocketAddr, String> {
    let line = master
        .proc
        .log()
        .lines()
        .into_iter()
        .find(|l| l.contains("metrics at http://"))
        .ok_or("no `metrics at` line in the master's log")?;
    let rest = &line[line.find("http://").unwrap_or(0) + "http://".len()..];
    let addr = rest.split('/').next().unwrap_or("");
    addr.parse().map_err(|_| format!("no address in {line:?}"))
}

/// One `GET /metrics`; the body.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200 answer: {:?}", text.lines().next()));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if !body.contains("master_process_build_info") {
        return Err("no master_process_build_info in the answer".to_owned());
    }
    Ok(body.to_owned())
}

fn measure(ctx: &Ctx, metrics: bool) -> Result<Run, String> {
    let args: &[&str] = match metrics {
        true => &["--no-monitor", "--metrics", "127.0.0.1:0"],
        false => &["--no-monitor"],
    };
    let extra = Extra { args, env: &[] };
    let mut master = Master::start(ctx, WORKERS, Ready::Listening, &extra)?;
    let pid = master.pid();
    let addr = metrics.then(|| metrics_addr(&master)).transpose()?;
    for n in 1..=RELOADS {
        master.proc.signal(libc::SIGHUP)?;
        let log = master.proc.log();
        if !log.wait_until(RELOAD_TIMEOUT, |l| Reloads::count(l).done >= n) {
            return Err(format!("reload {n} did not end within {RELOAD_TIMEOUT:?}"));
        }
    }
    // The old workers' exits, then nothing to do.
    thread::sleep(Duration::from_secs(1));
    let idle0 = Cpu::read(pid)?;
    thread::sleep(Duration::from_secs(ctx.opts.idle_secs));
    let idle = Cpu::read(pid)?.since(&idle0);
    let secs = ctx.opts.scrape_secs;
    let (mut scrape_ms, mut scrape_errors, mut last) = (Vec::new(), Vec::new(), String::new());
    let p0 = Cpu::read(pid)?;
    let t0 = Instant::now();
    for i in 0..secs {
        sleep_until(t0 + Duration::from_secs(i));
        if let Some(addr) = addr {
            let t = Instant::now();
            match scrape(addr) {
                Ok(body) => {
                    scrape_ms.push(ms(t.elapsed()));
                    last = body;
                }
                Err(e) => scrape_errors.push(e),
            }
        }
    }
    sleep_until(t0 + Duration::from_secs(secs));
    let period = Cpu::read(pid)?.since(&p0);
    let period_s = t0.elapsed().as_secs_f64();
    let rss_kb = sys::status_kb(pid, "VmRSS").map_err(io("VmRSS"))?;
    let anon_kb = sys::status_kb(pid, "RssAnon").map_err(io("RssAnon"))?;
    let hwm_kb = sys::status_kb(pid, "VmHWM").map_err(io("VmHWM"))?;
    let fds = sys::fd_count(pid).map_err(io("fds"))?;
    let exit = crate::process::exit_text(master.stop());
    let series = last
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let command = format!(
        "master-process -l 127.0.0.1:0 -w {WORKERS} --no-monitor{} -- test-worker",
        if metrics {
            " --metrics 127.0.0.1:0"
        } else {
            ""
        }
    );
    eprintln!(
        "bench: metrics {}: VmRSS {rss_kb} kB (peak {hwm_kb}), idle wakeups {}, {} scrapes, CPU over the period {:.2} ms",
        if metrics { "on" } else { "off" },
        idle.switches.total(),
        scrape_ms.len(),
        period.cpu_ms()
    );
    Ok(Run {
        metrics,
        command,
        idle,
        period,
        period_s,
        scrape_ms,
        body_bytes: last.len(),
        scrape_errors,
        series,
        rss_kb,
        anon_kb,
        hwm_kb,
        fds,
        exit,
    })
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for metrics in [false, true] {
        match measure(ctx, metrics) {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(format!(
                "metrics {}: {e}",
                if metrics { "on" } else { "off" }
            )),
        }
    }
    let mut s = section(ctx, &runs);
    s.errors = errors;
    Ok(vec![s])
}

fn section(ctx: &Ctx, runs: &[Run]) -> Section {
    let mut s = Section::new("metrics", "What `--metrics` costs the master");
    s.intro.push(format!(
        "Two masters, one after the other, the same but for `--metrics 127.0.0.1:0`: \
         `master-process -l 127.0.0.1:0 -w {WORKERS} --no-monitor [--metrics 127.0.0.1:0] -- \
         test-worker` (no resource monitor, whose timer wakes the master every 2 s: see the \
         monitor section). Each goes through {RELOADS} reloads one at a time, rests 1 s, \
         stays idle {} s (CPU ticks and wakeups: voluntary + involuntary context switches), \
         then for {} s gets one `GET /metrics` per second on a new connection (endpoint on) \
         or nothing (off); then its VmRSS and VmHWM. CPU is the scheduler's \
         `se.sum_exec_runtime`.",
        ctx.opts.idle_secs, ctx.opts.scrape_secs
    ));
    for r in runs {
        let (key, name) = match r.metrics {
            true => ("on", "`--metrics` on"),
            false => ("off", "`--metrics` off"),
        };
        let scope = crate::report::Scope { key, name };
        let shown = format!("{} kB ({} kB of its own: RssAnon)", r.rss_kb, r.anon_kb);
        let rss = scope.metric("vm_rss_kb", "VmRSS", r.rss_kb, shown);
        s.push(rss.target(sys::RSS_BUDGET, r.rss_kb <= sys::RSS_BUDGET_KB));
        let hwm = scope.metric(
            "vm_hwm_kb",
            "VmHWM (peak)",
            r.hwm_kb,
            format!("{} kB", r.hwm_kb),
        );
        s.push(hwm.target(sys::RSS_BUDGET, r.hwm_kb <= sys::RSS_BUDGET_KB));
        let label = format!("wakeups while idle for {} s", ctx.opts.idle_secs);
        s.push(scope.zero("idle_wakeups", &label, r.idle.switches.total()));
        let label = format!("CPU ticks while idle for {} s", ctx.opts.idle_secs);
        s.push(scope.zero("idle_ticks", &label, r.idle.ticks));
        s.push(scope.count("fds", "open descriptors", r.fds as u64));
        if r.metrics {
            let n = r.scrape_ms.len();
            let cpu = r.period.cpu_ms();
            let per = cpu * 1000.0 / n.max(1) as f64;
            let share = cpu / (r.period_s * 10.0);
            let value = obj! {
                "scrapes": n, "cpu_ms": cpu, "per_scrape_us": per, "share_pct": share,
                "wakeups": r.period.switches.total(), "period_s": r.period_s,
                "client_ms_median": stats::median(&r.scrape_ms), "body_bytes": r.body_bytes,
                "series": r.series,
            };
            let shown = format!(
                "**{per:.0} µs per scrape** ({cpu:.2} ms for {n} scrapes in {:.1} s: {share:.4}% \
                 of a core; {} wakeups); answer {} bytes, {} series; client time median \
                 {:.2} ms",
                r.period_s,
                r.period.switches.total(),
                r.body_bytes,
                r.series,
                stats::median(&r.scrape_ms)
            );
            s.push(Metric::info(
                "on.scrape_cpu",
                "`--metrics` on: one scrape per second",
                value,
                shown,
            ));
            s.push(scope.zero(
                "scrape_errors",
                "failed scrapes",
                r.scrape_errors.len() as u64,
            ));
            if let Some(e) = r.scrape_errors.first() {
                s.notes.push(format!("- first failed scrape: {e}"));
            }
        } else {
            let value = obj! {"cpu_ms": r.period.cpu_ms(), "wakeups": r.period.switches.total()};
            let shown = format!(
                "{:.3} ms, {} wakeups over {:.1} s",
                r.period.cpu_ms(),
                r.period.switches.total(),
                r.period_s
            );
            let label = "CPU over the same period, no scrape";
            s.push(scope.metric("period_cpu", label, value, shown));
        }
        s.notes
            .push(format!("- {name}: `{}`; ended: {}.", r.command, r.exit));
    }
    if let [off, on] = runs {
        let d = on.rss_kb as i64 - off.rss_kb as i64;
        let value = obj! {"on_kb": on.rss_kb, "off_kb": off.rss_kb, "extra_kb": d};
        let shown = format!("{d:+} kB ({} kB on, {} kB off)", on.rss_kb, off.rss_kb);
        s.push(Metric::info(
            "rss_extra_kb",
            "VmRSS the endpoint adds",
            value,
            shown,
        ));
    }
    s
}
