//! Peers: the same apps under each manager, measured in the same run.
//!
//! Two apps, each answering its pid, each with a graceful shutdown (stop accepting,
//! `Connection: close` on later requests, idle connections closed after 500 ms, exit when
//! none is left):
//!
//! - Node.js (`tests/fixtures/node/server.js`, the test suite's Node worker): bare (`node
//!   server.js`, PORT), under pm2 in cluster mode (`crates/bench/apps/node/ecosystem.config.js`:
//!   2 instances, `wait_ready`, `listen_timeout`, `kill_timeout`; reload = `pm2 reload app`),
//!   under the reference module when `--reference` installed it ([`reference`];
//!   `crates/bench/apps/node/reference-app.js`, SIGHUP) and under master-process (`-w 2`,
//!   SIGHUP); and the unchanged app that binds PORT itself
//!   (`tests/fixtures/node/binds/server.js`, the same handler) under master-process, which
//!   adopts its bind.
//! - Python WSGI (`crates/bench/apps/python/app.py`) served by gunicorn's sync workers:
//!   `gunicorn -w 1` alone (the baseline), `gunicorn -w 2` (reload = SIGHUP to the arbiter)
//!   and master-process running `gunicorn -w 1` as each of its 2 workers (gunicorn takes the
//!   socket from LISTEN_FDS; checked from /proc).
//!
//! For each: steady requests/s with wrk (new connection and keep-alive), interleaved with
//! the baseline of the same app, medians and ratios; a storm of one reload per second under
//! loadgen (8 connections) in both modes, counting every failed request by kind; reload
//! latency (request to the exit of the last old worker, pidfd); the manager's VmRSS after the
//! storms. pm2 and gunicorn are installed under `target/bench/peers/` on first use
//! ([`install`]); a peer whose install fails is skipped with a note. [`server`] starts and
//! stops each run, [`pm2`] drives pm2's daemon, [`report`] writes the section.

pub(crate) mod install;
mod pm2;
pub(crate) mod reference;
mod report;
pub(crate) mod server;

use std::time::{Duration, Instant};

use loadgen::Mode;

use crate::lines::Reloads;
use crate::measure::{load, mode_name};
use crate::report::Section;
use crate::storm::{self, Storm};
use crate::wrk::{self, Steady};
use crate::{Ctx, sys};
use install::Tools;
use server::Server;

/// Workers under every manager.
const WORKERS: usize = 2;
/// loadgen connections during a storm.
const CONNECTIONS: usize = 8;
/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Once the reloads have settled, how much longer old workers may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(15);
/// Longest wait for the reloads still in flight after the last request.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The two wrk modes, in order: (loadgen mode, `Connection: close`).
const MODES: [(Mode, bool); 2] = [(Mode::Close, true), (Mode::KeepAlive, false)];

/// The two apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    Node,
    Python,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Node => "Node.js",
            App::Python => "Python WSGI",
        }
    }

    fn key(self) -> &'static str {
        match self {
            App::Node => "node",
            App::Python => "python",
        }
    }

    /// What a worker's command line contains.
    fn marker(self) -> &'static str {
        match self {
            App::Node => "server.js",
            App::Python => "gunicorn",
        }
    }
}

/// One way to run an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NodeBare,
    Pm2,
    MasterNode,
    /// master-process × the unchanged app that binds PORT itself
    /// (`tests/fixtures/node/binds/server.js`): its bind is adopted.
    MasterAdopted,
    /// The reference module itself (`--reference`) × the test suite's Node.js app.
    Reference,
    GunicornOne,
    GunicornTwo,
    MasterGunicorn,
    /// The `queue` section's: master-process × Node.js with `--adopt off` (Node's own
    /// `listen(511)` on the inherited socket runs).
    MasterNodeAdoptOff,
    /// A Node.js cluster primary that reloads as the reference module does
    /// (`crates/bench/apps/node/cluster-server.js`), when the reference itself is not given.
    ClusterRef,
    /// The `naive` section's: the naive app (`crates/bench/apps/node/naive.js`: no SIGTERM
    /// handler, binds PORT itself) under the reference module.
    NaiveReference,
    /// The naive app under the stand-in of the reference.
    NaiveClusterRef,
    /// The naive app under pm2 (cluster mode, 2 instances, pm2's defaults).
    NaivePm2,
    /// The naive app under master-process, `--node-drain on` (the default).
    NaiveMaster,
    /// The naive app under master-process with `--node-drain off`.
    NaiveMasterNoDrain,
}

