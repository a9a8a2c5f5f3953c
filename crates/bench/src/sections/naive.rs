//! The naive Node.js app in a keep-alive reload storm, under each manager (issue 12).
//!
//! The app is the reference module's README app with nothing added
//! (`crates/bench/apps/node/naive.js`): it binds PORT itself and has no SIGTERM handler, so a
//! worker asked to stop dies at once, cutting what its keep-alive connections carry, unless
//! its manager makes it drain. Managers, 2 workers each: the reference module itself
//! (`--reference`; its `init()` line first, `reference-app.js`) or, without it, its stand-in
//! (`cluster-server.js`); pm2 in cluster mode with its defaults; master-process with the
//! Node.js drain preload on (the default) and off (`--node-drain off`). Each under loadgen
//! (8 keep-alive connections, 2 s deadline, every request counted once) with one reload per
//! second for `--storm-secs` seconds, then until every reload asked for has ended.

use std::time::{Duration, Instant};

use loadgen::Mode;

use crate::Ctx;
use crate::measure::{load, ms};
use crate::report::{Json, Metric, Section, obj};
use crate::sections::peers::Kind;
use crate::sections::peers::install::{self, Tools};
use crate::sections::peers::server;
use crate::stats;
use crate::storm;

/// loadgen connections.
const CONNECTIONS: usize = 8;
/// Once the reloads have settled, how much longer old workers may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// One manager's storm.
#[derive(Debug)]
struct Row {
    kind: Kind,
    command: String,
    load: Option<loadgen::Report>,
    /// Reload requests the manager took.
    reloads: usize,
    latencies_ms: Vec<f64>,
    workers_after: usize,
    errors: Vec<String>,
    /// How it stopped, when that is worth a note.
    stop_note: Option<String>,
}

