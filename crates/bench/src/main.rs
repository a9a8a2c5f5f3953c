//! `bench`: master-process's benchmarks, in one run.
//!
//! `cargo run --release -p bench [-- OPTIONS]` builds master-process and test-worker in
//! release mode, runs every section, prints a Markdown report on stdout and writes it to
//! `target/bench/report.md`, with a JSON twin in `target/bench/report.json`.
//!
//! Sections (see [`SECTIONS`], one module each under `sections/`): `throughput` (bare app vs
//! under the master, with wrk), `storm` (failed requests, reload latency, master memory and
//! CPU during a reload storm), `detection` (how soon the master sees a new worker serve under
//! `--ready listening`, the default: from the worker's first wait on the socket to the
//! master's `worker ready` line, idle and under load; the master's CPU per reload and its
//! wakeups when idle), `monitor` (what the resource monitor costs the master: CPU per sample
//! per worker, CPU % of one core and wakeups per second at the default interval), `metrics`
//! (the master's RSS and idle wakeups with `--metrics` on and off, the CPU of a scrape),
//! `adoption` (what one adopted bind and listen cost, the seccomp filter's toll per system
//! call, a syscall-heavy worker's throughput with the filter on and off), `peers` (the same
//! Node.js and Python WSGI apps, `tests/fixtures/node` and `crates/bench/apps`, bare, under
//! pm2 / gunicorn, under the reference module with `--reference`, and under master-process,
//! the Node.js app also unchanged, binding its port itself: req/s ratios to bare, failed
//! requests in a reload storm, reload latency, manager RSS), `naive` (the reference README's
//! app, no SIGTERM handler, in a keep-alive reload storm under the reference, pm2 and
//! master-process with its Node.js drain on and off), `scale` (costs against workers,
//! listeners, threads, reloads) and `queue` (connect time and failures against concurrency
//! during reloads). `storm` and `detection` run their masters with `--no-monitor`, so that
//! their idle wakeups are the loop's alone; `throughput` keeps the default (monitor on).
//!
//! `--reference PATH` (a checkout of the original Node.js module, or a git directory) installs
//! it under `target/bench/reference` for the sections that compare with it; without it they
//! run a stand-in that reloads as it did (`crates/bench/apps/node/cluster-server.js`) and say
//! so. None of the reference's code is in this repository.
//!
//! What the sections share: [`master`] starts the programs under test, [`process`] controls
//! every child (cleanup on every path), [`lines`] reads their logs, [`measure`] a process's CPU
//! and a loadgen load, [`storm`] a reload storm under any manager, [`wrk`] steady throughput,
//! [`report`] the figures, [`plot`] an SVG chart. A new benchmark is a module under
//! `sections/` with a `run(&Ctx) -> Result<Vec<Section>, String>`, added to [`SECTIONS`] (and
//! to `--only` in `opts.rs`' help); a figure that grows with the work gets a chart with
//! `Section::plot`, written next to `report.md` and shown in it.
//!
//! It is a measurement, not a test: it exits 0 even when a target is missed (the report says
//! MISS), 1 if a section could not run, 2 for a usage error or a missing tool.

mod header;
mod lines;
mod master;
mod measure;
mod noise;
mod opts;
mod plot;
mod process;
mod report;
mod sections;
mod setup;
mod stats;
mod storm;
mod sys;
mod wrk;

use std::fs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use opts::{Opts, USAGE};
use report::{Report, Section};
use sections::{
    adoption, detection, metrics, monitor, naive, peers, queue, scale, storms, throughput,
};

/// A benchmark section: its name (for `--only`) and what runs it.
type Runner = fn(&Ctx) -> Result<Vec<Section>, String>;

/// Every section, in the order they run.
const SECTIONS: [(&str, Runner); 10] = [
    ("throughput", throughput::run),
    ("storm", storms::run),
    ("detection", detection::run),
    ("monitor", monitor::run),
    ("metrics", metrics::run),
    ("adoption", adoption::run),
    ("peers", peers::run),
    ("naive", naive::run),
    ("scale", scale::run),
    ("queue", queue::run),
];

/// What every section gets.
#[derive(Debug)]
pub struct Ctx {
    /// The options.
    pub opts: Opts,
    /// The programs.
    pub bins: setup::Bins,
    /// The machine.
    pub machine: sys::Machine,
}

fn main() -> ExitCode {
    process::install_cleanup();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names = SECTIONS.map(|(id, _)| id);
    let opts = match Opts::parse(args.clone(), &names) {
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
        machine: sys::machine(),
    };
    let command = match args.is_empty() {
        true => "cargo run --release -p bench".to_owned(),
        false => format!("cargo run --release -p bench -- {}", args.join(" ")),
    };
    let date = setup::now_utc();
    // What the machine did before we started, and CPU accounting for the whole run.
    let (background, loadavg) = header::background_busy(Duration::from_secs(1));
    let watch = noise::Watch::start();
    let started = Instant::now();
    let sections = run_sections(&ctx);
    let took = started.elapsed();
    let cpu = watch.finish();
    let leftovers = header::leftovers(&ctx.bins);
    let run = header::Run {
        command,
        date,
        took,
        background,
        loadavg,
        cpu,
        leftovers,
    };
    let report = header::report(&ctx, &run, sections);
    write(&ctx, &report, took);
    match report.tally() {
        (_, _, 0) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Runs the sections asked for; one that fails becomes a section that says why.
fn run_sections(ctx: &Ctx) -> Vec<Section> {
    let mut sections = Vec::new();
    for (id, run) in SECTIONS.into_iter().filter(|(id, _)| ctx.opts.wants(id)) {
        eprintln!("bench: section {id}");
        match run(ctx) {
            Ok(mut s) => sections.append(&mut s),
            Err(e) => {
                eprintln!("bench: section {id} failed: {e}");
                sections.push(Section::failed(id, e));
            }
        }
    }
    sections
}

/// Prints the report and writes it, Markdown and JSON, to `target/bench`.
fn write(ctx: &Ctx, report: &Report, took: Duration) {
    let markdown = report.markdown();
    print!("{markdown}");
    let dir = &ctx.bins.out_dir;
    let mut plots = report.sections.iter().flat_map(|s| &s.plots);
    let written = fs::create_dir_all(dir)
        .and_then(|()| plots.try_for_each(|(file, chart)| fs::write(dir.join(file), chart.svg())))
        .and_then(|()| fs::write(dir.join("report.md"), &markdown))
        .and_then(|()| fs::write(dir.join("report.json"), report.json()));
    match written {
        Ok(()) => eprintln!(
            "bench: wrote {0}/report.md and {0}/report.json (took {1:.0} s)",
            dir.display(),
            took.as_secs_f64()
        ),
        Err(e) => eprintln!("bench: cannot write the report: {e}"),
    }
}