impl Kind {
    fn app(self) -> App {
        match self {
            Kind::GunicornOne | Kind::GunicornTwo | Kind::MasterGunicorn => App::Python,
            _ => App::Node,
        }
    }

    /// What the command line of one of its workers contains.
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Kind::Reference | Kind::NaiveReference => "reference-app.js",
            Kind::ClusterRef | Kind::NaiveClusterRef => "cluster-server.js",
            Kind::NaivePm2 | Kind::NaiveMaster | Kind::NaiveMasterNoDrain => "naive.js",
            _ => self.app().marker(),
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Kind::NodeBare => "bare",
            Kind::Pm2 | Kind::NaivePm2 => "pm2",
            Kind::MasterNode | Kind::MasterGunicorn => "master_process",
            Kind::MasterAdopted => "master_process_adopted",
            Kind::MasterNodeAdoptOff => "master_process_adopt_off",
            Kind::Reference | Kind::NaiveReference => "reference",
            Kind::ClusterRef | Kind::NaiveClusterRef => "cluster_reference",
            Kind::GunicornOne => "gunicorn_w1",
            Kind::GunicornTwo => "gunicorn_w2",
            Kind::NaiveMaster => "master_process_drain_on",
            Kind::NaiveMasterNoDrain => "master_process_drain_off",
        }
    }

    /// The table's Manager column.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::NodeBare => "none (bare `node server.js`, baseline)",
            Kind::Pm2 => "pm2 cluster mode (2 instances)",
            Kind::MasterNode => "master-process (-w 2)",
            Kind::MasterAdopted => {
                "master-process (-w 2) × the unchanged app (binds PORT itself: adopted)"
            }
            Kind::Reference | Kind::NaiveReference => {
                "the reference module (Node.js master-process, WORKERS=2)"
            }
            Kind::GunicornOne => "gunicorn -w 1 alone (baseline)",
            Kind::GunicornTwo => "gunicorn -w 2",
            Kind::MasterGunicorn => "master-process (-w 2) × gunicorn -w 1",
            Kind::MasterNodeAdoptOff => "master-process (-w 2) --adopt off",
            Kind::ClusterRef | Kind::NaiveClusterRef => {
                "stand-in for the reference: a Node.js cluster primary reloading as it did (2 workers)"
            }
            Kind::NaivePm2 => "pm2 cluster mode (2 instances, pm2's defaults)",
            Kind::NaiveMaster => "master-process (-w 2), --node-drain on (the default)",
            Kind::NaiveMasterNoDrain => "master-process (-w 2) --node-drain off",
        }
    }

    /// The run every ratio of the app divides by.
    fn baseline(self) -> bool {
        matches!(self, Kind::NodeBare | Kind::GunicornOne)
    }

    pub(crate) fn master(self) -> bool {
        matches!(
            self,
            Kind::MasterNode
                | Kind::MasterAdopted
                | Kind::MasterGunicorn
                | Kind::MasterNodeAdoptOff
                | Kind::NaiveMaster
                | Kind::NaiveMasterNoDrain
        )
    }

    /// A Node.js cluster primary that reloads on SIGHUP (the reference or its stand-in).
    pub(crate) fn cluster(self) -> bool {
        matches!(
            self,
            Kind::Reference | Kind::ClusterRef | Kind::NaiveReference | Kind::NaiveClusterRef
        )
    }

    /// pm2's daemon.
    pub(crate) fn pm2(self) -> bool {
        matches!(self, Kind::Pm2 | Kind::NaivePm2)
    }

    /// How a reload is asked for.
    pub(crate) fn reload_how(self) -> &'static str {
        match self {
            _ if self.pm2() => "`pm2 reload app`",
            Kind::GunicornTwo => "SIGHUP to the arbiter",
            _ if self.cluster() => "SIGHUP to the cluster primary",
            _ if self.master() => "SIGHUP to the master",
            _ => "none",
        }
    }
}

