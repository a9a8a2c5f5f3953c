//! The report and its header: when, what, on which machine, how quiet it was, and what was left
//! running afterwards.

use std::fs;
use std::time::Duration;

use crate::noise::Others;
use crate::report::{Json, Report, Section, obj};
use crate::sections::peers::reference;
use crate::{Ctx, setup, sys};

/// What the header says about the run, besides the context.
#[derive(Debug)]
pub struct Run {
    /// The command line.
    pub command: String,
    /// When it started.
    pub date: String,
    /// How long it took.
    pub took: Duration,
    /// All CPUs' busy share just before it, in %.
    pub background: f64,
    /// The load average just before it.
    pub loadavg: String,
    /// Other processes' CPU during it.
    pub cpu: Others,
    /// Processes of ours still running afterwards.
    pub leftovers: Vec<String>,
}

/// The share of all CPUs busy during `window` (before anything of ours runs), and the load
/// average.
pub fn background_busy(window: Duration) -> (f64, String) {
    let a = sys::system_cpu();
    std::thread::sleep(window);
    let b = sys::system_cpu();
    let total = b.total.saturating_sub(a.total).max(1);
    let busy = (b.busy + b.other).saturating_sub(a.busy + a.other) as f64 * 100.0 / total as f64;
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    (
        busy,
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn others_text(o: &Others, cpus: usize) -> String {
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
/// `tests/fixtures/node`, pm2's daemon and gunicorn under `target/bench/peers`).
pub fn leftovers(bins: &setup::Bins) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let ours = [path(&bins.master), path(&bins.worker)];
    let root = setup::workspace_root();
    let peers = [
        path(&root.join("crates/bench/apps")),
        path(&root.join("tests/fixtures/node")),
        path(&bins.out_dir.join("peers")),
    ];
    let me = std::process::id() as i32;
    let left = |pid: i32| {
        let cmdline = sys::cmdline(pid);
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let exe = exe.to_string_lossy();
        let peer = peers.iter().any(|p| cmdline.contains(p.as_str()));
        (peer || ours.iter().any(|o| exe.trim_end_matches(" (deleted)") == o))
            .then(|| format!("{pid} {}", cmdline.trim()))
    };
    let alive = sys::pids()
        .into_iter()
        .filter(|&pid| pid != me && sys::alive(pid));
    alive.filter_map(left).collect()
}

/// Why the figures may be noisier than on a quiet machine, if they may.
fn busy(run: &Run, cpus: usize) -> Vec<String> {
    let (background, others) = (run.background, run.cpu.share(cpus));
    let mut why = Vec::new();
    if background >= 20.0 {
        why.push(format!(
            "all CPUs {background:.0}% busy just before the run"
        ));
    }
    if others >= 5.0 {
        why.push(format!(
            "other processes used about {others:.0}% of the CPU time during it"
        ));
    }
    why
}

/// The header's lines, for people.
fn lines(ctx: &Ctx, run: &Run, versions: &[(String, String)]) -> Vec<(&'static str, String)> {
    let (m, o) = (&ctx.machine, &ctx.opts);
    let versions: Vec<String> = versions.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let left = match run.leftovers.is_empty() {
        true => "nothing".to_owned(),
        false => format!("**{}**", run.leftovers.join("; ")),
    };
    let gib = m.mem_total_kb as f64 / 1024.0 / 1024.0;
    let quick = if o.quick { " (--quick)" } else { "" };
    let mut lines = vec![
        ("Date", run.date.clone()),
        ("Command", format!("`{}`", run.command)),
        (
            "Machine",
            format!(
                "{} CPU(s), {}, {}, MemTotal {gib:.1} GiB; tcp_tw_reuse {}, local ports {}",
                m.cpus, m.model, m.kernel, m.tcp_tw_reuse, m.port_range
            ),
        ),
        ("Versions", versions.join("; ")),
        ("Reference", reference_text(ctx)),
        (
            "Settings",
            format!(
                "reps {}, wrk duration {} s, storm {} SIGHUPs, idle {} s, detection {} reloads, \
                 monitor {} s, bind cycles {}, scrapes {}{quick}",
                o.reps,
                o.duration_s,
                o.storm_secs,
                o.idle_secs,
                o.detect_reloads,
                o.monitor_secs,
                o.bind_cycles,
                o.scrape_secs,
            ),
        ),
        (
            "Before the run",
            format!(
                "all CPUs {:.1}% busy over 1 s; load average {}",
                run.background, run.loadavg
            ),
        ),
        ("CPU during the run", others_text(&run.cpu, m.cpus)),
        ("Run time", format!("{:.0} s", run.took.as_secs_f64())),
        ("Left running afterwards", left),
    ];
    let why = busy(run, m.cpus);
    if !why.is_empty() {
        let why = why.join("; ");
        let warning = format!(
            "**other work shared the machine** ({why}): figures are noisier than on a quiet machine."
        );
        lines.push(("Warning", warning));
    }
    if m.cpus <= 2 {
        let noise = format!(
            "{} CPU(s): the load generator, the servers and the kernel compete for them, so \
             absolute figures vary from run to run (up to 30% seen on such machines); the \
             ratios come from interleaved runs and are the figures to compare.",
            m.cpus
        );
        lines.push(("Noise", noise));
    }
    lines
}

/// Which reference the sections that compare with it ran.
fn reference_text(ctx: &Ctx) -> String {
    match (&ctx.opts.reference, reference::installed()) {
        (None, _) => "not given (`--reference PATH`): where a section compares with the \
                      reference module, its stand-in `crates/bench/apps/node/cluster-server.js` \
                      ran"
        .to_owned(),
        (Some(path), Some(r)) => format!(
            "**the real module**, master-process {} for Node.js, `--reference {}` ({}), \
             installed under `target/bench/reference`",
            r.version,
            path.display(),
            r.source
        ),
        (Some(path), None) => format!(
            "`--reference {}` given, but not installed in this run (see the sections' notes, \
             or no section that uses it ran)",
            path.display()
        ),
    }
}

/// The same facts, structured.
fn json(ctx: &Ctx, run: &Run, versions: &[(String, String)]) -> Vec<(&'static str, Json)> {
    let (m, o, cpu) = (&ctx.machine, &ctx.opts, &run.cpu);
    let busiest = cpu
        .busiest
        .iter()
        .map(|(n, t)| obj! {"name": n, "cpu_s": *t});
    let machine = obj! {
        "cpus": m.cpus, "model": &m.model, "kernel": &m.kernel, "mem_total_kb": m.mem_total_kb,
        "tcp_tw_reuse": &m.tcp_tw_reuse, "ip_local_port_range": &m.port_range,
    };
    let settings = obj! {
        "reps": o.reps, "duration_secs": o.duration_s, "storm_secs": o.storm_secs,
        "idle_secs": o.idle_secs, "detect_reloads": o.detect_reloads,
        "monitor_secs": o.monitor_secs, "quick": o.quick,
    };
    let environment = obj! {
        "background_busy_percent": run.background,
        "loadavg": &run.loadavg,
        "cpu_s_all_processes": cpu.system_s,
        "cpu_s_irq": cpu.irq_s,
        "cpu_s_others": cpu.cpu_s,
        "others_percent": cpu.share(m.cpus),
        "busy_warning": !busy(run, m.cpus).is_empty(),
        "busiest_others": Json::arr(busiest),
        "left_running": Json::arr(&run.leftovers),
    };
    vec![
        ("date", Json::from(&run.date)),
        ("command", Json::from(&run.command)),
        ("machine", machine),
        (
            "versions",
            Json::obj(versions.iter().map(|(k, v)| (k.clone(), Json::from(v)))),
        ),
        ("settings", settings),
        ("reference", Json::from(reference_text(ctx))),
        ("environment", environment),
        ("run_secs", Json::from(run.took.as_secs_f64())),
    ]
}

/// The report: the header, Markdown and JSON, over the sections.
pub fn report(ctx: &Ctx, run: &Run, sections: Vec<Section>) -> Report {
    let versions = setup::versions(&ctx.bins);
    Report {
        title: "master-process benchmark".to_owned(),
        header: owned(lines(ctx, run, &versions)),
        header_json: owned(json(ctx, run, &versions)),
        sections,
    }
}

fn owned<T>(pairs: Vec<(&str, T)>) -> Vec<(String, T)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
