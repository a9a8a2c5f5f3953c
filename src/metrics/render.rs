//! The exposition: Prometheus text format 0.0.4.

use std::fmt::Write as _;
use std::time::Instant;

use super::{Counters, Histogram};
use crate::procfs;
use crate::socket::ListenerSet;
use crate::supervisor::{CRASH_LOOP, Slot, Supervisor};
use crate::worker::{Role, Worker};

/// What a scrape shows, read from the master when it comes.
pub struct Facts<'a> {
    /// The state machine.
    pub sup: &'a Supervisor,
    /// The listeners.
    pub listeners: &'a ListenerSet,
    /// Binds adopted per listener, if adoption is on.
    pub adopted: Option<&'a [u64]>,
    /// What the loop counted.
    pub counters: &'a Counters,
    /// Whether the monitor is paused, if it runs.
    pub monitor_paused: Option<bool>,
    /// When the master started (its uptime's origin).
    pub started: Instant,
    /// Now.
    pub now: Instant,
}

/// Writes the exposition.
pub fn render(f: &Facts<'_>) -> String {
    let mut out = Exposition::default();
    reloads(&mut out, f);
    workers(&mut out, f);
    monitor(&mut out, f);
    listeners(&mut out, f);
    out.process(f.started, f.now);
    out.text
}

/// The master, its reloads, and how long workers take to be ready.
fn reloads(out: &mut Exposition, f: &Facts<'_>) {
    let sup = f.sup;

    out.family(
        "master_process_build_info",
        "gauge",
        "The master's version.",
    );
    out.sample(
        "master_process_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    out.family(
        "master_process_phase",
        "gauge",
        "The master's phase: 1 for the current one.",
    );
    for phase in ["starting", "running", "stopping", "exited"] {
        let on = sup.phase().name() == phase;
        out.sample("master_process_phase", &[("phase", phase)], f64::from(on));
    }

    out.single(
        "master_process_generation",
        "gauge",
        "RELOAD_INDEX of the newest workers.",
        sup.generation() as f64,
    );

    out.single(
        "master_process_reloads_started_total",
        "counter",
        "Reloads started.",
        sup.generation() as f64,
    );

    let counts = sup.reload_counts();
    out.family(
        "master_process_reloads_total",
        "counter",
        "Reloads that ended, by outcome.",
    );
    out.sample(
        "master_process_reloads_total",
        &[("outcome", "done")],
        counts.done as f64,
    );
    out.sample(
        "master_process_reloads_total",
        &[("outcome", "failed")],
        counts.failed as f64,
    );

    out.family(
        "master_process_reload_failures_total",
        "counter",
        "Failed reloads, by reason (counted since this master image started).",
    );
    for (kind, n) in &f.counters.reload_failures {
        out.sample(
            "master_process_reload_failures_total",
            &[("reason", kind.name())],
            *n as f64,
        );
    }

    out.single(
        "master_process_reload_in_flight",
        "gauge",
        "1 while a reload runs.",
        f64::from(sup.reload().is_some()),
    );

    if let Some(last) = sup.last_reload() {
        out.single(
            "master_process_last_reload_duration_seconds",
            "gauge",
            "How long the last reload took.",
            last.took.as_secs_f64(),
        );
    }
    out.histogram(
        "master_process_reload_duration_seconds",
        "How long reloads took.",
        &f.counters.reload_seconds,
    );
    out.histogram(
        "master_process_worker_ready_duration_seconds",
        "From a worker's start to the master knowing it is ready (readiness detection).",
        &f.counters.ready_seconds,
    );
}

/// The workers: by role and state, per slot, and each one's resources.
fn workers(out: &mut Exposition, f: &Facts<'_>) {
    let sup = f.sup;
    out.single(
        "master_process_workers_desired",
        "gauge",
        "Slots (--workers).",
        sup.settings().workers as f64,
    );
    out.family(
        "master_process_workers",
        "gauge",
        "Worker processes, by role and state.",
    );
    for role in Role::ALL {
        for state in ["starting", "ready", "stopping", "killed"] {
            let n = sup
                .workers()
                .iter()
                .filter(|w| w.role == role && w.state.name() == state)
                .count();
            out.sample(
                "master_process_workers",
                &[("role", role.name()), ("state", state)],
                n as f64,
            );
        }
    }

    out.single(
        "master_process_worker_crashes_total",
        "counter",
        "Serving workers that exited unexpectedly (since this master image started).",
        f.counters.crashes as f64,
    );
    out.per_slot(
        "master_process_worker_restarts_total",
        "counter",
        "Restarts after a crash, by slot.",
        sup.slots(),
        |slot| f64::from(slot.restarts),
    );
    out.per_slot(
        "master_process_slot_crashes_in_a_row",
        "gauge",
        "Crashes in a row, by slot.",
        sup.slots(),
        |slot| f64::from(slot.crashes),
    );
    out.per_slot(
        "master_process_slot_crash_looping",
        "gauge",
        "1 while a slot crashes in a loop.",
        sup.slots(),
        |slot| f64::from(slot.crashes >= CRASH_LOOP),
    );

    let page = procfs::page_size() as f64;
    let tick = procfs::clock_ticks_per_second().max(1) as f64;
    let usage: Vec<_> = sup
        .workers()
        .iter()
        .map(|w| (w, procfs::tree_usage(w.pid)))
        .collect();
    out.per_worker(
        "master_process_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of a worker and its descendants.",
        &usage,
        |_, u| u.rss_pages as f64 * page,
    );
    out.per_worker(
        "master_process_worker_cpu_seconds_total",
        "counter",
        "CPU time of a worker and its descendants (those not reaped yet).",
        &usage,
        |_, u| u.cpu_ticks as f64 / tick,
    );
    out.per_worker(
        "master_process_worker_uptime_seconds",
        "gauge",
        "How long ago a worker started.",
        &usage,
        |w, _| f.now.saturating_duration_since(w.started).as_secs_f64(),
    );
}