/// One storm's results.
#[derive(Debug)]
struct StormRun {
    mode: Mode,
    load: loadgen::Report,
    storm: Storm,
    /// master-process: its reload lines during the storm.
    master_counts: Option<Reloads>,
    /// master-process: WARN/ERROR lines during the storm.
    warnings: Vec<String>,
    workers_after: usize,
}

/// Everything measured for one (app, manager).
#[derive(Debug)]
struct Row {
    kind: Kind,
    command: String,
    steady: Steady,
    storms: Vec<StormRun>,
    storm_errors: Vec<String>,
    rss_before_kb: Option<u64>,
    rss_kb: Option<u64>,
    hwm_kb: Option<u64>,
    threads: Option<u64>,
    socket_notes: Vec<String>,
    /// master-process's log lines outside reloads that say something changed (monitor
    /// replacements, crashes), seen during the steady runs.
    odd_lines: Vec<String>,
    exit: String,
}

/// One app's rows, or why it could not run.
#[derive(Debug)]
struct AppRun {
    app: App,
    rows: Vec<Row>,
    errors: Vec<String>,
    skipped: Vec<String>,
    took: Duration,
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let started = Instant::now();
    let tools = install::tools(ctx);
    let apps = [App::Node, App::Python].map(|app| run_app(ctx, &tools, app));
    Ok(vec![report::section(ctx, &tools, &apps, started.elapsed())])
}

fn run_app(ctx: &Ctx, tools: &Tools, app: App) -> AppRun {
    let started = Instant::now();
    let mut run = AppRun {
        app,
        rows: Vec::new(),
        errors: Vec::new(),
        skipped: Vec::new(),
        took: Duration::ZERO,
    };
    if let Err(e) = measure_app(ctx, tools, &mut run) {
        run.errors.push(format!("{}: {e}", app.name()));
    }
    run.took = started.elapsed();
    run
}

/// The runs of an app whose tools are there; the others go to `run.skipped`.
fn kinds(tools: &Tools, run: &mut AppRun) -> Vec<Kind> {
    match run.app {
        App::Node if tools.node.is_none() => {
            run.skipped
                .push("Node.js: node is not installed".to_owned());
            Vec::new()
        }
        App::Node => {
            if let Err(e) = &tools.pm2 {
                run.skipped.push(format!("pm2: {e}"));
            }
            let pm2 = tools.pm2.is_ok().then_some(Kind::Pm2);
            let reference = tools.reference().map(|_| Kind::Reference);
            let kinds = [
                Some(Kind::NodeBare),
                pm2,
                reference,
                Some(Kind::MasterNode),
                Some(Kind::MasterAdopted),
            ];
            kinds.into_iter().flatten().collect()
        }
        App::Python => match &tools.gunicorn {
            Err(e) => {
                run.skipped
                    .push(format!("Python WSGI (every run uses gunicorn): {e}"));
                Vec::new()
            }
            Ok(_) => vec![Kind::GunicornOne, Kind::GunicornTwo, Kind::MasterGunicorn],
        },
    }
}

