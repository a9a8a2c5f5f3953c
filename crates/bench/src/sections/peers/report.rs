//! The peers section of the report: one table row per (app, manager), the figures behind each
//! cell in the notes, everything raw in the JSON.

use std::time::Duration;

use loadgen::Mode;

use super::install::{GUNICORN_VERSION, Tools};
use super::{AppRun, CONNECTIONS, MODES, Row, StormRun, WORKERS};
use crate::lines::Reloads;
use crate::measure::{mode_key, mode_name, ms};
use crate::report::{Json, Section, list, obj, quoted};
use crate::storm::{Cmd, Request, latencies};
use crate::wrk::{self, WrkRun};
use crate::{Ctx, stats, sys};

fn kib(kb: Option<u64>) -> String {
    kb.map_or("—".to_owned(), |kb| {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    })
}

fn failed_cell(st: Option<&StormRun>) -> String {
    let Some(st) = st else {
        return "—".to_owned();
    };
    let r = &st.load;
    let kinds: Vec<String> = [
        ("refused", r.refused),
        ("reset", r.reset),
        ("closed early", r.closed_early),
        ("timeout", r.timeout),
        ("non-2xx", r.bad_status),
        ("other", r.other),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{name} {n}"))
    .collect();
    let mut cell = format!("{} of {}", r.failed(), r.total());
    if !kinds.is_empty() {
        cell.push_str(&format!(" ({})", kinds.join(", ")));
    }
    cell
}

/// Every reload request of every storm of a row.
fn requests(row: &Row) -> impl Iterator<Item = &Request> {
    row.storms.iter().flat_map(|s| &s.storm.requests)
}

fn latency_cell(row: &Row) -> String {
    if row.storms.is_empty() {
        return "—".to_owned();
    }
    let lat = latencies(requests(row));
    let total = requests(row).count();
    let accepted = requests(row).filter(|r| r.accepted()).count();
    let mut cell = match lat.is_empty() {
        true => "none measured".to_owned(),
        false => format!("{:.0} ms", stats::median(&lat)),
    };
    cell.push_str(&format!(" (n={}", lat.len()));
    if accepted < total {
        cell.push_str(&format!(
            "; {} of {total} reloads refused",
            total - accepted
        ));
    }
    cell.push(')');
    cell
}

fn rps_cell(row: &Row, base: Option<&Row>, mode: usize) -> String {
    let m = row.steady.median(mode);
    match base {
        _ if m.is_nan() => "—".to_owned(),
        _ if row.kind.baseline() => format!("{m:.0} (1, baseline)"),
        Some(b) => format!("{m:.0} ({:.2})", m / b.steady.median(mode)),
        None => format!("{m:.0}"),
    }
}

fn row_json(row: &Row, base: Option<&Row>) -> Json {
    let steady = |mi: usize| {
        let runs = &row.steady.runs[mi];
        let rps = wrk::rps(runs);
        let median = stats::median(&rps);
        let wrk_json = |r: &WrkRun| {
            obj! {"requests_per_sec": r.rps, "requests": r.requests, "socket_errors": r.socket_errors.iter().sum::<u64>(), "non_2xx": r.non2xx}
        };
        obj! {
            "rps": Json::arr(rps),
            "median_rps": median,
            "ratio_to_baseline": base.map(|b| median / b.steady.median(mi)),
            "manager_cpu_ms": sys::ticks_ms(row.steady.ticks[mi]),
            "wrk": Json::arr(runs.iter().map(wrk_json)),
        }
    };
    let storms = row.storms.iter().map(|s| (mode_key(s.mode), storm_json(s)));
    obj! {
        "manager": row.kind.label(),
        "command": &row.command,
        "close": steady(0),
        "keepalive": steady(1),
        "storms": Json::obj(storms),
        "storm_errors": Json::arr(&row.storm_errors),
        "reload_latency_median_ms": stats::median(&latencies(requests(row))),
        "manager_vm_rss_kb_before_storms": row.rss_before_kb,
        "manager_vm_rss_kb": row.rss_kb,
        "manager_vm_hwm_kb": row.hwm_kb,
        "manager_threads": row.threads,
        "socket": Json::arr(&row.socket_notes),
        "exit": &row.exit,
    }
}

fn storm_json(s: &StormRun) -> Json {
    let master = s.master_counts.map(
        |Reloads {
             started,
             done,
             failed,
             queued,
         }| {
            obj! {"started": started, "done": done, "failed": failed, "queued": queued}
        },
    );
    obj! {
        "loadgen": Json::Raw(s.load.to_json()),
        "settled": s.storm.settled,
        "wall_secs": s.storm.wall.as_secs_f64(),
        "workers_after": s.workers_after,
        "master_reloads": master,
        "requests": Json::arr(s.storm.requests.iter().map(request_json)),
    }
}

fn request_json(r: &Request) -> Json {
    let pm2 = r.cmd.as_ref().map(|c| {
        obj! {"took_ms": c.took.map(ms), "exit_code": c.code, "refused": c.refused, "output": &c.said}
    });
    obj! {
        "at_ms": ms(r.at),
        "in_flight": r.in_flight,
        "old_pids": Json::arr(r.old.iter().copied()),
        "latency_ms": r.latency.map(ms),
        "pm2_reload": pm2,
    }
}

/// The notes on one (app, manager): every figure behind the table's cells.
fn row_notes(n: &mut Vec<String>, app: &str, row: &Row, base: Option<&Row>) {
    n.push(format!(
        "- **{app} / {}**: `{}`.",
        row.kind.label(),
        row.command
    ));
    for (mi, (mode, _)) in MODES.iter().enumerate() {
        n.push(steady_note(row, base, mi, *mode));
    }
    for st in &row.storms {
        storm_notes(n, st);
    }
    if !row.kind.baseline() {
        n.push(format!(
            "  - manager VmRSS {} before the storms, {} after (VmHWM {}, {} thread(s)); \
             ended: {}.",
            kib(row.rss_before_kb),
            kib(row.rss_kb),
            kib(row.hwm_kb),
            row.threads.map_or("?".to_owned(), |t| t.to_string()),
            row.exit
        ));
    }
    n.extend(row.socket_notes.iter().map(|note| format!("  - {note}.")));
    if !row.odd_lines.is_empty() {
        n.push(format!(
            "  - the master logged {} line(s) during the steady runs (expected none), \
             e.g. {}",
            row.odd_lines.len(),
            quoted(&row.odd_lines, 3)
        ));
    }
}

/// One mode's steady runs of a row.
fn steady_note(row: &Row, base: Option<&Row>, mi: usize, mode: Mode) -> String {
    let runs = &row.steady.runs[mi];
    let rps = wrk::rps(runs);
    let spread = stats::spread(&rps) * 100.0;
    let mut line = format!(
        "  - {}: req/s {} (spread {spread:.0}%)",
        mode_name(mode),
        list(&rps, 0)
    );
    if let Some(b) = base.filter(|_| !row.kind.baseline()) {
        let pairs: Vec<f64> = runs
            .iter()
            .zip(&b.steady.runs[mi])
            .map(|(r, b)| r.rps / b.rps)
            .collect();
        let median = stats::median(&pairs);
        line.push_str(&format!(
            "; per-repetition ratios {} (median {median:.2})",
            list(&pairs, 2)
        ));
    }
    let requests: u64 = runs.iter().map(|r| r.requests).sum();
    if !row.kind.baseline() && requests > 0 {
        let cpu = sys::ticks_ms(row.steady.ticks[mi]);
        let per = cpu * 1000.0 / requests as f64;
        line.push_str(&format!(
            "; manager CPU {cpu:.0} ms over its wrk runs ({per:.1} µs per request)"
        ));
    }
    let errors: u64 = runs.iter().map(WrkRun::errors).sum();
    if errors > 0 {
        line.push_str(&format!(
            "; wrk errors {errors} (socket errors + non-2xx, all runs)"
        ));
    }
    let odd = stats::outliers(&rps, |i, v| format!("run {} ({v:.0})", i + 1));
    if !odd.is_empty() {
        line.push_str(&format!(
            "; more than 30% from the median: {} (other work on the machine, or stalls \
             of the client's connects; the median discounts them)",
            odd.join(", ")
        ));
    }
    format!("{line}.")
}

/// The notes on one storm.
fn storm_notes(n: &mut Vec<String>, st: &StormRun) {
    let (r, requests) = (&st.load, &st.storm.requests);
    let mut line = format!(
        "  - {} storm: {} requests ({:.0} req/s over {:.1} s), {} failed; request \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.0} ms; {} pids answered; {} \
         workers after it",
        mode_name(st.mode),
        r.total(),
        r.requests_per_sec(),
        r.elapsed.as_secs_f64(),
        r.failed(),
        ms(r.latency_p50),
        ms(r.latency_p99),
        ms(r.latency_max),
        r.by_pid.len(),
        st.workers_after
    );
    let lat = latencies(requests);
    if !lat.is_empty() {
        line.push_str(&format!(
            "; reload latency median {:.0} ms, p90 {:.0}, max {:.0} ({} samples)",
            stats::median(&lat),
            stats::percentile(&lat, 90.0),
            stats::max(&lat),
            lat.len()
        ));
    }
    let no_exit = requests
        .iter()
        .filter(|q| q.accepted() && q.latency.is_none())
        .count();
    if no_exit > 0 {
        line.push_str(&format!(
            "; {no_exit} accepted request(s) whose old workers were not all seen to exit"
        ));
    }
    let overlapping = requests
        .iter()
        .filter(|q| q.in_flight == Some(true))
        .count();
    if let Some(Reloads {
        started,
        done,
        failed,
        queued,
    }) = st.master_counts
    {
        line.push_str(&format!(
            "; master: {} SIGHUPs ({overlapping} during a reload in flight), reloads \
             started {started}, done {done}, failed {failed}, queued {queued}",
            requests.len()
        ));
    }
    let cmds: Vec<&Cmd> = requests.iter().filter_map(|q| q.cmd.as_ref()).collect();
    if !cmds.is_empty() {
        line.push_str(&pm2_note(&cmds, overlapping));
    }
    if !st.storm.settled {
        line.push_str("; **reloads still in flight when the wait ended**");
    }
    n.push(format!("{line}."));
    if r.failed() > 0 {
        let samples: Vec<String> = r.errors.iter().take(4).map(|e| format!("`{e}`")).collect();
        n.push(format!(
            "    - first failures (s since the load started): {}",
            samples.join(", ")
        ));
    }
    if let Some(first) = st.warnings.first() {
        n.push(format!(
            "    - the master logged {} WARN/ERROR line(s), e.g. `{first}`",
            st.warnings.len()
        ));
    }
}

/// What the `pm2 reload app` commands of a storm did.
fn pm2_note(cmds: &[&Cmd], overlapping: usize) -> String {
    let ok = cmds.iter().filter(|c| c.code == Some(0)).count();
    let refused = cmds.iter().filter(|c| c.refused).count();
    let took: Vec<f64> = cmds
        .iter()
        .filter(|c| c.code == Some(0))
        .filter_map(|c| c.took.map(ms))
        .collect();
    let refused_text = match refused {
        0 => "none refused".to_owned(),
        _ => format!("{refused} refused by pm2 (\"Reload already in progress\")"),
    };
    let mut note = format!(
        "; `pm2 reload app`: {} run, {ok} succeeded, {refused_text}, {} failed otherwise; \
         {overlapping} started while an earlier one still ran; a successful one took \
         median {:.0} ms, max {:.0} ms",
        cmds.len(),
        cmds.len() - ok - refused,
        stats::median(&took),
        stats::max(&took)
    );
    let other: Vec<&str> = cmds
        .iter()
        .filter(|c| c.code != Some(0) && !c.refused)
        .map(|c| c.said.as_str())
        .take(3)
        .collect();
    if !other.is_empty() {
        note.push_str(&format!(" (e.g. {other:?})"));
    }
    note
}

fn intro(ctx: &Ctx, tools: &Tools) -> Vec<String> {
    let o = &ctx.opts;
    let reference = match tools.reference() {
        Some(r) => format!(
            " With `--reference`, **the reference module itself** (master-process {} for \
             Node.js, from {}) runs the same app, its `init()` line first \
             (`crates/bench/apps/node/reference-app.js`, `WORKERS=2`; Node's cluster: its \
             primary accepts every connection and hands it to a worker; SIGHUP reloads, the \
             old worker gets SIGTERM, which the app drains on).",
            r.version, r.source
        ),
        None => " The reference module itself did not run (no `--reference PATH`): see the \
                  queue and naive sections for its stand-in."
            .to_owned(),
    };
    vec![
        format!(
            "Two apps, each answering its pid, each shutting down \
             gracefully (stop accepting, `Connection: close` on later requests, connections idle \
             for 500 ms closed, exit when none is left): **Node.js** (`tests/fixtures/node/server.js`, \
             the test suite's Node worker, listening on \
             fd 3 under master-process, else on PORT) run bare, under pm2 in cluster mode \
             (`crates/bench/apps/node/ecosystem.config.js`: 2 instances, `wait_ready: true` with \
             `process.send('ready')`, `listen_timeout` 10 s, `kill_timeout` 10 s; pm2 stops a \
             worker with SIGINT, which the app drains on) and under master-process (`-w \
             {WORKERS}`, default `--ready listening`, default resource monitor); **Python WSGI** \
             (`crates/bench/apps/python/app.py`) served by gunicorn {GUNICORN_VERSION} sync workers: `gunicorn -w 1` \
             alone (the baseline), `gunicorn -w 2`, and master-process (`-w {WORKERS}`) running \
             `gunicorn -w 1 --no-control-socket` as each worker, gunicorn taking the socket from \
             LISTEN_FDS (systemd socket activation; checked below). **The unchanged app**: \
             `tests/fixtures/node/binds/server.js`, the same request handler, but it binds \
             `PORT` on `HOST=127.0.0.1` itself and knows nothing of LISTEN_FDS (it drains on \
             SIGTERM by itself, idle connections closed after 2 s): under master-process \
             (`-l 127.0.0.1:PORT -w {WORKERS}`) its bind and listen are adopted.{reference}"
        ),
        format!(
            "1. **Steady req/s**: wrk -t2 -c32 for {} s, `Connection: close` (new-conn) and \
             keep-alive; every run of an app is up at once (idle ones cost nothing) and each \
             repetition runs wrk once against each, the order rotating by one per repetition; {} \
             repetitions per mode after a 1 s warm-up of each; medians; the ratio is \
             median / median of the app's baseline (bare `node server.js`; `gunicorn -w 1` alone, the \
             nearest thing to a bare WSGI app: its arbiter only forks and watches). The baselines \
             are one process; the managed runs have 2 workers on {} CPU(s) shared with wrk, so a \
             ratio above 1 is the second worker's share, not a manager speed-up. 2. **Failed in \
             storm**: the baseline stopped, each manager alone under loadgen ({CONNECTIONS} \
             connections, 2 s deadline per request, every request counted once, failures by kind) \
             with one reload requested per second for {} s (pm2: `pm2 reload app` spawned each \
             second without waiting for the previous one; gunicorn and master-process: SIGHUP), \
             then until every reload asked for has ended; new-conn storm first, keep-alive storm \
             second, on the same manager. 3. **Reload latency**: from the request (signal sent, or \
             `pm2 reload` spawned) to the exit of the last worker alive just before it (the \
             manager's children: pm2's God daemon's, gunicorn's arbiter's, the master's; pidfd), \
             median over the reloads of both storms that the manager accepted. 4. **Manager RSS**: \
             VmRSS of the supervising process alone (pm2's God daemon, gunicorn's arbiter, the \
             master) after both storms.",
            o.duration_s, o.reps, ctx.machine.cpus, o.storm_secs
        ),
    ]
}

/// The table: one row per (app, manager), then the skipped ones.
fn table(apps: &[AppRun]) -> Vec<String> {
    let mut n = vec![
        "| App | Manager | req/s new-conn (ratio) | req/s keep-alive (ratio) | failed in storm, \
         new-conn | failed in storm, keep-alive | reload latency median | manager RSS |"
            .to_owned(),
        "|---|---|---:|---:|---:|---:|---:|---:|".to_owned(),
    ];
    for a in apps {
        let base = a.rows.iter().find(|r| r.kind.baseline());
        for row in &a.rows {
            let storm = |mode: Mode| row.storms.iter().find(|s| s.mode == mode);
            let rss = if row.kind.baseline() {
                "—".to_owned()
            } else {
                kib(row.rss_kb)
            };
            n.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {rss} |",
                a.app.name(),
                row.kind.label(),
                rps_cell(row, base, 0),
                rps_cell(row, base, 1),
                failed_cell(storm(Mode::Close)),
                failed_cell(storm(Mode::KeepAlive)),
                latency_cell(row),
            ));
        }
        for skipped in &a.skipped {
            n.push(format!(
                "| {} | skipped: {} | | | | | | |",
                a.app.name(),
                skipped.replace('|', "\\|")
            ));
        }
    }
    n.push(String::new());
    n
}

