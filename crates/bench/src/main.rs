//! `bench`: master-process's benchmarks, in one run.
//!
//! `cargo run --release -p bench [-- OPTIONS]` builds master-process and test-worker in
//! release mode, runs every section, prints a Markdown report on stdout and writes it to
//! `target/bench/report.md`, with a JSON twin in `target/bench/report.json`.
//!
//! Sections (see [`SECTIONS`]): `throughput` (bare app vs under the master, with wrk),
//! `storm` (failed requests, reload latency, master memory and CPU during a reload storm),
//! `detection` (how soon the master sees a new worker serve under `--ready listening`,
//! the default: from the worker's first wait on the socket to the master's `worker ready`
//! line, idle and under load; the master's CPU per reload and its wakeups when idle),
//! `monitor` (what the resource monitor costs the master: CPU per sample per worker, CPU % of
//! one core and wakeups per second at the default interval) and `peers` (the same Node.js
//! and Python WSGI apps (`tests/fixtures/node`, `crates/bench/apps/python`), bare, under pm2 / gunicorn and under
//! master-process: req/s ratios to bare, failed requests in a reload storm, reload latency,
//! manager RSS). `storm` and `detection` run their
//! masters with `--no-monitor`, so that their idle wakeups are the loop's alone; `throughput`
//! keeps the default (monitor on). A new benchmark is a module with a
//! `run(&Ctx) -> Result<Vec<Section>, String>` added there.
//!
//! It is a measurement, not a test: it exits 0 even when a target is missed (the report says
//! MISS), 1 if a section could not run, 2 for a usage error or a missing tool.

mod detection;
mod monitor;
mod noise;
mod peers;
mod proc;
mod procs;
mod report;
mod setup;
mod stats;
mod storm;
mod throughput;

use std::fs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use report::{Json, Report, Section};

/// A benchmark section: its name (for `--only`) and what runs it.
type Runner = fn(&Ctx) -> Result<Vec<Section>, String>;

/// Every section, in the order they run.
const SECTIONS: [(&str, Runner); 5] = [
    ("throughput", throughput::run),
    ("storm", storm::run),
    ("detection", detection::run),
    ("monitor", monitor::run),
    ("peers", peers::run),
];

const USAGE: &str = "\
usage: cargo run --release -p bench -- [OPTIONS]

  --reps N          wrk runs of each side per mode (default 5)
  --duration SECS   length of one wrk run, e.g. 5 or 5s (default 5)
  --storm-secs N    reloads in each reload storm, one per second (default 20; the
                    storm and peers sections)
  --idle-secs N     idle period for the master's idle CPU and wakeups (default 5)
  --detect-reloads N
                    reloads, one at a time, in each run of the detection section
                    (default 40)
  --monitor-secs N  measured period of each default-interval master of the monitor
                    section; its 100 ms-interval masters get half of it (default 20)
  --quick           smoke run: --reps 2 --duration 2 --storm-secs 5 --idle-secs 2
                    --detect-reloads 8 --monitor-secs 6 (explicit options win)
  --only LIST       comma-separated sections to run: throughput, storm, detection,
                    monitor, peers (peers installs pm2 and gunicorn under
                    target/bench/peers on first use: npm and PyPI)
  --no-build        use the binaries already in target/release
  -v, --verbose     copy every child's output to stderr
  -h, --help        this text";

/// The options.
#[derive(Debug, Clone)]
pub struct Opts {
    /// wrk repetitions per side and mode.
    pub reps: usize,
    /// Seconds per wrk run.
    pub duration_s: u64,
    /// SIGHUPs per storm.
    pub storm_secs: u64,
    /// Idle seconds for the idle CPU and wakeup figures.
    pub idle_secs: u64,
    /// Reloads per run of the detection section.
    pub detect_reloads: usize,
    /// Measured seconds of each default-interval master of the monitor section.
    pub monitor_secs: u64,
    /// `--quick` was given.
    pub quick: bool,
    /// Build the binaries first.
    pub build: bool,
    /// Echo children's output.
    pub verbose: bool,
    /// Sections to run (all if `None`).
    pub only: Option<Vec<String>>,
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let digits = value.strip_suffix('s').unwrap_or(&value);
    digits
        .parse()
        .map_err(|_| format!("invalid {flag} value {value:?}"))
}

