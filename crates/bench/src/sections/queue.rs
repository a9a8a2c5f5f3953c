//! The accept queue under load: connect time and failures against concurrency, during
//! reloads, for the same Node.js app under each manager.
//!
//! Managers, 2 workers each: master-process (its backlog kept: the app's `listen({fd: 3})`,
//! which asks for 511, is answered by adoption without running), master-process with
//! `--adopt off` (that `listen(511)` runs; the master asks for its own backlog again while a
//! worker starts), the reference module itself when `--reference` is given (Node's cluster,
//! backlog 511, the primary accepts every connection), else its stand-in
//! (`crates/bench/apps/node/cluster-server.js`, reloading as it did), and pm2 in cluster mode
//! (the same mechanism). For each
//! concurrency (64, 256, 1024, 4096 clients): loadgen, new connection per request, 2 s
//! deadline, and `--queue-reloads` reloads one per second meanwhile; every request counted,
//! and the connect time of every new connection (a SYN dropped by a full queue costs 1 s).

use std::time::{Duration, Instant};

use loadgen::Mode;

use crate::Ctx;
use crate::measure::ms;
use crate::plot::{Chart, Series};
use crate::report::{Json, Metric, Section, obj};
use crate::sections::peers::Kind;
use crate::sections::peers::install::{self, Tools};
use crate::sections::peers::server::{self, Server};
use crate::storm;

/// Once the reloads have settled, how much longer old workers may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(15);
/// Each request's deadline.
const DEADLINE: Duration = Duration::from_secs(2);
/// The managers, in the chart's order.
const KINDS: [Kind; 4] = [
    Kind::MasterNode,
    Kind::MasterNodeAdoptOff,
    Kind::ClusterRef,
    Kind::Pm2,
];

/// One concurrency on one manager.
#[derive(Debug)]
struct Point {
    clients: usize,
    load: loadgen::Report,
    reloads: usize,
    latencies_ms: Vec<f64>,
}

/// One manager's points.
#[derive(Debug)]
struct Row {
    kind: Kind,
    command: String,
    points: Vec<Point>,
    errors: Vec<String>,
    /// How it stopped, when that is worth a note.
    stop_note: Option<String>,
}

/// The managers: the reference module itself when it is installed, else its stand-in.
fn kinds(tools: &Tools) -> [Kind; 4] {
    KINDS.map(|k| match k {
        Kind::ClusterRef if tools.reference().is_some() => Kind::Reference,
        k => k,
    })
}

/// 64, 256, 1024, 4096 ... up to `max`.
fn concurrencies(max: usize) -> Vec<usize> {
    (0..)
        .map(|e| 64usize << (2 * e))
        .take_while(|&c| c <= max)
        .collect()
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let started = Instant::now();
    let tools = install::tools(ctx);
    if tools.node.is_none() {
        return Err("node is not installed".to_owned());
    }
    let mut rows = Vec::new();
    for kind in kinds(&tools) {
        if kind == Kind::Pm2 && tools.pm2.is_err() {
            continue;
        }
        rows.push(manager(ctx, &tools, kind));
    }
    Ok(vec![section(ctx, &tools, &rows, started.elapsed())])
}

fn manager(ctx: &Ctx, tools: &Tools, kind: Kind) -> Row {
    let mut row = Row {
        kind,
        command: String::new(),
        points: Vec::new(),
        errors: Vec::new(),
        stop_note: None,
    };
    let mut server = match server::start(ctx, tools, kind) {
        Ok(s) => s,
        Err(e) => {
            row.errors.push(format!("could not start: {e}"));
            return row;
        }
    };
    row.command = server.command.clone();
    for clients in concurrencies(ctx.opts.queue_clients) {
        match point(ctx, &mut server, clients) {
            Ok(p) => row.points.push(p),
            Err(e) => row.errors.push(format!("{clients} clients: {e}")),
        }
        if let Err(e) = server.check_alive() {
            row.errors.push(e);
            break;
        }
    }
    match server.stop_judged() {
        Ok(note) => row.stop_note = note,
        Err(e) => row.errors.push(e),
    }
    row
}