fn measure_app(ctx: &Ctx, tools: &Tools, run: &mut AppRun) -> Result<(), String> {
    let kinds = kinds(tools, run);
    if kinds.is_empty() {
        return Ok(());
    }
    let mut servers = Vec::new();
    for kind in kinds {
        match server::start(ctx, tools, kind) {
            Ok(s) => {
                eprintln!(
                    "bench: peers: {} under {} on {} (manager pid {}, workers {:?})",
                    run.app.name(),
                    kind.label(),
                    s.addr,
                    s.manager_pid(),
                    s.seen
                );
                servers.push(s);
            }
            Err(e) if kind.baseline() => return Err(format!("the baseline did not start: {e}")),
            Err(e) => run
                .errors
                .push(format!("{}: could not start: {e}", kind.label())),
        }
    }
    let from: Vec<usize> = servers.iter().map(Server::log_len).collect();
    let steadies = steady(ctx, &mut servers)?;
    for ((server, steady), from) in servers.iter_mut().zip(steadies).zip(from) {
        let lines = if server.kind.master() {
            server.log_lines(from)
        } else {
            Vec::new()
        };
        let odd_lines = lines
            .into_iter()
            .filter(|l| l.contains("master_process"))
            .collect();
        run.rows.push(Row {
            kind: server.kind,
            command: server.command.clone(),
            steady,
            storms: Vec::new(),
            storm_errors: Vec::new(),
            rss_before_kb: sys::status_kb(server.manager_pid(), "VmRSS").ok(),
            rss_kb: None,
            hwm_kb: None,
            threads: None,
            socket_notes: std::mem::take(&mut server.socket_notes),
            odd_lines,
            exit: String::new(),
        });
    }
    // The baseline is done: stop it, then storm each manager alone.
    for (server, row) in servers.iter_mut().zip(run.rows.iter_mut()) {
        if server.kind.baseline() {
            row.exit = server.stop();
        }
    }
    for (server, row) in servers.iter_mut().zip(run.rows.iter_mut()) {
        if !server.kind.baseline() {
            storms(ctx, server, row);
        }
    }
    Ok(())
}

/// Both storms on one manager, then its memory, then it is stopped.
fn storms(ctx: &Ctx, server: &mut Server, row: &mut Row) {
    for (mode, _) in MODES {
        match storm(ctx, server, mode) {
            Ok(s) => row.storms.push(s),
            Err(e) => row
                .storm_errors
                .push(format!("{} storm: {e}", mode_name(mode))),
        }
        if server.check_alive().is_err() {
            break;
        }
    }
    let pid = server.manager_pid();
    row.rss_kb = sys::status_kb(pid, "VmRSS").ok();
    row.hwm_kb = sys::status_kb(pid, "VmHWM").ok();
    row.threads = sys::stat(pid).ok().map(|s| s.threads);
    row.exit = server.stop();
}

/// wrk against every server, interleaved (see [`wrk::interleaved`]).
fn steady(ctx: &Ctx, servers: &mut [Server]) -> Result<Vec<Steady>, String> {
    let sides: Vec<_> = servers.iter().map(|s| (s.addr, s.manager_pid())).collect();
    let app = servers.first().map_or("", |s| s.kind.app().key());
    wrk::interleaved(ctx, &sides, |mi, rep, runs| {
        for s in servers.iter_mut() {
            s.check_alive()?;
            s.workers();
        }
        let line: Vec<String> = runs
            .iter()
            .map(|(i, r)| format!("{} {:.0}", servers[*i].kind.key(), r.rps))
            .collect();
        let (mode, reps) = (mode_name(MODES[mi].0), ctx.opts.reps);
        eprintln!(
            "bench: peers {app} {mode} {}/{reps}: {}",
            rep + 1,
            line.join(", ")
        );
        Ok(())
    })
}

/// One storm on a manager, under loadgen.
fn storm(ctx: &Ctx, server: &mut Server, mode: Mode) -> Result<StormRun, String> {
    let secs = ctx.opts.storm_secs;
    eprintln!(
        "bench: peers storm {} {}: {} (pid {}) on {}, {secs} reloads ({})",
        server.kind.app().key(),
        mode_name(mode),
        server.kind.label(),
        server.manager_pid(),
        server.addr,
        server.kind.reload_how()
    );
    let from = server.log_len();
    let load = load(server.addr, CONNECTIONS, mode)?;
    let storm = storm::run(&mut server.storming(from), secs, EXIT_GRACE)?;
    let report = load.stop();
    server.check_alive()?;
    let workers_after = server.workers().len();
    let lines = server.log_lines(from);
    let master = server.kind.master();
    let master_counts = master.then(|| Reloads::count(&lines));
    let warnings = if master {
        crate::lines::warnings(&lines)
    } else {
        Vec::new()
    };
    eprintln!(
        "bench: peers storm {} {}: {} requests, {} failed",
        server.kind.app().key(),
        mode_name(mode),
        report.total(),
        report.failed()
    );
    Ok(StormRun {
        mode,
        load: report,
        storm,
        master_counts,
        warnings,
        workers_after,
    })
}