/// The managers, in the table's order.
fn kinds(tools: &Tools) -> Vec<Kind> {
    let reference = match tools.reference() {
        Some(_) => Kind::NaiveReference,
        None => Kind::NaiveClusterRef,
    };
    let pm2 = tools.pm2.is_ok().then_some(Kind::NaivePm2);
    [
        Some(reference),
        pm2,
        Some(Kind::NaiveMaster),
        Some(Kind::NaiveMasterNoDrain),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let started = Instant::now();
    let tools = install::tools(ctx);
    if tools.node.is_none() {
        return Err("node is not installed".to_owned());
    }
    let rows: Vec<Row> = kinds(&tools)
        .into_iter()
        .map(|kind| manager(ctx, &tools, kind))
        .collect();
    Ok(vec![section(ctx, &tools, &rows, started.elapsed())])
}

fn manager(ctx: &Ctx, tools: &Tools, kind: Kind) -> Row {
    let mut row = Row {
        kind,
        command: String::new(),
        load: None,
        reloads: 0,
        latencies_ms: Vec::new(),
        workers_after: 0,
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
    let secs = ctx.opts.storm_secs;
    eprintln!(
        "bench: naive {}: {} on {}, {secs} reloads ({})",
        kind.key(),
        row.command,
        server.addr,
        kind.reload_how()
    );
    let result = load(server.addr, CONNECTIONS, Mode::KeepAlive).and_then(|load| {
        let from = server.log_len();
        let storm = storm::run(&mut server.storming(from), secs, EXIT_GRACE);
        let report = load.stop();
        Ok((storm?, report))
    });
    match result {
        Ok((storm, report)) => {
            eprintln!(
                "bench: naive {}: {} requests, {} failed",
                kind.key(),
                report.total(),
                report.failed()
            );
            row.reloads = storm.requests.iter().filter(|r| r.accepted()).count();
            row.latencies_ms = storm::latencies(&storm.requests);
            row.load = Some(report);
        }
        Err(e) => row.errors.push(e),
    }
    if let Err(e) = server.check_alive() {
        row.errors.push(e);
    }
    row.workers_after = server.workers().len();
    match server.stop_judged() {
        Ok(note) => row.stop_note = note,
        Err(e) => row.errors.push(e),
    }
    row
}

fn section(ctx: &Ctx, tools: &Tools, rows: &[Row], took: Duration) -> Section {
    let mut s = Section::new(
        "naive",
        "The naive Node.js app (no SIGTERM handler) in a keep-alive reload storm",
    );
    s.intro.push(format!(
        "The reference module's README app with nothing added \
         (`crates/bench/apps/node/naive.js`: `http.createServer(...).listen(process.env.PORT)`, \
         no SIGTERM handler, so a worker asked to stop dies at once unless its manager makes \
         it drain), 2 workers under each manager. loadgen, {CONNECTIONS} keep-alive \
         connections, 2 s deadline per request, every request counted once by kind; {} \
         reloads, one per second ({}), then until every reload has ended. {} pm2 runs it in \
         cluster mode with its defaults (a new worker is up when it listens; the old one gets \
         SIGINT). master-process runs it unchanged (`PORT=P master-process -w 2 -- node \
         naive.js`: the app's own `listen(PORT)` is adopted), with the Node.js drain preload \
         (`--node-drain on`, the default: on SIGTERM the servers stop accepting, requests in \
         flight finish, later keep-alive requests are answered with `Connection: close`, idle \
         connections are closed after 500 ms) and without it (`--node-drain off`). Section \
         run time: {:.0} s.",
        ctx.opts.storm_secs,
        kinds(tools)
            .iter()
            .map(|k| format!("{}: {}", k.key(), k.reload_how()))
            .collect::<Vec<_>>()
            .join(", "),
        tools.reference_sentence(),
        took.as_secs_f64()
    ));
    s.notes.extend(tools.notes.iter().map(|n| format!("- {n}")));
    s.notes.push(String::new());
    s.notes.push(
        "| Manager | failed requests (of all) | by kind | failed per reload | reloads | reload latency median |"
            .to_owned(),
    );
    s.notes.push("|---|---:|---|---:|---:|---:|".to_owned());
    for row in rows {
        s.notes.push(table_row(row));
    }
    s.notes.push(String::new());
    for row in rows {
        figures(&mut s, row);
    }
    s
}

fn kinds_text(l: &loadgen::Report) -> String {
    let kinds: Vec<String> = [
        ("reset", l.reset),
        ("closed early", l.closed_early),
        ("refused", l.refused),
        ("timeout", l.timeout),
        ("non-2xx", l.bad_status),
        ("other", l.other),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    match kinds.is_empty() {
        true => "—".to_owned(),
        false => kinds.join(", "),
    }
}

fn table_row(row: &Row) -> String {
    let Some(l) = &row.load else {
        return format!(
            "| {} | did not run: {} | | | | |",
            row.kind.label(),
            row.errors.join("; ").replace('|', "\\|")
        );
    };
    format!(
        "| {} | **{}** of {} | {} | {:.1} | {} | {:.0} ms |",
        row.kind.label(),
        l.failed(),
        l.total(),
        kinds_text(l),
        l.failed() as f64 / row.reloads.max(1) as f64,
        row.reloads,
        stats::median(&row.latencies_ms)
    )
}

fn figures(s: &mut Section, row: &Row) {
    let (key, label) = (row.kind.key(), row.kind.label());
    for e in &row.errors {
        s.errors.push(format!("{label}: {e}"));
    }
    if !row.command.is_empty() {
        s.notes.push(format!("- {label}: `{}`", row.command));
    }
    if let Some(note) = &row.stop_note {
        s.notes.push(format!("- {label}: **{note}**."));
    }
    let Some(l) = &row.load else {
        return;
    };
    let value = obj! {
        "failed": l.failed(), "total": l.total(), "reset": l.reset,
        "closed_early": l.closed_early, "refused": l.refused, "timeout": l.timeout,
        "bad_status": l.bad_status, "other": l.other, "reloads": row.reloads,
        "failed_per_reload": l.failed() as f64 / row.reloads.max(1) as f64,
        "reload_latency_ms": Json::arr(row.latencies_ms.iter().copied()),
        "workers_after": row.workers_after,
        "latency_p99_ms": ms(l.latency_p99),
        "loadgen": Json::Raw(l.to_json()),
    };
    let shown = format!(
        "{} of {} ({}); {} reloads",
        l.failed(),
        l.total(),
        kinds_text(l),
        row.reloads
    );
    let metric = Metric::info(
        format!("{key}.failed"),
        format!("{label}: failed requests"),
        value,
        shown,
    );
    s.push(match row.kind {
        Kind::NaiveMaster => metric.target("0", l.failed() == 0),
        Kind::NaiveMasterNoDrain => metric.expect("some: the app dies at once on SIGTERM"),
        _ => metric.expect("no target: the manager kills the naive app's workers at once"),
    });
    if l.failed() > 0 {
        let first: Vec<String> = l.errors.iter().take(3).map(|e| format!("`{e}`")).collect();
        s.notes
            .push(format!("  - first failures: {}", first.join(", ")));
    }
}