/// The resource monitor.
fn monitor(out: &mut Exposition, f: &Facts<'_>) {
    out.family(
        "master_process_monitor_replacements_total",
        "counter",
        "Workers replaced by the resource monitor, by resource (since this master image started).",
    );
    for (resource, n) in &f.counters.replacements {
        out.sample(
            "master_process_monitor_replacements_total",
            &[("resource", resource.name())],
            *n as f64,
        );
    }
    if let Some(paused) = f.monitor_paused {
        out.single(
            "master_process_monitor_paused",
            "gauge",
            "1 while monitoring is paused.",
            f64::from(paused),
        );
    }
}

/// The listeners.
fn listeners(out: &mut Exposition, f: &Facts<'_>) {
    out.family(
        "master_process_listener_backlog",
        "gauge",
        "The accept queue of each listener.",
    );
    for l in f.listeners.iter() {
        out.sample(
            "master_process_listener_backlog",
            &[("listener", l.local())],
            f64::from(f.listeners.backlog()),
        );
    }
    if let Some(adopted) = f.adopted {
        out.family(
            "master_process_listener_adopted_binds_total",
            "counter",
            "An app's own binds of a listener, answered with the master's socket.",
        );
        for (i, l) in f.listeners.iter().enumerate() {
            out.sample(
                "master_process_listener_adopted_binds_total",
                &[("listener", l.local())],
                adopted.get(i).copied().unwrap_or(0) as f64,
            );
        }
    }
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A family of one sample with no label.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family of one sample per slot, labelled with its index.
    fn per_slot(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        slots: &[Slot],
        v: fn(&Slot) -> f64,
    ) {
        self.family(name, kind, help);
        for (i, slot) in slots.iter().enumerate() {
            self.sample(name, &[("index", &i.to_string())], v(slot));
        }
    }

    /// A family of one sample per worker ([`Exposition::worker_sample`]).
    fn per_worker<T>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        workers: &[(&Worker, T)],
        v: impl Fn(&Worker, &T) -> f64,
    ) {
        self.family(name, kind, help);
        for (w, t) in workers {
            self.worker_sample(name, w, v(w, t));
        }
    }

    /// A sample of worker `w`, labelled with its slot, pid, generation and role.
    fn worker_sample(&mut self, name: &str, w: &Worker, value: f64) {
        let (index, pid, generation) = (
            w.index.to_string(),
            w.pid.to_string(),
            w.generation.to_string(),
        );
        let labels = [
            ("index", index.as_str()),
            ("pid", pid.as_str()),
            ("generation", generation.as_str()),
            ("role", w.role.name()),
        ];
        self.sample(name, &labels, value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulated = 0;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulated += n;
            self.sample(
                &bucket,
                &[("le", number(*bound).as_str())],
                cumulated as f64,
            );
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }

    /// The standard `process_*` metrics, for the master itself.
    fn process(&mut self, started: Instant, now: Instant) {
        let me = std::process::id();
        let Ok(stat) = procfs::read_stat(me) else {
            return;
        };
        let tick = procfs::clock_ticks_per_second().max(1) as f64;
        self.single(
            "process_cpu_seconds_total",
            "counter",
            "The master's user and system CPU time.",
            (stat.utime + stat.stime) as f64 / tick,
        );
        self.single(
            "process_resident_memory_bytes",
            "gauge",
            "The master's resident memory.",
            (stat.rss_pages * procfs::page_size()) as f64,
        );
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.family(
                "process_open_fds",
                "gauge",
                "The master's open descriptors.",
            );
            // The listing itself holds one descriptor open.
            self.sample(
                "process_open_fds",
                &[],
                fds.count().saturating_sub(1) as f64,
            );
        }
        if let Some(max) = max_fds() {
            self.single(
                "process_max_fds",
                "gauge",
                "The master's descriptor limit.",
                max,
            );
        }
        // It never changes: /proc/stat is read once.
        static START: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
        let start = START.get_or_init(|| Some(boot_time()? + stat.starttime as f64 / tick));
        if let Some(start) = *start {
            self.single(
                "process_start_time_seconds",
                "gauge",
                "When the master started, in seconds since the Unix epoch.",
                start,
            );
        }
        self.single(
            "master_process_uptime_seconds",
            "gauge",
            "How long this master has run (since its last upgrade in place).",
            now.saturating_duration_since(started).as_secs_f64(),
        );
    }
}

/// The master's soft limit of open descriptors (`/proc/self/limits`).
fn max_fds() -> Option<f64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time, in seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf` as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
pub(super) fn render_number(v: f64) -> String {
    number(v)
}