impl Opts {
    /// Parses the command line (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Opts>, String> {
        let (mut reps, mut duration, mut storm, mut idle) = (None, None, None, None);
        let (mut detect, mut monitor) = (None, None);
        let mut opts = Opts {
            reps: 5,
            duration_s: 5,
            storm_secs: 20,
            idle_secs: 5,
            detect_reloads: 40,
            monitor_secs: 20,
            quick: false,
            build: true,
            verbose: false,
            only: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next());
            match flag.as_str() {
                "--reps" => reps = Some(number::<usize>(&flag, value())?),
                "--duration" => duration = Some(number::<u64>(&flag, value())?),
                "--storm-secs" => storm = Some(number::<u64>(&flag, value())?),
                "--idle-secs" => idle = Some(number::<u64>(&flag, value())?),
                "--detect-reloads" => detect = Some(number::<usize>(&flag, value())?),
                "--monitor-secs" => monitor = Some(number::<u64>(&flag, value())?),
                "--quick" => opts.quick = true,
                "--no-build" => opts.build = false,
                "-v" | "--verbose" => opts.verbose = true,
                "--only" => {
                    let list = value().ok_or("--only needs a value")?;
                    let names: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
                    for n in &names {
                        if !SECTIONS.iter().any(|(id, _)| id == n) {
                            return Err(format!("unknown section {n:?}"));
                        }
                    }
                    opts.only = Some(names);
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if opts.quick {
            (opts.reps, opts.duration_s, opts.storm_secs, opts.idle_secs) = (2, 2, 5, 2);
            opts.detect_reloads = 8;
            opts.monitor_secs = 6;
        }
        opts.reps = reps.unwrap_or(opts.reps);
        opts.duration_s = duration.unwrap_or(opts.duration_s);
        opts.storm_secs = storm.unwrap_or(opts.storm_secs);
        opts.idle_secs = idle.unwrap_or(opts.idle_secs);
        opts.detect_reloads = detect.unwrap_or(opts.detect_reloads);
        opts.monitor_secs = monitor.unwrap_or(opts.monitor_secs);
        if opts.reps == 0
            || opts.duration_s == 0
            || opts.storm_secs == 0
            || opts.detect_reloads == 0
        {
            return Err(
                "--reps, --duration, --storm-secs and --detect-reloads must be at least 1".into(),
            );
        }
        if opts.monitor_secs < 2 {
            return Err("--monitor-secs must be at least 2".into());
        }
        Ok(Some(opts))
    }

    fn wants(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|n| n == id))
    }
}

/// What every section gets.
#[derive(Debug)]
pub struct Ctx {
    /// The options.
    pub opts: Opts,
    /// The programs.
    pub bins: setup::Bins,
    /// The machine.
    pub machine: proc::Machine,
}

fn main() -> ExitCode {
    procs::install_cleanup();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(args.clone()) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(wrk) = setup::find_in_path("wrk") else {
        eprintln!("bench: wrk is not installed: apt-get install wrk");
        return ExitCode::from(2);
    };
    let bins = match setup::build(opts.build, wrk) {
        Ok(bins) => bins,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(1);
        }
    };
    let ctx = Ctx {
        opts,
        bins,
        machine: proc::machine(),
    };
    let command = if args.is_empty() {
        "cargo run --release -p bench".to_owned()
    } else {
        format!("cargo run --release -p bench -- {}", args.join(" "))
    };
    let date = setup::now_utc();

    // What the machine did before we started, and CPU accounting for the whole run.
    let background = background_busy(Duration::from_secs(1));
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: String = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let watch = noise::Watch::start();
    let started = Instant::now();

    let mut sections = Vec::new();
    for (id, run) in SECTIONS {
        if !ctx.opts.wants(id) {
            continue;
        }
        eprintln!("bench: section {id}");
        match run(&ctx) {
            Ok(mut s) => sections.append(&mut s),
            Err(e) => {
                eprintln!("bench: section {id} failed: {e}");
                sections.push(Section::failed(id, e));
            }
        }
    }

    let took = started.elapsed();
    let cpu = watch.finish();
    let leftovers = leftovers(&ctx.bins);
    let report = build_report(
        &ctx, &command, &date, took, background, &loadavg, &cpu, &leftovers, sections,
    );
    let markdown = report.markdown();
    print!("{markdown}");
    let written = fs::create_dir_all(&ctx.bins.out_dir)
        .and_then(|()| fs::write(ctx.bins.out_dir.join("report.md"), &markdown))
        .and_then(|()| fs::write(ctx.bins.out_dir.join("report.json"), report.json()));
    match written {
        Ok(()) => eprintln!(
            "bench: wrote {0}/report.md and {0}/report.json (took {1:.0} s)",
            ctx.bins.out_dir.display(),
            took.as_secs_f64()
        ),
        Err(e) => eprintln!("bench: cannot write the report: {e}"),
    }
    let (_, _, errors) = report.tally();
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The share of all CPUs busy during `window` (before anything of ours runs).
fn background_busy(window: Duration) -> f64 {
    let a = proc::system_cpu();
    std::thread::sleep(window);
    let b = proc::system_cpu();
    let total = b.total.saturating_sub(a.total).max(1);
    (b.busy + b.other).saturating_sub(a.busy + a.other) as f64 * 100.0 / total as f64
}

