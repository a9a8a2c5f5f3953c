//! The report and its header: when, what, on which machine, how quiet it was, and what was left
//! running afterwards.

use std::fs;
use std::time::Duration;

use crate::noise::Others;
use crate::report::{Json, Report, Section, obj};
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

/// The report: the header, Markdown and JSON, over the sections.
pub fn report(ctx: &Ctx, run: &Run, sections: Vec<Section>) -> Report {
    let (m, o, cpu) = (&ctx.machine, &ctx.opts, &run.cpu);
    let versions = setup::versions(&ctx.bins);
    let background = run.background;
    let joined: Vec<String> = versions.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let left = match run.leftovers.is_empty() {
        true => "nothing".to_owned(),
        false => format!("**{}**", run.leftovers.join("; ")),
    };
    let mut header = vec![
        ("Date", run.date.clone()),
        ("Command", format!("`{}`", run.command)),
        (
            "Machine",
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
        ("Versions", joined.join("; ")),
        (
            "Settings",
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
            "Before the run",
            format!(
                "all CPUs {background:.1}% busy over 1 s; load average {}",
                run.loadavg
            ),
        ),
        ("CPU during the run", others_text(cpu, m.cpus)),
        ("Run time", format!("{:.0} s", run.took.as_secs_f64())),
        ("Left running afterwards", left),
    ];
    let others_share = cpu.share(m.cpus);
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
    if !why.is_empty() {
        let warning = format!(
            "**other work shared the machine** ({}): figures are noisier than on a quiet machine.",
            why.join("; ")
        );
        header.push(("Warning", warning));
    }
    if m.cpus <= 2 {
        let noise = format!(
            "{} CPU(s): the load generator, the servers and the kernel compete for them, so \
             absolute figures vary from run to run (up to 30% seen on such machines); the \
             ratios come from interleaved runs and are the figures to compare.",
            m.cpus
        );
        header.push(("Noise", noise));
    }
    let busiest = cpu
        .busiest
        .iter()
        .map(|(n, t)| obj! {"name": n, "cpu_s": *t});
    let json = vec![
        ("date", Json::from(&run.date)),
        ("command", Json::from(&run.command)),
        (
            "machine",
            obj! {
                "cpus": m.cpus, "model": &m.model, "kernel": &m.kernel,
                "mem_total_kb": m.mem_total_kb, "tcp_tw_reuse": &m.tcp_tw_reuse,
                "ip_local_port_range": &m.port_range,
            },
        ),
        (
            "versions",
            Json::obj(versions.iter().map(|(k, v)| (k.clone(), Json::from(v)))),
        ),
        (
            "settings",
            obj! {
                "reps": o.reps, "duration_secs": o.duration_s, "storm_secs": o.storm_secs,
                "idle_secs": o.idle_secs, "detect_reloads": o.detect_reloads,
                "monitor_secs": o.monitor_secs, "quick": o.quick,
            },
        ),
        (
            "environment",
            obj! {
                "background_busy_percent": background,
                "loadavg": &run.loadavg,
                "cpu_s_all_processes": cpu.system_s,
                "cpu_s_irq": cpu.irq_s,
                "cpu_s_others": cpu.cpu_s,
                "others_percent": others_share,
                "busy_warning": !why.is_empty(),
                "busiest_others": Json::arr(busiest),
                "left_running": Json::arr(&run.leftovers),
            },
        ),
        ("run_secs", Json::from(run.took.as_secs_f64())),
    ];
    Report {
        title: "master-process benchmark".to_owned(),
        header: owned(header),
        header_json: owned(json),
        sections,
    }
}

fn owned<T>(pairs: Vec<(&str, T)>) -> Vec<(String, T)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
