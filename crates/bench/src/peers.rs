//! Peers: the same apps under each manager, measured in the same run.
//!
//! Two apps, each answering its pid, each with a graceful shutdown
//! (stop accepting, `Connection: close` on later requests, idle connections closed after
//! 500 ms, exit when none is left):
//!
//! - Node.js (`tests/fixtures/node/server.js`, the tests' Node worker): bare (`node server.js`, PORT), under pm2 in cluster mode
//!   (`crates/bench/apps/node/ecosystem.config.js`: 2 instances, `wait_ready`, `listen_timeout`,
//!   `kill_timeout`; reload = `pm2 reload app`) and under master-process (`-w 2`, SIGHUP).
//! - Python WSGI (`apps/python/app.py`) served by gunicorn's sync workers: `gunicorn -w 1`
//!   alone (the baseline), `gunicorn -w 2` (reload = SIGHUP to the arbiter) and master-process
//!   running `gunicorn -w 1` as each of its 2 workers (gunicorn takes the socket from
//!   LISTEN_FDS; checked from /proc).
//!
//! For each: steady requests/s with wrk (new connection and keep-alive), interleaved with
//! the baseline of the same app, medians and ratios; a storm of one reload per second under
//! loadgen (8 connections) in both modes, counting every failed request by kind; reload
//! latency (request to the exit of the last old worker, pidfd); the manager's VmRSS after the
//! storms. pm2 and gunicorn are installed under `target/bench/peers/` on first use; a peer
//! whose install fails is skipped with a note.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loadgen::Mode;

use crate::procs::{Proc, pidfd_open, register_group, unregister_group};
use crate::report::{Json, Section};
use crate::storm::{mode_key, mode_name, reload_counts, sleep_until};
use crate::throughput::{WrkRun, wrk};
use crate::{Ctx, proc, setup, stats};

/// Workers under every manager.
const WORKERS: usize = 2;
/// loadgen connections during a storm.
const CONNECTIONS: usize = 8;
/// The pm2 release installed and measured.
const PM2_VERSION: &str = "7.0.4";
/// The gunicorn release installed and measured.
const GUNICORN_VERSION: &str = "27.0.1";
/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an install step may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for the old workers of one reload request.
const EXIT_WAIT: Duration = Duration::from_secs(60);
/// Once the reloads have settled, how much longer old workers may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(15);
/// Longest wait for the reloads still in flight after the last request.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The two wrk modes, in order: (key, name, `Connection: close`).
const MODES: [(Mode, bool); 2] = [(Mode::Close, true), (Mode::KeepAlive, false)];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The apps' folder, `crates/bench/apps`.
fn apps_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps");
    dir.canonicalize().unwrap_or(dir)
}

/// Removes ANSI colour sequences (pm2 colours its output).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The last `n` non-empty lines of a process's stdout and stderr, ANSI removed, joined by
/// ` / `.
fn last_lines(p: &Proc, n: usize) -> String {
    let mut lines = p.out().map(|o| o.lines()).unwrap_or_default();
    lines.extend(p.log().lines());
    let lines: Vec<String> = lines
        .iter()
        .map(|l| strip_ansi(l).trim().to_owned())
        .filter(|l| !l.is_empty() && !l.chars().all(|c| "─│┌┐└┘├┤┬┴┼".contains(c) || c == ' '))
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" / ")
}

/// Runs a tool to its end; its output goes into the error when it fails.
fn run_tool(name: &str, cmd: Command, timeout: Duration, echo: bool) -> Result<(), String> {
    let mut p = Proc::spawn(name, cmd, true, echo)?;
    let status = p.wait_exit(timeout)?;
    if let Some(out) = p.out() {
        out.wait_closed(Duration::from_secs(5));
    }
    p.log().wait_closed(Duration::from_secs(5));
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status}): {}", last_lines(&p, 6)))
    }
}

// ---------------------------------------------------------------------------------------
// Installing the peers.

/// The tools found or installed.
#[derive(Debug)]
struct Tools {
    node: Option<PathBuf>,
    pm2: Result<PathBuf, String>,
    gunicorn: Result<PathBuf, String>,
    /// Where pm2's home and gunicorn's control sockets go.
    peers: PathBuf,
    notes: Vec<String>,
    versions: Vec<(String, String)>,
}