fn others_text(o: &noise::Others, cpus: usize) -> String {
    let mut s = format!(
        "other processes used {:.1} CPU-s ({:.0}% of all CPUs' time; sampled every 0.5 s, \
         bench's own processes and kernel threads left out); all processes {:.1} CPU-s, \
         interrupts/softirqs {:.1} CPU-s",
        o.cpu_s,
        o.share(cpus),
        o.system_s,
        o.irq_s
    );
    if !o.busiest.is_empty() {
        let list: Vec<String> = o
            .busiest
            .iter()
            .map(|(n, t)| format!("{n} {t:.1} s"))
            .collect();
        s.push_str(&format!("; busiest others: {}", list.join(", ")));
    }
    s
}

/// Processes running our master-process or test-worker binaries once everything is stopped,
/// or anything started from the peers' apps or tools (the apps in `crates/bench/apps` and
/// `tests/fixtures/node`, pm2's
/// daemon and gunicorn under `target/bench/peers`).
fn leftovers(bins: &setup::Bins) -> Vec<String> {
    let ours = [
        bins.master.to_string_lossy().into_owned(),
        bins.worker.to_string_lossy().into_owned(),
    ];
    let root = setup::workspace_root();
    let peer_paths = [
        root.join("crates/bench/apps")
            .to_string_lossy()
            .into_owned(),
        root.join("tests/fixtures/node")
            .to_string_lossy()
            .into_owned(),
        bins.out_dir.join("peers").to_string_lossy().into_owned(),
    ];
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && proc::alive(pid))
        .filter_map(|pid| {
            let cmdline = proc::cmdline(pid);
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let exe = exe.to_string_lossy();
            let peer = peer_paths.iter().any(|p| cmdline.contains(p.as_str()));
            (peer || ours.iter().any(|o| exe.trim_end_matches(" (deleted)") == o))
                .then(|| format!("{pid} {}", cmdline.trim()))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    ctx: &Ctx,
    command: &str,
    date: &str,
    took: Duration,
    background: f64,
    loadavg: &str,
    cpu: &noise::Others,
    leftovers: &[String],
    sections: Vec<Section>,
) -> Report {
    let m = &ctx.machine;
    let o = &ctx.opts;
    let versions = setup::versions(&ctx.bins);
    let mut header = vec![
        ("Date".to_owned(), date.to_owned()),
        ("Command".to_owned(), format!("`{command}`")),
        (
            "Machine".to_owned(),
            format!(
                "{} CPU(s), {}, {}, MemTotal {:.1} GiB; tcp_tw_reuse {}, local ports {}",
                m.cpus,
                m.model,
                m.kernel,
                m.mem_total_kb as f64 / 1024.0 / 1024.0,
                m.tcp_tw_reuse,
                m.port_range
            ),
        ),
        (
            "Versions".to_owned(),
            versions
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            "Settings".to_owned(),
            format!(
                "reps {}, wrk duration {} s, storm {} SIGHUPs, idle {} s, detection {} reloads, \
                 monitor {} s{}",
                o.reps,
                o.duration_s,
                o.storm_secs,
                o.idle_secs,
                o.detect_reloads,
                o.monitor_secs,
                if o.quick { " (--quick)" } else { "" }
            ),
        ),
        (
            "Before the run".to_owned(),
            format!("all CPUs {background:.1}% busy over 1 s; load average {loadavg}"),
        ),
        ("CPU during the run".to_owned(), others_text(cpu, m.cpus)),
        (
            "Run time".to_owned(),
            format!("{:.0} s", took.as_secs_f64()),
        ),
        (
            "Left running afterwards".to_owned(),
            if leftovers.is_empty() {
                "nothing".to_owned()
            } else {
                format!("**{}**", leftovers.join("; "))
            },
        ),
    ];
    let others_share = cpu.share(m.cpus);
    let busy = background >= 20.0 || others_share >= 5.0;
    if busy {
        let mut why = Vec::new();
        if background >= 20.0 {
            why.push(format!(
                "all CPUs {background:.0}% busy just before the run"
            ));
        }
        if others_share >= 5.0 {
            why.push(format!(
                "other processes used about {others_share:.0}% of the CPU time during it"
            ));
        }
        header.push((
            "Warning".to_owned(),
            format!(
                "**other work shared the machine** ({}): figures are noisier than on a quiet \
                 machine.",
                why.join("; ")
            ),
        ));
    }
    if m.cpus <= 2 {
        header.push((
            "Noise".to_owned(),
            format!(
                "{} CPU(s): the load generator, the servers and the kernel compete for them, so \
                 absolute figures vary from run to run (up to 30% seen on such machines); the \
                 ratios come from interleaved runs and are the figures to compare.",
                m.cpus
            ),
        ));
    }
    let header_json = vec![
        ("date".to_owned(), Json::str(date)),
        ("command".to_owned(), Json::str(command)),
        (
            "machine".to_owned(),
            Json::obj([
                ("cpus", Json::uint(m.cpus as u64)),
                ("model", Json::str(&m.model)),
                ("kernel", Json::str(&m.kernel)),
                ("mem_total_kb", Json::uint(m.mem_total_kb)),
                ("tcp_tw_reuse", Json::str(&m.tcp_tw_reuse)),
                ("ip_local_port_range", Json::str(&m.port_range)),
            ]),
        ),
        (
            "versions".to_owned(),
            Json::obj(versions.iter().map(|(k, v)| (k.clone(), Json::str(v)))),
        ),
        (
            "settings".to_owned(),
            Json::obj([
                ("reps", Json::uint(o.reps as u64)),
                ("duration_secs", Json::uint(o.duration_s)),
                ("storm_secs", Json::uint(o.storm_secs)),
                ("idle_secs", Json::uint(o.idle_secs)),
                ("detect_reloads", Json::uint(o.detect_reloads as u64)),
                ("monitor_secs", Json::uint(o.monitor_secs)),
                ("quick", Json::Bool(o.quick)),
            ]),
        ),
        (
            "environment".to_owned(),
            Json::obj([
                ("background_busy_percent", Json::Num(background)),
                ("loadavg", Json::str(loadavg)),
                ("cpu_s_all_processes", Json::Num(cpu.system_s)),
                ("cpu_s_irq", Json::Num(cpu.irq_s)),
                ("cpu_s_others", Json::Num(cpu.cpu_s)),
                ("others_percent", Json::Num(others_share)),
                ("busy_warning", Json::Bool(busy)),
                (
                    "busiest_others",
                    Json::Arr(
                        cpu.busiest
                            .iter()
                            .map(|(n, t)| {
                                Json::obj([("name", Json::str(n)), ("cpu_s", Json::Num(*t))])
                            })
                            .collect(),
                    ),
                ),
                (
                    "left_running",
                    Json::Arr(leftovers.iter().map(Json::str).collect()),
                ),
            ]),
        ),
        ("run_secs".to_owned(), Json::Num(took.as_secs_f64())),
    ];
    Report {
        title: "master-process benchmark".to_owned(),
        header,
        header_json,
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Opts>, String> {
        Opts::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options() {
        let o = parse(&[]).expect("ok").expect("opts");
        assert_eq!(
            (o.reps, o.duration_s, o.storm_secs, o.idle_secs),
            (5, 5, 20, 5)
        );
        let o = parse(&["--reps", "3", "--quick", "--duration=4s"])
            .expect("ok")
            .expect("opts");
        assert_eq!(
            (o.reps, o.duration_s, o.storm_secs, o.idle_secs),
            (3, 4, 5, 2)
        );
        assert_eq!(o.detect_reloads, 8);
        assert_eq!(o.monitor_secs, 6);
        assert_eq!(parse(&[]).expect("ok").expect("opts").detect_reloads, 40);
        assert_eq!(parse(&[]).expect("ok").expect("opts").monitor_secs, 20);
        let o = parse(&["--quick", "--monitor-secs", "10s", "--only", "monitor"])
            .expect("ok")
            .expect("opts");
        assert_eq!(o.monitor_secs, 10);
        assert!(o.wants("monitor") && !o.wants("detection"));
        assert!(parse(&["--monitor-secs", "1"]).is_err());
        let o = parse(&["--quick", "--detect-reloads", "12", "--only", "detection"])
            .expect("ok")
            .expect("opts");
        assert_eq!(o.detect_reloads, 12);
        assert!(o.wants("detection") && !o.wants("storm"));
        assert!(parse(&["--detect-reloads", "0"]).is_err());
        assert!(
            parse(&["--only", "storm"])
                .expect("ok")
                .expect("opts")
                .wants("storm")
        );
        assert!(
            !parse(&["--only", "storm"])
                .expect("ok")
                .expect("opts")
                .wants("throughput")
        );
        assert!(parse(&["--only", "nope"]).is_err());
        assert!(parse(&["--reps", "0"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["-h"]).expect("ok").is_none());
    }
}