fn point(ctx: &Ctx, server: &mut Server, clients: usize) -> Result<Point, String> {
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(server.addr));
    cfg.connections = clients;
    cfg.mode = Mode::Close;
    cfg.request_timeout = DEADLINE;
    let load = loadgen::start(cfg);
    if !load.wait_for_requests(clients as u64, Duration::from_secs(20)) {
        return Err(format!("the load did not get going: {}", load.stop()));
    }
    let from = server.log_len();
    let storm = storm::run(
        &mut server.storming(from),
        ctx.opts.queue_reloads,
        EXIT_GRACE,
    );
    let load = load.stop();
    let storm = storm?;
    eprintln!(
        "bench: queue {} {clients} clients: {} requests, {} failed, connect p99 {:.1} ms",
        server.kind.key(),
        load.total(),
        load.failed(),
        ms(load.connect_p99)
    );
    Ok(Point {
        clients,
        reloads: storm.requests.iter().filter(|r| r.accepted()).count(),
        latencies_ms: storm::latencies(&storm.requests),
        load,
    })
}

fn section(ctx: &Ctx, tools: &Tools, rows: &[Row], took: Duration) -> Section {
    let mut s = Section::new(
        "queue",
        "The accept queue under load: connect time against concurrency, during reloads",
    );
    s.intro.push(format!(
        "The test suite's Node.js app (`tests/fixtures/node/server.js`), 2 workers under each \
         manager. For each number of clients: loadgen, one thread per client, a new \
         connection per request (`Connection: close`), {} s deadline per request; once every \
         client has had an answer, {} reloads one per second ({}), then the load stops. \
         Connect time: from connect() to the established connection, every new connection; \
         a SYN dropped because the accept queue was full is retried by the kernel after 1 s. \
         {} Section run time: {:.0} s.",
        DEADLINE.as_secs(),
        ctx.opts.queue_reloads,
        kinds(tools)
            .map(|k| format!("{}: {}", k.key(), k.reload_how()))
            .join(", "),
        tools.reference_sentence(),
        took.as_secs_f64()
    ));
    s.notes.extend(tools.notes.iter().map(|n| format!("- {n}")));
    for row in rows {
        figures(&mut s, row);
    }
    let series = |f: fn(&Point) -> f64| -> Vec<Series> {
        rows.iter()
            .map(|r| Series {
                name: r.kind.key().replace('_', " "),
                points: r.points.iter().map(|p| (p.clients as f64, f(p))).collect(),
            })
            .collect()
    };
    s.plot(
        "queue-connect-p99.svg",
        Chart {
            title: "p99 connect time during reloads, against concurrency".into(),
            x_label: "concurrent clients (new connection per request)".into(),
            y_label: "p99 connect time, ms".into(),
            log2_x: true,
            series: series(|p| ms(p.load.connect_p99)),
        },
    );
    s.plot(
        "queue-failed.svg",
        Chart {
            title: "Failed requests during reloads, against concurrency".into(),
            x_label: "concurrent clients (new connection per request)".into(),
            y_label: "failed requests, % of all".into(),
            log2_x: true,
            series: series(|p| p.load.failed() as f64 * 100.0 / p.load.total().max(1) as f64),
        },
    );
    s
}

fn figures(s: &mut Section, row: &Row) {
    let key = row.kind.key();
    let label = row.kind.label();
    for e in &row.errors {
        s.errors.push(format!("{label}: {e}"));
    }
    if !row.command.is_empty() {
        s.notes.push(format!("- {label}: `{}`", row.command));
    }
    if let Some(note) = &row.stop_note {
        s.notes.push(format!("- {label}: **{note}**."));
    }
    for p in &row.points {
        let l = &p.load;
        let value = obj! {
            "clients": p.clients, "connect_p50_ms": ms(l.connect_p50), "connect_p99_ms": ms(l.connect_p99),
            "connect_max_ms": ms(l.connect_max), "latency_p99_ms": ms(l.latency_p99), "failed": l.failed(),
            "refused": l.refused, "reset": l.reset, "timeout": l.timeout, "closed_early": l.closed_early,
            "total": l.total(), "reloads": p.reloads,
            "reload_latency_ms": Json::arr(p.latencies_ms.iter().copied()),
            "loadgen": Json::Raw(l.to_json()),
        };
        let shown = format!(
            "connect p99 {:.1} ms (p50 {:.2}); failed {} of {} (timeout {}, reset {}, refused {}, closed early {}); {} reloads",
            ms(l.connect_p99),
            ms(l.connect_p50),
            l.failed(),
            l.total(),
            l.timeout,
            l.reset,
            l.refused,
            l.closed_early,
            p.reloads
        );
        let label = format!("{label}, {} clients", p.clients);
        s.push(Metric::info(
            format!("{key}.{}", p.clients),
            label,
            value,
            shown,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_steps() {
        assert_eq!(concurrencies(4096), [64, 256, 1024, 4096]);
        assert_eq!(concurrencies(300), [64, 256]);
    }
}
