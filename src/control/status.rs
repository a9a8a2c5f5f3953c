//! The `status` answer: the master, its listeners, its reloads, and each worker.

use std::time::Instant;

use super::Record;
use crate::monitor::Monitor;
use crate::procfs;
use crate::socket::ListenerSet;
use crate::supervisor::{CRASH_LOOP, Canary, Notice, ReloadOutcome, Supervisor, WorkerEventKind};

/// What the master shows besides its supervisor and listeners.
pub struct Extras<'a> {
    /// The resource monitor, if it runs.
    pub monitor: Option<&'a Monitor>,
    /// Binds adopted per listener, if adoption is on.
    pub adopted: Option<&'a [u64]>,
    /// Where metrics are served, if they are.
    pub metrics: Option<&'a str>,
}

/// What the master says about itself, its listeners and its workers.
pub fn status_records(
    sup: &Supervisor,
    listeners: &ListenerSet,
    extras: &Extras<'_>,
    started: Instant,
    now: Instant,
) -> Vec<Record> {
    let (monitor, adopted) = (extras.monitor, extras.adopted);
    let settings = sup.settings();
    let reloads = sup.reload_counts();
    let mut master = Record::new("master")
        .with("pid", std::process::id())
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("uptime_ms", ms(now - started))
        .with("phase", sup.phase().name())
        .with("workers", settings.workers)
        .with("ready", settings.ready)
        .with("reload_strategy", settings.strategy)
        .with("generation", sup.generation())
        .with("reloads_done", reloads.done)
        .with("reloads_failed", reloads.failed)
        .with("adopt", if adopted.is_some() { "on" } else { "off" });
    if let Some(metrics) = extras.metrics {
        master = master.with("metrics", metrics);
    }
    if let Some(r) = sup.reload() {
        let stage = match r.canary {
            Canary::Starting(_) | Canary::Watching { .. } => "canary",
            Canary::Off if r.failure.is_some() => "failing",
            Canary::Off => "rolling",
        };
        master = master
            .with("reload_in_flight", r.generation)
            .with("reload_stage", stage)
            .with("reload_queued", sup.reload_queued());
    }
    match monitor {
        None => master = master.with("monitor", "off"),
        Some(m) => {
            let l = m.limits();
            master = master
                .with("monitor", if m.paused() { "paused" } else { "on" })
                .with("max_memory_mb", l.max_memory_mb)
                .with("max_cpu_pct", l.max_cpu_pct)
                .with("memory_failures", l.memory_failures)
                .with("cpu_failures", l.cpu_failures)
                .with("monitor_interval_ms", ms(l.interval))
                .with("monitor_grace_ms", ms(l.grace));
        }
    }
    let mut records = vec![master];
    for (i, l) in listeners.iter().enumerate() {
        let mut r = Record::new("listener");
        if let Some(name) = l.name() {
            r = r.with("name", name);
        }
        // How workers got it: their own bind, adopted, or inherited (LISTEN_FDS).
        let binds = adopted.and_then(|a| a.get(i).copied()).unwrap_or(0);
        r = r
            .with("addr", l.local())
            .with("origin", l.origin().name())
            .with("backlog", listeners.backlog())
            .with("alive", l.alive())
            .with(
                "workers_get_it",
                if binds > 0 { "adopted" } else { "inherited" },
            );
        if adopted.is_some() {
            r = r.with("adopted_binds", binds);
        }
        records.push(r);
    }
    for r in sup.recent_reloads() {
        records.push(outcome_record("recent_reload", r));
    }
    if let Some(last) = sup.last_reload() {
        records.push(outcome_record("last_reload", last));
    }
    let page_kb = procfs::page_size() / 1024;
    let tick = procfs::clock_ticks_per_second().max(1);
    let mut workers: Vec<_> = sup.workers().iter().collect();
    workers.sort_by_key(|w| (w.index, w.generation, w.pid));
    for w in workers {
        let uptime = now.saturating_duration_since(w.started);
        let usage = procfs::tree_usage(w.pid);
        let watch = monitor.and_then(|m| m.watch(w.pid));
        // The monitor's last figure (over its interval) if it has one; else the average
        // over the worker's life.
        let cpu_pct = watch.and_then(|w| w.cpu_pct).unwrap_or_else(|| {
            if uptime.is_zero() {
                0.0
            } else {
                usage.cpu_ticks as f64 / tick as f64 / uptime.as_secs_f64() * 100.0
            }
        });
        let mut r = Record::new("worker")
            .with("index", w.index)
            .with("pid", w.pid)
            .with("generation", w.generation)
            .with("role", w.role.name())
            .with("state", w.state.name())
            .with("uptime_ms", ms(uptime))
            .with("processes", usage.processes)
            .with("rss_kb", usage.rss_pages * page_kb)
            .with("cpu_pct", format!("{cpu_pct:.1}"));
        if let Some(watch) = watch {
            r = r
                .with("memory_over", watch.memory_over)
                .with("cpu_over", watch.cpu_over)
                .with("mem_high", watch.mem_high)
                .with("monitor_paused", watch.paused);
        }
        records.push(r);
    }
    for (index, slot) in sup.slots().iter().enumerate() {
        let mut r = Record::new("slot")
            .with("index", index)
            .with("restarts", slot.restarts)
            .with("crashes", slot.crashes)
            .with("crash_loop", slot.crashes >= CRASH_LOOP);
        if let Some(at) = slot.restart_at {
            r = r.with("restart_in_ms", ms(at.saturating_duration_since(now)));
        }
        records.push(r);
    }
    records
}