/// `"version": "X"` from a package.json.
fn package_version(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let at = text.find("\"version\"")?;
    let rest = &text[at + "\"version\"".len()..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn install_pm2(ctx: &Ctx, peers: &Path, notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let pkg = peers.join("node_modules/pm2/package.json");
    let bin = peers.join("node_modules/.bin/pm2");
    if package_version(&pkg).as_deref() == Some(PM2_VERSION) && bin.exists() {
        notes.push(format!(
            "pm2 {PM2_VERSION}: already installed in `{}`",
            peers.display()
        ));
        return Ok(bin);
    }
    let npm = setup::find_in_path("npm").ok_or("npm is not installed")?;
    eprintln!(
        "bench: peers: npm install --prefix {} pm2@{PM2_VERSION}",
        peers.display()
    );
    let started = Instant::now();
    let mut cmd = Command::new(npm);
    cmd.arg("install")
        .arg("--prefix")
        .arg(peers)
        .arg(format!("pm2@{PM2_VERSION}"))
        .args(["--no-audit", "--no-fund", "--loglevel=error"]);
    run_tool("npm install pm2", cmd, INSTALL_TIMEOUT, ctx.opts.verbose)?;
    match package_version(&pkg) {
        Some(v) if v == PM2_VERSION && bin.exists() => {
            notes.push(format!(
                "pm2 {PM2_VERSION}: installed now with `npm install --prefix {} pm2@{PM2_VERSION}` \
                 ({:.0} s)",
                peers.display(),
                started.elapsed().as_secs_f64()
            ));
            Ok(bin)
        }
        other => Err(format!(
            "npm install ran but node_modules/pm2 is {other:?}, not {PM2_VERSION}"
        )),
    }
}

fn gunicorn_version(gunicorn: &Path) -> Option<String> {
    if !gunicorn.is_file() {
        return None;
    }
    let line = setup::first_line(gunicorn, &["--version"], None);
    // `gunicorn (version 27.0.1)`
    let v = line.split("version ").nth(1)?.trim_end_matches(')').trim();
    Some(v.to_owned())
}

fn install_gunicorn(ctx: &Ctx, peers: &Path, notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let venv = peers.join("venv");
    let gunicorn = venv.join("bin/gunicorn");
    if gunicorn_version(&gunicorn).as_deref() == Some(GUNICORN_VERSION) {
        notes.push(format!(
            "gunicorn {GUNICORN_VERSION}: already installed in `{}`",
            venv.display()
        ));
        return Ok(gunicorn);
    }
    let python = setup::find_in_path("python3").ok_or("python3 is not installed")?;
    let started = Instant::now();
    if !venv.join("bin/python").exists() {
        eprintln!("bench: peers: python3 -m venv {}", venv.display());
        let mut cmd = Command::new(python);
        cmd.args(["-m", "venv"]).arg(&venv);
        run_tool("python3 -m venv", cmd, INSTALL_TIMEOUT, ctx.opts.verbose)?;
    }
    eprintln!("bench: peers: pip install gunicorn=={GUNICORN_VERSION}");
    let mut cmd = Command::new(venv.join("bin/pip"));
    cmd.args([
        "install",
        "--disable-pip-version-check",
        "-q",
        &format!("gunicorn=={GUNICORN_VERSION}"),
    ]);
    run_tool(
        "pip install gunicorn",
        cmd,
        INSTALL_TIMEOUT,
        ctx.opts.verbose,
    )?;
    match gunicorn_version(&gunicorn) {
        Some(v) if v == GUNICORN_VERSION => {
            notes.push(format!(
                "gunicorn {GUNICORN_VERSION}: installed now with `python3 -m venv {0}` and \
                 `{0}/bin/pip install gunicorn=={GUNICORN_VERSION}` ({1:.0} s)",
                venv.display(),
                started.elapsed().as_secs_f64()
            ));
            Ok(gunicorn)
        }
        other => Err(format!(
            "pip install ran but gunicorn is {other:?}, not {GUNICORN_VERSION}"
        )),
    }
}

fn tools(ctx: &Ctx) -> Tools {
    let peers = ctx.bins.out_dir.join("peers");
    let mut notes = Vec::new();
    let node = setup::find_in_path("node");
    let made =
        fs::create_dir_all(&peers).map_err(|e| format!("cannot create {}: {e}", peers.display()));
    let pm2 = match (&made, &node) {
        (Err(e), _) => Err(e.clone()),
        (Ok(()), None) => Err("node is not installed".to_owned()),
        (Ok(()), Some(_)) => install_pm2(ctx, &peers, &mut notes),
    };
    let gunicorn = match &made {
        Err(e) => Err(e.clone()),
        Ok(()) => install_gunicorn(ctx, &peers, &mut notes),
    };
    if let Err(e) = &pm2 {
        notes.push(format!("**pm2 skipped**: {e}"));
    }
    if let Err(e) = &gunicorn {
        notes.push(format!(
            "**gunicorn skipped** (and with it every Python run): {e}"
        ));
    }
    let mut versions = vec![(
        "master-process".to_owned(),
        setup::first_line(&ctx.bins.master, &["--version"], None),
    )];
    if let Some(node) = &node {
        versions.push(("node".into(), setup::first_line(node, &["--version"], None)));
    }
    if pm2.is_ok() {
        versions.push((
            "pm2".into(),
            package_version(&peers.join("node_modules/pm2/package.json")).unwrap_or_default(),
        ));
    }
    if let Ok(g) = &gunicorn {
        let python = peers.join("venv/bin/python");
        versions.push((
            "python".into(),
            setup::first_line(&python, &["--version"], None),
        ));
        versions.push(("gunicorn".into(), gunicorn_version(g).unwrap_or_default()));
    }
    Tools {
        node,
        pm2,
        gunicorn,
        peers,
        notes,
        versions,
    }
}

// ---------------------------------------------------------------------------------------
// The servers.

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
enum Kind {
    NodeBare,
    Pm2,
    MasterNode,
    GunicornOne,
    GunicornTwo,
    MasterGunicorn,
}

impl Kind {
    fn app(self) -> App {
        match self {
            Kind::NodeBare | Kind::Pm2 | Kind::MasterNode => App::Node,
            _ => App::Python,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::NodeBare => "bare",
            Kind::Pm2 => "pm2",
            Kind::MasterNode | Kind::MasterGunicorn => "master_process",
            Kind::GunicornOne => "gunicorn_w1",
            Kind::GunicornTwo => "gunicorn_w2",
        }
    }

    /// The table's Manager column.
    fn label(self) -> &'static str {
        match self {
            Kind::NodeBare => "none (bare `node server.js`, baseline)",
            Kind::Pm2 => "pm2 cluster mode (2 instances)",
            Kind::MasterNode => "master-process (-w 2)",
            Kind::GunicornOne => "gunicorn -w 1 alone (baseline)",
            Kind::GunicornTwo => "gunicorn -w 2",
            Kind::MasterGunicorn => "master-process (-w 2) × gunicorn -w 1",
        }
    }

    /// The run every ratio of the app divides by.
    fn baseline(self) -> bool {
        matches!(self, Kind::NodeBare | Kind::GunicornOne)
    }

    fn master(self) -> bool {
        matches!(self, Kind::MasterNode | Kind::MasterGunicorn)
    }

    /// How a reload is asked for.
    fn reload_how(self) -> &'static str {
        match self {
            Kind::Pm2 => "`pm2 reload app`",
            Kind::GunicornTwo => "SIGHUP to the arbiter",
            Kind::MasterNode | Kind::MasterGunicorn => "SIGHUP to the master",
            _ => "none",
        }
    }
}

/// pm2's daemon, in its own PM2_HOME. Dropping it runs `pm2 kill`, then SIGKILLs whatever
/// is left of the daemon's process group.
#[derive(Debug)]
struct Pm2 {
    bin: PathBuf,
    home: PathBuf,
    daemon: i32,
    slot: Option<usize>,
    echo: bool,
    killed: bool,
}

impl Pm2 {
    fn command(bin: &Path, home: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("PM2_HOME", home)
            .env("PM2_DISABLE_VERSION_CHECK", "true")
            .env("FORCE_COLOR", "0");
        cmd
    }

