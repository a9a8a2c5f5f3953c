//! Prometheus metrics: `--metrics ADDR` serves `GET /metrics` in the text exposition format
//! 0.0.4 from the master itself.
//!
//! - [`Counters`] is what only the loop sees go by (reload failures by kind, reload and
//!   readiness durations, crashes, monitor replacements), fed from the supervisor's notices.
//! - [`fn@render`] writes the exposition from a [`Facts`] view of the master, read when a
//!   scrape comes: nothing is computed between scrapes.
//! - [`Server`] is the endpoint: non-blocking, driven by the loop's `poll`, at most
//!   [`server::MAX_CLIENTS`] connections, requests of at most [`server::MAX_REQUEST`] bytes,
//!   `GET /metrics` only (anything else is a 404 or 405).
//!
//! Names follow the Prometheus conventions: a `master_process_` prefix, `_total` counters,
//! `_seconds` and `_bytes` units, and the standard `process_*` metrics for the master itself.

mod render;
pub mod server;

use std::time::Duration;

pub use render::{Facts, render};
pub use server::{ClientId, Server};

use crate::monitor::Resource;
use crate::supervisor::{FailureKind, Notice, WorkerEventKind};
use crate::worker::Role;

/// Bucket bounds, in seconds, of the reload duration histogram.
pub const RELOAD_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Bucket bounds, in seconds, of the worker readiness histogram.
pub const READY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A histogram with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at most `bounds[i]` (not cumulative; cumulated when written).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    /// An empty histogram with these bucket bounds.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// What the loop counts as it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    /// Failed reloads, by kind.
    pub reload_failures: Vec<(FailureKind, u64)>,
    /// How long reloads took.
    pub reload_seconds: Histogram,
    /// How long new workers took to be ready.
    pub ready_seconds: Histogram,
    /// Serving workers that exited unexpectedly.
    pub crashes: u64,
    /// Workers replaced by the monitor, by resource.
    pub replacements: Vec<(Resource, u64)>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            reload_failures: FailureKind::ALL.iter().map(|&k| (k, 0)).collect(),
            reload_seconds: Histogram::new(&RELOAD_BUCKETS),
            ready_seconds: Histogram::new(&READY_BUCKETS),
            crashes: 0,
            replacements: vec![(Resource::Memory, 0), (Resource::Cpu, 0)],
        }
    }
}

impl Counters {
    /// Counts what `notice` says.
    pub fn on_notice(&mut self, notice: &Notice) {
        match notice {
            Notice::ReloadEnded(outcome) => {
                self.reload_seconds.observe(outcome.took);
                if let Some(f) = &outcome.failure {
                    bump(&mut self.reload_failures, f.kind);
                }
            }
            Notice::Worker(e) => match e.kind {
                WorkerEventKind::Ready(after) => self.ready_seconds.observe(after),
                WorkerEventKind::Exited {
                    expected: false, ..
                } if e.role == Role::Serving => self.crashes += 1,
                _ => {}
            },
            Notice::Running | Notice::ReloadStarted(_) | Notice::Stopping => {}
        }
    }

    /// The monitor replaced a worker over `resource`.
    pub fn replaced(&mut self, resource: Resource) {
        bump(&mut self.replacements, resource);
    }
}

fn bump<K: PartialEq>(counts: &mut [(K, u64)], key: K) {
    if let Some((_, n)) = counts.iter_mut().find(|(k, _)| *k == key) {
        *n += 1;
    }
}

#[cfg(test)]
mod tests;