/// A notice as an `event` record: its `type`, when (`time`, RFC 3339, and `at_ms` on the
/// master's clock) and its fields.
pub fn event_record(notice: &Notice, at_ms: u64) -> Record {
    let head = |kind: &str| event(kind, at_ms);
    match notice {
        Notice::Running => head("master_running"),
        Notice::Stopping => head("master_stopping"),
        Notice::ReloadStarted(g) => head("reload_started").with("generation", g),
        Notice::ReloadEnded(outcome) => {
            let mut r = head("reload_ended");
            r.fields.extend(outcome_record("reload", outcome).fields);
            r
        }
        Notice::Worker(e) => {
            let mut r = head(e.kind.name())
                .with("pid", e.pid)
                .with("index", e.index)
                .with("generation", e.generation)
                .with("role", e.role.name());
            match e.kind {
                WorkerEventKind::Ready(after) => r = r.with("after_ms", ms(after)),
                WorkerEventKind::Exited { status, expected } => {
                    r = r
                        .with("status", status)
                        .with("code", status.code())
                        .with("expected", expected);
                }
                WorkerEventKind::Started | WorkerEventKind::Stopping | WorkerEventKind::Killed => {}
            }
            r
        }
    }
}

/// An `event` record of type `kind`, at `at_ms` on the master's clock (and now, in RFC 3339).
pub fn event(kind: &str, at_ms: u64) -> Record {
    Record::new("event")
        .with("type", kind)
        .with(
            "time",
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        )
        .with("at_ms", at_ms)
}

/// A reload's outcome as a record of kind `kind`: generation, outcome (`done` or
/// `failed`), how long it took, who serves (`slot:pid@generation,...`), and why it failed.
pub fn outcome_record(kind: &str, outcome: &ReloadOutcome) -> Record {
    let serving: Vec<String> = outcome
        .serving
        .iter()
        .map(|s| format!("{}:{}@{}", s.index, s.pid, s.generation))
        .collect();
    let mut r = Record::new(kind)
        .with("generation", outcome.generation)
        .with(
            "outcome",
            if outcome.failure.is_some() {
                "failed"
            } else {
                "done"
            },
        )
        .with("took_ms", ms(outcome.took))
        .with("serving", serving.join(","));
    if let Some(failure) = &outcome.failure {
        r = r
            .with("reason", &failure.reason)
            .with("failure_kind", failure.kind.name());
    }
    r
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}