/// The notes after the table that do not depend on the figures.
const READING: [&str; 3] = [
    "- pm2's per-request path: in cluster mode the God daemon is Node's cluster primary \
     with the round-robin scheduler (SCHED_RR): it alone holds the listening socket (see \
     the socket line of its row), accepts every connection and passes it to a worker over \
     IPC, hence its CPU per request above and a lower new-conn ratio. gunicorn's arbiter \
     and master-process only hold the socket; their workers accept on it directly.",
    "- master-process × gunicorn and readiness: gunicorn's arbiter sends `READY=1` \
     (`STATUS=Gunicorn arbiter booted`) on the worker's NOTIFY_SOCKET as soon as it has its \
     sockets, before its worker has forked or imported the app. Under the default \
     `--ready listening` the master ignores it and waits until the probe sees the sync \
     worker's accept loop, so a release whose import fails never replaces a working one \
     (`READY=1` counts under `--ready notify` alone).",
    "- gunicorn's sync workers never keep a connection alive (every answer carries \
     `Connection: close`), so its keep-alive figures are new connections too: wrk and \
     loadgen reconnect after each answer, and a server closing after an answer is not a \
     failure for loadgen.",
];

/// The section.
pub(super) fn section(ctx: &Ctx, tools: &Tools, apps: &[AppRun], took: Duration) -> Section {
    let mut s = Section::new(
        "peers",
        "Peers: the same apps under pm2, gunicorn and master-process",
    );
    s.intro = intro(ctx, tools);
    s.errors
        .extend(apps.iter().flat_map(|a| a.errors.iter().cloned()));
    for a in apps {
        for row in &a.rows {
            let what = format!("{} / {}", a.app.name(), row.kind.label());
            s.errors
                .extend(row.storm_errors.iter().map(|e| format!("{what}: {e}")));
        }
    }
    let mut n = table(apps);
    let versions: Vec<String> = tools
        .versions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    n.push(format!("- Versions: {}.", versions.join("; ")));
    n.extend(tools.notes.iter().map(|note| format!("- Install: {note}.")));
    let each: Vec<String> = apps
        .iter()
        .map(|a| format!("{} {:.0} s", a.app.name(), a.took.as_secs_f64()))
        .collect();
    n.push(format!(
        "- This section took {:.0} s ({}).",
        took.as_secs_f64(),
        each.join(", ")
    ));
    for a in apps {
        let base = a.rows.iter().find(|r| r.kind.baseline());
        for row in &a.rows {
            row_notes(&mut n, a.app.name(), row, base);
        }
    }
    n.extend(READING.map(String::from));
    n.push(format!(
        "- Noise: wrk (2 threads), the servers and the kernel share {} CPU(s); absolute req/s \
         vary between runs (up to 30% seen on such machines), so compare ratios from the same \
         run. The `pm2 reload` command is itself a Node process (~0.3 s of CPU to start) that \
         competes with the load during pm2's storm.",
        ctx.machine.cpus
    ));
    s.notes = n;
    for a in apps {
        let base = a.rows.iter().find(|r| r.kind.baseline());
        let rows = a.rows.iter().map(|r| (r.kind.key(), row_json(r, base)));
        s.detail(a.app.key(), Json::obj(rows));
    }
    s.detail(
        "versions",
        Json::obj(
            tools
                .versions
                .iter()
                .map(|(k, v)| (k.clone(), Json::from(v))),
        ),
    );
    s.detail("install", Json::arr(&tools.notes));
    s.detail("took_secs", Json::from(took.as_secs_f64()));
    s
}