    /// The daemon's pid from `PM2_HOME/pm2.pid`, if that process is alive and is pm2's
    /// daemon for this home.
    fn daemon_pid(home: &Path) -> Option<i32> {
        let pid: i32 = fs::read_to_string(home.join("pm2.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = proc::cmdline(pid);
        (pid > 1
            && proc::alive(pid)
            && cmdline.contains("PM2")
            && cmdline.contains(&*home.to_string_lossy()))
        .then_some(pid)
    }

    /// `pm2 kill`, then SIGKILL to the daemon's group if it is still there.
    fn kill_home(bin: &Path, home: &Path, echo: bool) -> String {
        let before = Pm2::daemon_pid(home);
        let mut said = String::new();
        if home.join("pm2.pid").exists() || before.is_some() {
            let cmd = Pm2::command(bin, home, &["kill"]);
            if let Err(e) = run_tool("pm2 kill", cmd, Duration::from_secs(30), echo) {
                said = format!("{e}; ");
            }
        }
        if let Some(pid) = before
            && !crate::procs::wait_exit(pid, Duration::from_secs(5))
            && Pm2::daemon_pid(home) == Some(pid)
        {
            let pgid = proc::pgid(pid).unwrap_or(pid);
            // SAFETY: getpgrp has no preconditions.
            let ours = unsafe { libc::getpgrp() };
            // SAFETY: kill(2) on pm2's daemon (checked above by its command line and
            // home) and, when it leads a group of its own, on that group.
            unsafe {
                if pgid > 1 && pgid != ours {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
            said.push_str("the daemon outlived `pm2 kill`: SIGKILLed");
        }
        said
    }

    /// `pm2 start ECOSYSTEM` with PEERS_PORT=port in a fresh PM2_HOME.
    fn start(
        bin: &Path,
        home: &Path,
        ecosystem: &Path,
        port: u16,
        echo: bool,
    ) -> Result<Pm2, String> {
        // A daemon left by an earlier, killed run of ours in the same home.
        Pm2::kill_home(bin, home, echo);
        if home.exists() {
            fs::remove_dir_all(home)
                .map_err(|e| format!("cannot clear {}: {e}", home.display()))?;
        }
        fs::create_dir_all(home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
        // Marks pm2 as already set up: no banner and no version check on first use.
        fs::write(home.join("touch"), "0")
            .map_err(|e| format!("cannot write in {}: {e}", home.display()))?;
        let mut pm2 = Pm2 {
            bin: bin.to_owned(),
            home: home.to_owned(),
            daemon: 0,
            slot: None,
            echo,
            killed: false,
        };
        let mut cmd = Pm2::command(bin, home, &["start"]);
        cmd.arg(ecosystem).env("PEERS_PORT", port.to_string());
        let started = run_tool("pm2 start", cmd, START_TIMEOUT, echo);
        if let Some(pid) = Pm2::daemon_pid(home) {
            pm2.daemon = pid;
            crate::noise::adopt(pid);
            // SAFETY: getpgrp has no preconditions.
            let ours = unsafe { libc::getpgrp() };
            if let Ok(pgid) = proc::pgid(pid)
                && pgid == pid
                && pgid != ours
            {
                pm2.slot = register_group(pgid);
            }
        }
        started?;
        if pm2.daemon == 0 {
            return Err(format!(
                "pm2 start succeeded but no live daemon in {}/pm2.pid",
                home.display()
            ));
        }
        Ok(pm2)
    }

    fn kill(&mut self) -> String {
        if self.killed {
            return String::new();
        }
        self.killed = true;
        let said = Pm2::kill_home(&self.bin, &self.home, self.echo);
        if self.daemon > 0 {
            crate::noise::disown(self.daemon);
        }
        if let Some(slot) = self.slot.take() {
            unregister_group(slot);
        }
        said
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running app under one manager (or none).
#[derive(Debug)]
struct Server {
    kind: Kind,
    command: String,
    addr: SocketAddr,
    /// The process we started and supervise (bare node, gunicorn's arbiter, the master);
    /// `None` for pm2, whose daemon detaches.
    proc: Option<Proc>,
    pm2: Option<Pm2>,
    /// Worker pids seen (direct children of the manager), swept at the end.
    seen: BTreeSet<i32>,
    /// Lines that show how the socket is shared, written once it serves.
    socket_notes: Vec<String>,
}

impl Server {
    fn manager_pid(&self) -> i32 {
        match (&self.pm2, &self.proc) {
            (Some(p), _) => p.daemon,
            (None, Some(p)) => p.pid(),
            (None, None) => 0,
        }
    }

    /// The manager's worker processes (none for the bare app).
    fn workers(&mut self) -> BTreeSet<i32> {
        if self.kind == Kind::NodeBare {
            return BTreeSet::new();
        }
        let marker = self.kind.app().marker();
        let live: BTreeSet<i32> = proc::children(self.manager_pid())
            .into_iter()
            .filter(|&p| proc::cmdline(p).contains(marker))
            .collect();
        self.seen.extend(&live);
        live
    }

    fn check_alive(&mut self) -> Result<(), String> {
        let name = self.kind.label();
        if let Some(p) = &mut self.proc
            && !p.running()
        {
            return Err(format!("{name} exited:{}", p.log().tail(10)));
        }
        if let Some(p) = &self.pm2
            && !proc::alive(p.daemon)
        {
            return Err(format!("{name}: pm2's daemon {} is gone", p.daemon));
        }
        Ok(())
    }

    /// Stops everything; returns how the manager ended.
    fn stop(&mut self) -> String {
        let mut said = String::new();
        if let Some(pm2) = &mut self.pm2 {
            said = pm2.kill();
            if said.is_empty() {
                said = "`pm2 kill`: stopped".to_owned();
            }
        }
        if let Some(p) = &mut self.proc {
            let grace = if self.kind.master() || self.kind == Kind::GunicornTwo {
                Duration::from_secs(15)
            } else {
                Duration::from_secs(5)
            };
            let status = p.stop(grace);
            said = match status.code() {
                Some(code) => format!("SIGTERM: exit code {code}"),
                None => format!("SIGTERM: {status}"),
            };
        }
        let marker = self.kind.app().marker();
        for &pid in &self.seen {
            if proc::alive(pid) && proc::cmdline(pid).contains(marker) {
                eprintln!("bench: peers: worker {pid} outlived its manager; killing it");
                // SAFETY: kill(2) on a worker of ours (seen as the manager's child, still
                // running our app) and on the group it leads, if it leads one.
                unsafe {
                    if proc::pgid(pid).ok() == Some(pid) {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                    libc::kill(pid, libc::SIGKILL);
                }
                said.push_str(&format!("; worker {pid} outlived it (killed)"));
            }
        }
        said
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it first).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// One `GET /` with `Connection: close`; the pid in the answer.
fn get_pid(addr: SocketAddr) -> Result<u32, String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return Err(format!("not a 200 answer: {:?}", text.lines().next()));
    }
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("no pid in the answer {text:?}"))
}

/// Waits until `addr` answers with a pid.
fn wait_serving(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match get_pid(addr) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{addr} did not answer within {timeout:?}: {e}"));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The address after `listening on ` in the master's log line.
fn master_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Starts one run of an app.
fn start(ctx: &Ctx, tools: &Tools, kind: Kind) -> Result<Server, String> {
    let echo = ctx.opts.verbose;
    let apps = apps_dir();
    let node_dir = setup::workspace_root().join("tests/fixtures/node");
    let ecosystem = apps.join("node/ecosystem.config.js");
    let python_dir = apps.join("python");
    let node = || tools.node.clone().ok_or("node is not installed");
    let gunicorn = || tools.gunicorn.clone();
    let mut server = Server {
        kind,
        command: String::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        proc: None,
        pm2: None,
        seen: BTreeSet::new(),
        socket_notes: Vec::new(),
    };
    match kind {
        Kind::NodeBare => {
            let port = free_port()?;
            let mut cmd = Command::new(node()?);
            cmd.arg(node_dir.join("server.js"))
                .current_dir(&node_dir)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1");
            server.command = format!("PORT={port} node server.js");
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut p = Proc::spawn("node (bare)", cmd, false, echo)?;
            p.wait_line("serving", START_TIMEOUT, |l| l.contains("serving "))?;
            server.proc = Some(p);
        }
        Kind::Pm2 => {
            let bin = tools.pm2.clone()?;
            let port = free_port()?;
            let home = tools.peers.join("pm2-home");
            server.command = format!(
                "PM2_HOME={} PEERS_PORT={port} pm2 start ecosystem.config.js",
                home.display()
            );
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            server.pm2 = Some(Pm2::start(&bin, &home, &ecosystem, port, echo)?);
        }
        Kind::MasterNode | Kind::MasterGunicorn => {
            let mut cmd = Command::new(&ctx.bins.master);
            cmd.args(["-l", "127.0.0.1:0", "-w"])
                .arg(WORKERS.to_string())
                .args(["--control", "off", "--"]);
            if kind == Kind::MasterNode {
                cmd.arg(node()?)
                    .arg(node_dir.join("server.js"))
                    .current_dir(&node_dir);
                server.command = format!(
                    "master-process -l 127.0.0.1:PORT -w {WORKERS} --control off -- node server.js"
                );
            } else {
                cmd.arg(gunicorn()?)
                    .args(["-w", "1", "--no-control-socket", "app:app"])
                    .current_dir(&python_dir);
                server.command = format!(
                    "master-process -l 127.0.0.1:PORT -w {WORKERS} --control off -- gunicorn -w 1 \
                     --no-control-socket app:app"
                );
            }
            let mut p = Proc::spawn("master-process", cmd, false, echo)?;
            let line = p.wait_line("listening on", START_TIMEOUT, |l| {
                l.contains("listening on ")
            })?;
            server.addr = master_addr(&line).ok_or_else(|| format!("no address in {line:?}"))?;
            p.wait_line("all workers ready", START_TIMEOUT, |l| {
                l.contains("all workers ready")
            })?;
            server.proc = Some(p);
        }
        Kind::GunicornOne | Kind::GunicornTwo => {
            let workers = if kind == Kind::GunicornOne {
                1
            } else {
                WORKERS
            };
            let port = free_port()?;
            let ctl = tools.peers.join(format!("gunicorn-w{workers}.ctl"));
            let mut cmd = Command::new(gunicorn()?);
            cmd.args([
                "-w",
                &workers.to_string(),
                "-b",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--control-socket")
            .arg(&ctl)
            .arg("app:app")
            .current_dir(&python_dir);
            server.command = format!(
                "gunicorn -w {workers} -b 127.0.0.1:{port} --control-socket {} app:app",
                ctl.display()
            );
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut p = Proc::spawn(&format!("gunicorn -w {workers}"), cmd, false, echo)?;
            p.wait_line("Listening at", START_TIMEOUT, |l| {
                l.contains("Listening at")
            })?;
            server.proc = Some(p);
            let deadline = Instant::now() + START_TIMEOUT;
            while server.workers().len() < workers {
                if Instant::now() >= deadline {
                    return Err(format!("gunicorn -w {workers}: its workers did not start"));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    wait_serving(server.addr, START_TIMEOUT)?;
    server.workers();
    server.socket_notes = socket_check(&mut server);
    Ok(server)
}

// ---------------------------------------------------------------------------------------
// Who holds the listening socket.

/// Inodes of the TCP sockets listening on `port` (/proc/net/tcp and tcp6).
fn listen_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Ok(ino) = f[9].parse()
            {
                out.push(ino);
            }
        }
    }
    out
}

/// Every process holding a descriptor for socket `ino`.
fn holders(ino: u64) -> Vec<i32> {
    let want = format!("socket:[{ino}]");
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want))
            })
        })
        .collect();
    out.sort_unstable();
    out
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// How the listening socket is shared: one socket on the port, and who holds it; for
/// master-process × gunicorn, also which processes answer.
fn socket_check(server: &mut Server) -> Vec<String> {
    let mut notes = Vec::new();
    let port = server.addr.port();
    let inodes = listen_inodes(port);
    let manager = server.manager_pid();
    let mut described = Vec::new();
    for &ino in &inodes {
        let list: Vec<String> = holders(ino)
            .into_iter()
            .map(|p| {
                let role = if p == manager && server.kind != Kind::NodeBare {
                    " (manager)"
                } else {
                    ""
                };
                format!("{} {p}{role}", comm(p))
            })
            .collect();
        described.push(format!("inode {ino}: {}", list.join(", ")));
    }
    notes.push(format!(
        "{} listening socket(s) on port {port}: {}",
        inodes.len(),
        described.join("; ")
    ));
    if server.kind == Kind::MasterGunicorn {
        // The arbiters (the master's children) and their sync workers.
        let arbiters = server.workers();
        let workers: BTreeSet<i32> = arbiters.iter().flat_map(|&a| proc::children(a)).collect();
        let mut answered = BTreeSet::new();
        for _ in 0..40 {
            if let Ok(pid) = get_pid(server.addr) {
                answered.insert(pid as i32);
            }
        }
        let all_workers = answered.iter().all(|p| workers.contains(p));
        let gunicorn_listen: Vec<String> = server
            .proc
            .as_ref()
            .map(|p| p.log().lines())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| Some(l[l.find("Listening at:")?..].to_owned()))
            .collect();
        let elsewhere = listen_inodes(8000);
        notes.push(format!(
            "LISTEN_FDS check: gunicorn arbiters {arbiters:?} (the master's children), their \
             sync workers {workers:?}; 40 requests were answered by {answered:?} ({}); \
             gunicorn logged {:?}; sockets listening on gunicorn's default port 8000: {}",
            if all_workers {
                "all gunicorn workers under the master"
            } else {
                "NOT all gunicorn workers under the master"
            },
            gunicorn_listen,
            elsewhere.len()
        ));
    }
    notes
}

// ---------------------------------------------------------------------------------------
// Steady throughput.

/// One run's wrk results, per mode (index 0: new connection, 1: keep-alive).
#[derive(Debug, Default)]
struct Steady {
    runs: [Vec<WrkRun>; 2],
    /// The manager's CPU ticks during its own wrk runs.
    manager_ticks: [u64; 2],
}

impl Steady {
    fn median(&self, mode: usize) -> f64 {
        let v: Vec<f64> = self.runs[mode].iter().map(|r| r.rps).collect();
        stats::median(&v)
    }
}

/// wrk against every server, interleaved: in each repetition every server once, the order
/// rotating by one per repetition.
fn steady(ctx: &Ctx, servers: &mut [Server]) -> Result<Vec<Steady>, String> {
    let secs = ctx.opts.duration_s;
    let reps = ctx.opts.reps;
    let n = servers.len();
    let mut out: Vec<Steady> = (0..n).map(|_| Steady::default()).collect();
    // Warm-up, not counted.
    for &(_, close) in &MODES {
        for s in servers.iter() {
            wrk(ctx, s.addr, close, 1)?;
        }
    }
    for (mi, &(mode, close)) in MODES.iter().enumerate() {
        for rep in 0..reps {
            let mut line = Vec::new();
            for k in 0..n {
                let i = (k + rep) % n;
                let pid = servers[i].manager_pid();
                let t0 = proc::cpu_ticks(pid).unwrap_or(0);
                let r = wrk(ctx, servers[i].addr, close, secs)?;
                let t1 = proc::cpu_ticks(pid).unwrap_or(0);
                line.push(format!("{} {:.0}", servers[i].kind.key(), r.rps));
                out[i].manager_ticks[mi] += t1.saturating_sub(t0);
                out[i].runs[mi].push(r);
            }
            for s in servers.iter_mut() {
                s.check_alive()?;
                s.workers();
            }
            eprintln!(
                "bench: peers {} {} {}/{reps}: {}",
                servers[0].kind.app().key(),
                mode_name(mode),
                rep + 1,
                line.join(", ")
            );
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Reload storms.

/// What one `pm2 reload app` command did.
#[derive(Debug, Clone)]
struct Pm2Cmd {
    took: Option<Duration>,
    code: Option<i32>,
    refused: bool,
    said: String,
}

/// One reload request.
#[derive(Debug)]
struct Request {
    at: Duration,
    /// A reload was in flight when it was sent (master-process: from its log; pm2: an
    /// earlier `pm2 reload` still running; gunicorn: not known).
    in_flight: Option<bool>,
    old: Vec<i32>,
    latency: Option<Duration>,
    pm2: Option<Pm2Cmd>,
}

impl Request {
    /// Whether the manager took it (pm2 refuses a reload while one is in progress).
    fn accepted(&self) -> bool {
        self.pm2.as_ref().is_none_or(|c| c.code == Some(0))
    }
}

/// One storm's results.
#[derive(Debug)]
struct StormRun {
    mode: Mode,
    load: loadgen::Report,
    requests: Vec<Request>,
    settled: bool,
    wall: Duration,
    /// master-process: (started, done, failed, queued) reloads in its log during the storm.
    master_counts: Option<(usize, usize, usize, usize)>,
    /// master-process: WARN/ERROR lines during the storm.
    warnings: Vec<String>,
    workers_after: usize,
}

/// Waits until every process behind `fds` has exited (the instant the last one did), or
/// `None` at `deadline` or once `cancel` is set.
fn wait_gone(fds: Vec<OwnedFd>, deadline: Instant, cancel: &AtomicBool) -> Option<Instant> {
    if fds.is_empty() {
        return None;
    }
    let mut pending = fds;
    let mut last = Instant::now();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || cancel.load(Ordering::Relaxed) {
            return None;
        }
        let mut polled: Vec<libc::pollfd> = pending
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = left.min(Duration::from_millis(100)).as_millis().max(1) as libc::c_int;
        // SAFETY: `polled` is a valid array of `polled.len()` pollfd structures.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait) };
        if n > 0 {
            last = Instant::now();
            let mut i = 0;
            pending.retain(|_| {
                let keep = polled[i].revents == 0;
                i += 1;
                keep
            });
        }
    }
    Some(last)
}

/// A `pm2 reload app` still running.
struct Running {
    index: usize,
    proc: Proc,
    sent: Instant,
    waiter: JoinHandle<Option<Instant>>,
}

fn finish_cmd(r: Running) -> (usize, Pm2Cmd) {
    let exited = r.waiter.join().unwrap_or(None);
    let mut p = r.proc;
    let status = p.stop(Duration::ZERO);
    if let Some(out) = p.out() {
        out.wait_closed(Duration::from_secs(2));
    }
    p.log().wait_closed(Duration::from_secs(2));
    let said = last_lines(&p, 2);
    let refused = said.contains("already in progress");
    (
        r.index,
        Pm2Cmd {
            took: exited.map(|t| t.saturating_duration_since(r.sent)),
            code: status.code(),
            refused,
            said,
        },
    )
}

fn storm(ctx: &Ctx, server: &mut Server, mode: Mode) -> Result<StormRun, String> {
    let secs = ctx.opts.storm_secs;
    let pid = server.manager_pid();
    let log = server.proc.as_ref().map(|p| Arc::clone(p.log()));
    let log_from = log.as_ref().map_or(0, |l| l.len());
    let master_counts = |log: &crate::procs::Log| reload_counts(&log.lines()[log_from..]);
    eprintln!(
        "bench: peers storm {} {}: {} (pid {pid}) on {}, {secs} reloads ({})",
        server.kind.app().key(),
        mode_name(mode),
        server.kind.label(),
        server.addr,
        server.kind.reload_how()
    );
    let mut cfg = loadgen::Config::new(loadgen::Target::Tcp(server.addr));
    cfg.connections = CONNECTIONS;
    cfg.mode = mode;
    cfg.request_timeout = Duration::from_secs(2);
    let load = loadgen::start(cfg);
    if !load.wait_for_requests(200, Duration::from_secs(10)) {
        return Err(format!(
            "the load did not reach 200 requests in 10 s: {}",
            load.stop()
        ));
    }
    // Gives up the waits for old workers; `cmd_cancel`, those for `pm2 reload` commands.
    let cancel = Arc::new(AtomicBool::new(false));
    let cmd_cancel = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut requests: Vec<Request> = Vec::new();
    let mut waiters: Vec<JoinHandle<Option<Instant>>> = Vec::new();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut running: Vec<Running> = Vec::new();
    let mut done_cmds: Vec<(usize, Pm2Cmd)> = Vec::new();
    let reap = |running: &mut Vec<Running>, done: &mut Vec<(usize, Pm2Cmd)>| {
        let mut i = 0;
        while i < running.len() {
            if running[i].waiter.is_finished() {
                done.push(finish_cmd(running.remove(i)));
            } else {
                i += 1;
            }
        }
    };
    for i in 0..secs {
        sleep_until(t0 + Duration::from_secs(i));
        reap(&mut running, &mut done_cmds);
        let old = server.workers();
        // Descriptors first: from here on a pid cannot be reused under us.
        let fds: Vec<(i32, OwnedFd)> = old
            .iter()
            .filter_map(|&p| pidfd_open(p).ok().map(|fd| (p, fd)))
            .collect();
        let in_flight = match (server.kind, &log) {
            (Kind::Pm2, _) => Some(!running.is_empty()),
            (_, Some(log)) if server.kind.master() => {
                let (started, done, failed, _) = master_counts(log);
                Some(started > done + failed)
            }
            _ => None,
        };
        let sent = Instant::now();
        if let Some(pm2) = &server.pm2 {
            let cmd = Pm2::command(&pm2.bin, &pm2.home, &["reload", "app"]);
            let p = Proc::spawn("pm2 reload", cmd, true, ctx.opts.verbose)?;
            let fd = pidfd_open(p.pid()).map_err(|e| format!("pidfd of pm2 reload: {e}"))?;
            let cancel = Arc::clone(&cmd_cancel);
            running.push(Running {
                index: requests.len(),
                proc: p,
                sent,
                waiter: thread::spawn(move || {
                    wait_gone(vec![fd], sent + SETTLE_TIMEOUT + EXIT_WAIT, &cancel)
                }),
            });
        } else {
            // SAFETY: kill(2) on our own child (the master or gunicorn's arbiter).
            if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
                return Err(format!(
                    "cannot send SIGHUP to {pid}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        let old: Vec<i32> = fds.iter().map(|(p, _)| *p).collect();
        let fds: Vec<OwnedFd> = fds.into_iter().map(|(_, fd)| fd).collect();
        let waiter_cancel = Arc::clone(&cancel);
        waiters.push(thread::spawn(move || {
            wait_gone(fds, sent + EXIT_WAIT, &waiter_cancel)
        }));
        sent_at.push(sent);
        requests.push(Request {
            at: sent - t0,
            in_flight,
            old,
            latency: None,
            pm2: None,
        });
    }
    sleep_until(t0 + Duration::from_secs(secs));
    // Let every reload asked for end.
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    let settled = match server.kind {
        Kind::Pm2 => {
            while !running.is_empty() && Instant::now() < settle_deadline {
                reap(&mut running, &mut done_cmds);
                thread::sleep(Duration::from_millis(20));
            }
            let all = running.is_empty();
            cmd_cancel.store(true, Ordering::Relaxed);
            for r in running.drain(..) {
                done_cmds.push(finish_cmd(r));
            }
            all
        }
        Kind::GunicornTwo => loop {
            if server.workers().len() == WORKERS {
                break true;
            }
            if Instant::now() >= settle_deadline {
                break false;
            }
            thread::sleep(Duration::from_millis(20));
        },
        _ => log.as_ref().is_some_and(|log| {
            log.wait_until(SETTLE_TIMEOUT, |lines| {
                let (started, done, failed, _) = reload_counts(&lines[log_from.min(lines.len())..]);
                started == done + failed
            })
        }),
    };
    for (index, cmd) in done_cmds {
        if let Some(req) = requests.get_mut(index) {
            req.pm2 = Some(cmd);
        }
    }
    // Old workers still draining get a little longer, then the waits are given up. A
    // refused `pm2 reload` replaced nothing: its old workers are not waited for.
    let grace = Instant::now() + EXIT_GRACE;
    while Instant::now() < grace
        && !waiters
            .iter()
            .zip(&requests)
            .all(|(w, r)| w.is_finished() || !r.accepted())
    {
        thread::sleep(Duration::from_millis(20));
    }
    cancel.store(true, Ordering::Relaxed);
    for ((req, waiter), sent) in requests.iter_mut().zip(waiters).zip(sent_at) {
        let exited = waiter.join().unwrap_or(None);
        req.latency = exited.map(|t| t.saturating_duration_since(sent));
    }
    let wall = t0.elapsed();
    let report = load.stop();
    server.check_alive()?;
    let workers_after = server.workers().len();
    let (master_counts, warnings) = match &log {
        Some(log) if server.kind.master() => {
            let lines = log.lines();
            let lines = &lines[log_from.min(lines.len())..];
            (
                Some(reload_counts(lines)),
                lines
                    .iter()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .cloned()
                    .collect(),
            )
        }
        _ => (None, Vec::new()),
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
        requests,
        settled,
        wall,
        master_counts,
        warnings,
        workers_after,
    })
}

// ---------------------------------------------------------------------------------------
// One app, every manager.

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

fn measure_app(ctx: &Ctx, tools: &Tools, run: &mut AppRun) -> Result<(), String> {
    let kinds: Vec<Kind> = match run.app {
        App::Node => {
            if tools.node.is_none() {
                run.skipped
                    .push("Node.js: node is not installed".to_owned());
                return Ok(());
            }
            let mut k = vec![Kind::NodeBare];
            match &tools.pm2 {
                Ok(_) => k.push(Kind::Pm2),
                Err(e) => run.skipped.push(format!("pm2: {e}")),
            }
            k.push(Kind::MasterNode);
            k
        }
        App::Python => {
            if let Err(e) = &tools.gunicorn {
                run.skipped
                    .push(format!("Python WSGI (every run uses gunicorn): {e}"));
                return Ok(());
            }
            vec![Kind::GunicornOne, Kind::GunicornTwo, Kind::MasterGunicorn]
        }
    };
    let mut servers = Vec::new();
    for kind in kinds {
        match start(ctx, tools, kind) {
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
    let master_from: Vec<usize> = servers
        .iter()
        .map(|s| s.proc.as_ref().map_or(0, |p| p.log().len()))
        .collect();
    let steadies = steady(ctx, &mut servers)?;
    for ((server, steady), from) in servers.iter_mut().zip(steadies).zip(master_from) {
        let odd_lines = match (&server.proc, server.kind.master()) {
            (Some(p), true) => p.log().lines()[from..]
                .iter()
                .filter(|l| l.contains("master_process"))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        run.rows.push(Row {
            kind: server.kind,
            command: server.command.clone(),
            steady,
            storms: Vec::new(),
            storm_errors: Vec::new(),
            rss_before_kb: proc::status_kb(server.manager_pid(), "VmRSS").ok(),
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
        if server.kind.baseline() {
            continue;
        }
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
        row.rss_kb = proc::status_kb(pid, "VmRSS").ok();
        row.hwm_kb = proc::status_kb(pid, "VmHWM").ok();
        row.threads = proc::threads(pid).ok();
        row.exit = server.stop();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The report.

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
    let mut kinds = Vec::new();
    for (name, n) in [
        ("refused", r.refused),
        ("reset", r.reset),
        ("closed early", r.closed_early),
        ("timeout", r.timeout),
        ("non-2xx", r.bad_status),
        ("other", r.other),
    ] {
        if n > 0 {
            kinds.push(format!("{name} {n}"));
        }
    }
    let mut cell = format!("{} of {}", r.failed(), r.total());
    if !kinds.is_empty() {
        cell.push_str(&format!(" ({})", kinds.join(", ")));
    }
    cell
}

/// Latencies (ms) of the accepted requests of every storm of a row.
fn latencies(row: &Row) -> Vec<f64> {
    row.storms
        .iter()
        .flat_map(|s| &s.requests)
        .filter(|r| r.accepted())
        .filter_map(|r| r.latency.map(ms))
        .collect()
}

fn latency_cell(row: &Row) -> String {
    if row.storms.is_empty() {
        return "—".to_owned();
    }
    let lat = latencies(row);
    let total: usize = row.storms.iter().map(|s| s.requests.len()).sum();
    let accepted: usize = row
        .storms
        .iter()
        .flat_map(|s| &s.requests)
        .filter(|r| r.accepted())
        .count();
    let mut cell = if lat.is_empty() {
        "none measured".to_owned()
    } else {
        format!("{:.0} ms", stats::median(&lat))
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
    if m.is_nan() {
        return "—".to_owned();
    }
    match base {
        _ if row.kind.baseline() => format!("{m:.0} (1, baseline)"),
        Some(b) => format!("{m:.0} ({:.2})", m / b.steady.median(mode)),
        None => format!("{m:.0}"),
    }
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_json(row: &Row, base: Option<&Row>) -> Json {
    let steady = |mi: usize| {
        let rps: Vec<f64> = row.steady.runs[mi].iter().map(|r| r.rps).collect();
        let median = stats::median(&rps);
        Json::obj([
            ("rps", Json::nums(&rps)),
            ("median_rps", Json::Num(median)),
            (
                "ratio_to_baseline",
                base.map_or(Json::Null, |b| Json::Num(median / b.steady.median(mi))),
            ),
            (
                "manager_cpu_ms",
                Json::Num(proc::ticks_ms(row.steady.manager_ticks[mi])),
            ),
            (
                "wrk",
                Json::Arr(row.steady.runs[mi].iter().map(wrk_json).collect()),
            ),
        ])
    };
    let storms = row
        .storms
        .iter()
        .map(|s| (mode_key(s.mode).to_owned(), storm_json(s)))
        .collect::<Vec<_>>();
    Json::obj([
        ("manager", Json::str(row.kind.label())),
        ("command", Json::str(&row.command)),
        ("close", steady(0)),
        ("keepalive", steady(1)),
        ("storms", Json::Obj(storms)),
        (
            "storm_errors",
            Json::Arr(row.storm_errors.iter().map(Json::str).collect()),
        ),
        (
            "reload_latency_median_ms",
            Json::Num(stats::median(&latencies(row))),
        ),
        (
            "manager_vm_rss_kb_before_storms",
            row.rss_before_kb.map_or(Json::Null, Json::uint),
        ),
        (
            "manager_vm_rss_kb",
            row.rss_kb.map_or(Json::Null, Json::uint),
        ),
        (
            "manager_vm_hwm_kb",
            row.hwm_kb.map_or(Json::Null, Json::uint),
        ),
        (
            "manager_threads",
            row.threads.map_or(Json::Null, Json::uint),
        ),
        (
            "socket",
            Json::Arr(row.socket_notes.iter().map(Json::str).collect()),
        ),
        ("exit", Json::str(&row.exit)),
    ])
}

fn storm_json(s: &StormRun) -> Json {
    let master = s
        .master_counts
        .map_or(Json::Null, |(started, done, failed, queued)| {
            Json::obj([
                ("started", Json::uint(started as u64)),
                ("done", Json::uint(done as u64)),
                ("failed", Json::uint(failed as u64)),
                ("queued", Json::uint(queued as u64)),
            ])
        });
    Json::obj([
        ("loadgen", Json::Raw(s.load.to_json())),
        ("settled", Json::Bool(s.settled)),
        ("wall_secs", Json::Num(s.wall.as_secs_f64())),
        ("workers_after", Json::uint(s.workers_after as u64)),
        ("master_reloads", master),
        (
            "requests",
            Json::Arr(s.requests.iter().map(request_json).collect()),
        ),
    ])
}

fn request_json(r: &Request) -> Json {
    let ms_or_null = |d: Option<Duration>| d.map_or(Json::Null, |d| Json::Num(ms(d)));
    let pm2 = r.pm2.as_ref().map_or(Json::Null, |c| {
        Json::obj([
            ("took_ms", ms_or_null(c.took)),
            (
                "exit_code",
                c.code.map_or(Json::Null, |c| Json::Int(c.into())),
            ),
            ("refused", Json::Bool(c.refused)),
            ("output", Json::str(&c.said)),
        ])
    });
    Json::obj([
        ("at_ms", Json::Num(ms(r.at))),
        ("in_flight", r.in_flight.map_or(Json::Null, Json::Bool)),
        (
            "old_pids",
            Json::Arr(r.old.iter().map(|&p| Json::Int(p.into())).collect()),
        ),
        ("latency_ms", ms_or_null(r.latency)),
        ("pm2_reload", pm2),
    ])
}

fn wrk_json(r: &WrkRun) -> Json {
    let [connect, read, write, timeout] = r.socket_errors;
    Json::obj([
        ("requests_per_sec", Json::Num(r.rps)),
        ("requests", Json::uint(r.requests)),
        (
            "socket_errors",
            Json::uint(connect + read + write + timeout),
        ),
        ("non_2xx", Json::uint(r.non2xx)),
    ])
}

/// The notes on one (app, manager): every figure behind the table's cells.
fn row_notes(n: &mut Vec<String>, app: App, row: &Row, base: Option<&Row>) {
    let name = format!("{} / {}", app.name(), row.kind.label());
    n.push(format!("- **{name}**: `{}`.", row.command));
    for (mi, (mode, _)) in MODES.iter().enumerate() {
        let rps: Vec<f64> = row.steady.runs[mi].iter().map(|r| r.rps).collect();
        let mut line = format!(
            "  - {}: req/s {} (spread {:.0}%)",
            mode_name(*mode),
            list(&rps, 0),
            stats::spread(&rps) * 100.0
        );
        if let Some(b) = base.filter(|_| !row.kind.baseline()) {
            let pairs: Vec<f64> = row.steady.runs[mi]
                .iter()
                .zip(&b.steady.runs[mi])
                .map(|(r, b)| r.rps / b.rps)
                .collect();
            line.push_str(&format!(
                "; per-repetition ratios {} (median {:.2})",
                list(&pairs, 2),
                stats::median(&pairs)
            ));
        }
        let requests: u64 = row.steady.runs[mi].iter().map(|r| r.requests).sum();
        if !row.kind.baseline() && requests > 0 {
            let cpu = proc::ticks_ms(row.steady.manager_ticks[mi]);
            line.push_str(&format!(
                "; manager CPU {:.0} ms over its wrk runs ({:.1} µs per request)",
                cpu,
                cpu * 1000.0 / requests as f64
            ));
        }
        let errors: u64 = row.steady.runs[mi]
            .iter()
            .map(|r| r.socket_errors.iter().sum::<u64>() + r.non2xx)
            .sum();
        if errors > 0 {
            line.push_str(&format!(
                "; wrk errors {errors} (socket errors + non-2xx, all runs)"
            ));
        }
        let median = stats::median(&rps);
        let odd: Vec<String> = rps
            .iter()
            .enumerate()
            .filter(|(_, v)| (**v / median - 1.0).abs() > 0.3)
            .map(|(i, v)| format!("run {} ({v:.0})", i + 1))
            .collect();
        if !odd.is_empty() {
            line.push_str(&format!(
                "; more than 30% from the median: {} (other work on the machine, or stalls \
                 of the client's connects; the median discounts them)",
                odd.join(", ")
            ));
        }
        n.push(format!("{line}."));
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
    for note in &row.socket_notes {
        n.push(format!("  - {note}."));
    }
    if !row.odd_lines.is_empty() {
        n.push(format!(
            "  - the master logged {} line(s) during the steady runs (expected none), \
             e.g. {}",
            row.odd_lines.len(),
            row.odd_lines
                .iter()
                .take(3)
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// The notes on one storm.
fn storm_notes(n: &mut Vec<String>, st: &StormRun) {
    let r = &st.load;
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
    let lat: Vec<f64> = st
        .requests
        .iter()
        .filter(|q| q.accepted())
        .filter_map(|q| q.latency.map(ms))
        .collect();
    if !lat.is_empty() {
        line.push_str(&format!(
            "; reload latency median {:.0} ms, p90 {:.0}, max {:.0} ({} samples)",
            stats::median(&lat),
            stats::percentile(&lat, 90.0),
            stats::max(&lat),
            lat.len()
        ));
    }
    let no_exit = st
        .requests
        .iter()
        .filter(|q| q.accepted() && q.latency.is_none())
        .count();
    if no_exit > 0 {
        line.push_str(&format!(
            "; {no_exit} accepted request(s) whose old workers were not all seen to \
             exit"
        ));
    }
    if let Some((started, done, failed, queued)) = st.master_counts {
        let during = st
            .requests
            .iter()
            .filter(|q| q.in_flight == Some(true))
            .count();
        line.push_str(&format!(
            "; master: {} SIGHUPs ({during} during a reload in flight), reloads \
             started {started}, done {done}, failed {failed}, queued {queued}",
            st.requests.len()
        ));
    }
    let cmds: Vec<&Pm2Cmd> = st.requests.iter().filter_map(|q| q.pm2.as_ref()).collect();
    if !cmds.is_empty() {
        let ok = cmds.iter().filter(|c| c.code == Some(0)).count();
        let refused = cmds.iter().filter(|c| c.refused).count();
        let took: Vec<f64> = cmds
            .iter()
            .filter(|c| c.code == Some(0))
            .filter_map(|c| c.took.map(ms))
            .collect();
        let overlapping = st
            .requests
            .iter()
            .filter(|q| q.in_flight == Some(true))
            .count();
        let refused = if refused > 0 {
            format!("{refused} refused by pm2 (\"Reload already in progress\")")
        } else {
            "none refused".to_owned()
        };
        line.push_str(&format!(
            "; `pm2 reload app`: {} run, {ok} succeeded, {refused}, {} failed otherwise; \
             {overlapping} started while an earlier one still ran; a successful one took \
             median {:.0} ms, max {:.0} ms",
            cmds.len(),
            cmds.len() - ok - cmds.iter().filter(|c| c.refused).count(),
            stats::median(&took),
            stats::max(&took)
        ));
        let other: Vec<&str> = cmds
            .iter()
            .filter(|c| c.code != Some(0) && !c.refused)
            .map(|c| c.said.as_str())
            .take(3)
            .collect();
        if !other.is_empty() {
            line.push_str(&format!(" (e.g. {other:?})"));
        }
    }
    if !st.settled {
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
    if !st.warnings.is_empty() {
        n.push(format!(
            "    - the master logged {} WARN/ERROR line(s), e.g. `{}`",
            st.warnings.len(),
            st.warnings[0]
        ));
    }
}

fn section(ctx: &Ctx, tools: &Tools, apps: &[AppRun], took: Duration) -> Section {
    let o = &ctx.opts;
    let mut s = Section::new(
        "peers",
        "Peers: the same apps under pm2, gunicorn and master-process",
    );
    s.intro.push(format!(
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
         LISTEN_FDS (systemd socket activation; checked below)."
    ));
    s.intro.push(format!(
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
    ));
    for e in apps.iter().flat_map(|a| &a.errors) {
        s.errors.push(e.clone());
    }
    for a in apps {
        for row in &a.rows {
            for e in &row.storm_errors {
                s.errors
                    .push(format!("{} / {}: {e}", a.app.name(), row.kind.label()));
            }
        }
    }
    let mut n = Vec::new();
    n.push(
        "| App | Manager | req/s new-conn (ratio) | req/s keep-alive (ratio) | failed in storm, \
         new-conn | failed in storm, keep-alive | reload latency median | manager RSS |"
            .to_owned(),
    );
    n.push("|---|---|---:|---:|---:|---:|---:|---:|".to_owned());
    for a in apps {
        let base = a.rows.iter().find(|r| r.kind.baseline());
        for row in &a.rows {
            let storm = |mode: Mode| row.storms.iter().find(|s| s.mode == mode);
            n.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                a.app.name(),
                row.kind.label(),
                rps_cell(row, base, 0),
                rps_cell(row, base, 1),
                failed_cell(storm(Mode::Close)),
                failed_cell(storm(Mode::KeepAlive)),
                latency_cell(row),
                if row.kind.baseline() {
                    "—".to_owned()
                } else {
                    kib(row.rss_kb)
                },
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
    let versions: Vec<String> = tools
        .versions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    n.push(format!("- Versions: {}.", versions.join("; ")));
    for note in &tools.notes {
        n.push(format!("- Install: {note}."));
    }
    n.push(format!(
        "- This section took {:.0} s ({}).",
        took.as_secs_f64(),
        apps.iter()
            .map(|a| format!("{} {:.0} s", a.app.name(), a.took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for a in apps {
        let base = a.rows.iter().find(|r| r.kind.baseline());
        for row in &a.rows {
            row_notes(&mut n, a.app, row, base);
        }
    }
    n.push(
        "- pm2's per-request path: in cluster mode the God daemon is Node's cluster primary \
         with the round-robin scheduler (SCHED_RR): it alone holds the listening socket (see \
         the socket line of its row), accepts every connection and passes it to a worker over \
         IPC, hence its CPU per request above and a lower new-conn ratio. gunicorn's arbiter \
         and master-process only hold the socket; their workers accept on it directly."
            .to_owned(),
    );
    n.push(
        "- master-process × gunicorn and readiness: gunicorn's arbiter sends `READY=1` \
         (`STATUS=Gunicorn arbiter booted`) on the worker's NOTIFY_SOCKET as soon as it has its \
         sockets, before its worker has forked or imported the app. Under the default \
         `--ready listening` the master ignores it and waits until the probe sees the sync \
         worker's accept loop, so a release whose import fails never replaces a working one \
         (`READY=1` counts under `--ready notify` alone)."
            .to_owned(),
    );
    n.push(
        "- gunicorn's sync workers never keep a connection alive (every answer carries \
         `Connection: close`), so its keep-alive figures are new connections too: wrk and \
         loadgen reconnect after each answer, and a server closing after an answer is not a \
         failure for loadgen."
            .to_owned(),
    );
    n.push(format!(
        "- Noise: wrk (2 threads), the servers and the kernel share {} CPU(s); absolute req/s \
         vary between runs (up to 30% seen on such machines), so compare ratios from the same \
         run. The `pm2 reload` command is itself a Node process (~0.3 s of CPU to start) that \
         competes with the load during pm2's storm.",
        ctx.machine.cpus
    ));
    s.notes = n;
    s.details = apps
        .iter()
        .map(|a| {
            let base = a.rows.iter().find(|r| r.kind.baseline());
            (
                a.app.key().to_owned(),
                Json::obj(
                    a.rows
                        .iter()
                        .map(|r| (r.kind.key().to_owned(), row_json(r, base))),
                ),
            )
        })
        .collect();
    s.details.push((
        "versions".to_owned(),
        Json::obj(
            tools
                .versions
                .iter()
                .map(|(k, v)| (k.clone(), Json::str(v))),
        ),
    ));
    s.details.push((
        "install".to_owned(),
        Json::Arr(tools.notes.iter().map(Json::str).collect()),
    ));
    s.details
        .push(("took_secs".to_owned(), Json::Num(took.as_secs_f64())));
    s
}

/// Runs the section.
pub fn run(ctx: &Ctx) -> Result<Vec<Section>, String> {
    let started = Instant::now();
    let tools = tools(ctx);
    let apps = vec![
        run_app(ctx, &tools, App::Node),
        run_app(ctx, &tools, App::Python),
    ];
    Ok(vec![section(ctx, &tools, &apps, started.elapsed())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(strip_ansi("\u{1b}[32m[PM2] \u{1b}[39mok"), "[PM2] ok");
        let dir = std::env::temp_dir().join(format!("bench-peers-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let pkg = dir.join("package.json");
        fs::write(
            &pkg,
            "{\n  \"name\": \"pm2\",\n  \"version\": \"7.0.4\",\n}",
        )
        .expect("write");
        assert_eq!(package_version(&pkg).as_deref(), Some("7.0.4"));
        fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(
            master_addr(
                "2026-11-25T17:38:58Z  INFO master_process::master: listening on 127.0.0.1:18555 name=\"unknown\""
            ),
            Some("127.0.0.1:18555".parse().expect("addr"))
        );
        assert!(listen_inodes(0).is_empty() || listen_inodes(0).iter().all(|&i| i > 0));
    }

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
            pm2: code.map(|code| Pm2Cmd {
                took: None,
                code: Some(code),
                refused: code != 0,
                said: String::new(),
            }),
        };
        let st = StormRun {
            mode: Mode::Close,
            load,
            requests: vec![
                request(100, Some(0)),
                request(300, Some(0)),
                request(5000, Some(1)),
            ],
            settled: true,
            wall: Duration::from_secs(1),
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
    }
}