#[cfg(test)]
mod tests {
    use super::super::Kind;
    use super::*;
    use crate::storm::Storm;
    use crate::wrk::Steady;

    #[test]
    fn cells() {
        let load = loadgen::Report {
            ok: 90,
            reset: 2,
            timeout: 8,
            ..loadgen::Report::default()
        };
        let request = |latency_ms: u64, code: Option<i32>| Request {
            at: Duration::ZERO,
            in_flight: None,
            old: vec![1],
            latency: Some(Duration::from_millis(latency_ms)),
            cmd: code.map(|code| Cmd {
                took: None,
                code: Some(code),
                refused: code != 0,
                said: String::new(),
            }),
        };
        let requests = vec![
            request(100, Some(0)),
            request(300, Some(0)),
            request(5000, Some(1)),
        ];
        let st = StormRun {
            mode: Mode::Close,
            load,
            storm: Storm {
                requests,
                settled: true,
                wall: Duration::from_secs(1),
            },
            master_counts: None,
            warnings: Vec::new(),
            workers_after: 2,
        };
        assert_eq!(failed_cell(Some(&st)), "10 of 100 (reset 2, timeout 8)");
        assert_eq!(failed_cell(None), "—");
        let row = Row {
            kind: Kind::Pm2,
            command: String::new(),
            steady: Steady::default(),
            storms: vec![st],
            storm_errors: Vec::new(),
            rss_before_kb: None,
            rss_kb: Some(2048),
            hwm_kb: None,
            threads: None,
            socket_notes: Vec::new(),
            odd_lines: Vec::new(),
            exit: String::new(),
        };
        // The refused request's latency is left out of the median.
        assert_eq!(latency_cell(&row), "200 ms (n=2; 1 of 3 reloads refused)");
        assert_eq!(kib(row.rss_kb), "2.0 MiB");
        assert_eq!(rps_cell(&row, None, 0), "—");
        let mut n = Vec::new();
        storm_notes(&mut n, &row.storms[0]);
        assert!(
            n[0].contains("`pm2 reload app`: 3 run, 2 succeeded, 1 refused by pm2"),
            "{n:?}"
        );
    }
}
