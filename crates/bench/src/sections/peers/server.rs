//! Starting and stopping each run of an app (bare, under pm2, gunicorn or master-process),
//! who holds its listening socket, and how a storm reloads it.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::install::Tools;
use super::pm2::{self, Pm2};
use super::{Kind, SETTLE_TIMEOUT, START_TIMEOUT, WORKERS};
use crate::lines::{Log, Reloads, settle};
use crate::process::{Proc, exit_text, sweep};
use crate::storm::{Cmd, Target};
use crate::{Ctx, master, setup, sys};

/// A running app under one manager (or none).
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    /// Its command line, for people.
    pub command: String,
    pub addr: SocketAddr,
    /// The process we started and supervise (bare node, gunicorn's arbiter, the master);
    /// `None` for pm2, whose daemon detaches.
    proc: Option<Proc>,
    pm2: Option<Pm2>,
    /// Worker pids seen (direct children of the manager), swept at the end.
    pub seen: BTreeSet<i32>,
    /// Lines that show how the socket is shared, written once it serves.
    pub socket_notes: Vec<String>,
}

impl Server {
    pub fn manager_pid(&self) -> i32 {
        match (&self.pm2, &self.proc) {
            (Some(p), _) => p.daemon,
            (None, Some(p)) => p.pid(),
            (None, None) => 0,
        }
    }

    fn log(&self) -> Option<&Arc<Log>> {
        self.proc.as_ref().map(Proc::log)
    }

    /// How many lines the manager has written on stderr.
    pub fn log_len(&self) -> usize {
        self.log().map_or(0, |l| l.len())
    }

    /// The manager's stderr lines from line `from` on.
    pub fn log_lines(&self, from: usize) -> Vec<String> {
        let lines = self.log().map(|l| l.lines()).unwrap_or_default();
        lines[from.min(lines.len())..].to_vec()
    }

    /// The manager's worker processes (none for the bare app).
    pub fn workers(&mut self) -> BTreeSet<i32> {
        if self.kind == Kind::NodeBare {
            return BTreeSet::new();
        }
        let marker = self.kind.marker();
        let children = sys::children(self.manager_pid()).into_iter();
        let live: BTreeSet<i32> = children
            .filter(|&p| sys::cmdline(p).contains(marker))
            .collect();
        self.seen.extend(&live);
        live
    }

    pub fn check_alive(&mut self) -> Result<(), String> {
        let name = self.kind.label();
        if let Some(p) = &mut self.proc {
            p.check_alive(name)?;
        }
        match &self.pm2 {
            Some(p) if !sys::alive(p.daemon) => {
                Err(format!("{name}: pm2's daemon {} is gone", p.daemon))
            }
            _ => Ok(()),
        }
    }

    /// Stops everything; returns how the manager ended.
    pub fn stop(&mut self) -> String {
        let mut said = String::new();
        if let Some(pm2) = &mut self.pm2 {
            said = pm2.kill();
            if said.is_empty() {
                said = "`pm2 kill`: stopped".to_owned();
            }
        }
        if let Some(p) = &mut self.proc {
            let long = self.kind.master() || self.kind.cluster() || self.kind == Kind::GunicornTwo;
            let grace = Duration::from_secs(if long { 15 } else { 5 });
            said = format!("SIGTERM: {}", exit_text(p.stop(grace)));
        }
        for pid in sweep(
            self.seen.iter().copied(),
            self.kind.marker(),
            "peers: worker",
        ) {
            said.push_str(&format!("; worker {pid} outlived it (killed)"));
        }
        said
    }

    /// Stops everything ([`Server::stop`]) and judges how the manager ended: `Ok(None)`
    /// cleanly, `Ok(Some(note))` a cluster primary (the reference's way) that outlived its
    /// SIGTERM (its own shutdown, not the bench's: a note, not an error), `Err` otherwise.
    pub fn stop_judged(&mut self) -> Result<Option<String>, String> {
        let said = self.stop();
        let clean = said.is_empty() || said.contains("exit code 0") || said.contains("stopped");
        match (clean, self.kind.cluster()) {
            (true, _) => Ok(None),
            (false, true) => Ok(Some(format!(
                "it did not exit within 15 s of SIGTERM, and was killed ({said})"
            ))),
            (false, false) => Err(format!("stopping it: {said}")),
        }
    }

    /// The storm [`Target`] for this server, its log read from line `from` on.
    pub fn storming(&mut self, from: usize) -> Storming<'_> {
        let log = self.log().cloned();
        let reloads = self.pm2.as_ref().map(Pm2::reloads);
        Storming {
            server: self,
            log,
            from,
            reloads,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server under a storm: SIGHUPs to its manager, or `pm2 reload app` commands.
pub struct Storming<'a> {
    server: &'a mut Server,
    log: Option<Arc<Log>>,
    from: usize,
    reloads: Option<pm2::Reloads>,
}

impl Target for Storming<'_> {
    fn workers(&mut self) -> BTreeSet<i32> {
        if let Some(r) = &mut self.reloads {
            r.reap();
        }
        self.server.workers()
    }

    /// master-process: from its log; pm2: an earlier `pm2 reload` still running; gunicorn:
    /// not known.
    fn in_flight(&mut self) -> Option<bool> {
        match (&self.reloads, &self.log) {
            (Some(r), _) => Some(r.in_flight()),
            (None, Some(log)) if self.server.kind.master() => {
                let lines = log.lines();
                Some(Reloads::count(&lines[self.from.min(lines.len())..]).in_flight())
            }
            _ => None,
        }
    }

    fn reload(&mut self, index: usize, sent: Instant) -> Result<(), String> {
        if let Some(r) = &mut self.reloads {
            return r.start(index, sent);
        }
        let pid = self.server.manager_pid();
        // SAFETY: kill(2) on our own child (the master or gunicorn's arbiter).
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("cannot send SIGHUP to {pid}: {e}"));
        }
        Ok(())
    }

    fn settle(&mut self) -> bool {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        if let Some(r) = &mut self.reloads {
            return r.settle(deadline);
        }
        if self.server.kind.cluster() || self.server.kind == Kind::GunicornTwo {
            while self.server.workers().len() != WORKERS {
                if Instant::now() >= deadline {
                    return false;
                }
                thread::sleep(Duration::from_millis(20));
            }
            return true;
        }
        self.log
            .as_ref()
            .is_some_and(|log| settle(log, self.from, SETTLE_TIMEOUT))
    }

    fn commands(&mut self) -> Vec<(usize, Cmd)> {
        self.reloads
            .as_mut()
            .map(pm2::Reloads::take)
            .unwrap_or_default()
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it first).
fn free_port() -> Result<u16, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port());
    port.map_err(|e| format!("cannot find a free port: {e}"))
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
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    last.and_then(|l| l.trim().parse().ok())
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

/// Where the apps are.
struct Dirs {
    /// The test suite's Node.js app, `tests/fixtures/node`.
    node: PathBuf,
    /// `crates/bench/apps`.
    apps: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = setup::workspace_root();
        Dirs {
            node: root.join("tests/fixtures/node"),
            apps: root.join("crates/bench/apps"),
        }
    }

    /// The naive app, `crates/bench/apps/node/naive.js`.
    fn naive(&self) -> PathBuf {
        self.apps.join("node/naive.js")
    }
}

/// Starts one run of an app, and waits until it serves.
pub fn start(ctx: &Ctx, tools: &Tools, kind: Kind) -> Result<Server, String> {
    let mut server = Server {
        kind,
        command: String::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        proc: None,
        pm2: None,
        seen: BTreeSet::new(),
        socket_notes: Vec::new(),
    };
    let (dirs, echo) = (Dirs::new(), ctx.opts.verbose);
    let node = || tools.node.clone().ok_or("node is not installed");
    match kind {
        Kind::NodeBare => {
            let port = free_port()?;
            let mut cmd = Command::new(node()?);
            cmd.arg(dirs.node.join("server.js")).current_dir(&dirs.node);
            cmd.env("PORT", port.to_string()).env("HOST", "127.0.0.1");
            server.command = format!("PORT={port} node server.js");
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut p = Proc::spawn("node (bare)", cmd, false, echo)?;
            p.wait_line("serving", START_TIMEOUT, |l| l.contains("serving "))?;
            server.proc = Some(p);
        }
        Kind::Pm2 | Kind::NaivePm2 => {
            let port = free_port()?;
            let home = tools.peers.join("pm2-home");
            let naive = kind == Kind::NaivePm2;
            let app = if naive { "PEERS_APP=naive " } else { "" };
            server.command = format!(
                "PM2_HOME={} {app}PEERS_PORT={port} pm2 start ecosystem.config.js",
                home.display()
            );
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ecosystem = dirs.apps.join("node/ecosystem.config.js");
            let env: &[(&str, &str)] = if naive {
                &[("PEERS_APP", "naive")]
            } else {
                &[]
            };
            server.pm2 = Some(Pm2::start(
                &tools.pm2.clone()?,
                &home,
                &ecosystem,
                port,
                env,
                echo,
            )?);
        }
        Kind::ClusterRef | Kind::NaiveClusterRef | Kind::Reference | Kind::NaiveReference => {
            let port = free_port()?;
            let (app, app_name) = match kind {
                Kind::ClusterRef | Kind::Reference => (dirs.node.join("server.js"), "server.js"),
                _ => (dirs.naive(), "naive.js"),
            };
            let mut cmd = Command::new(node()?);
            cmd.current_dir(&dirs.node)
                .env("PORT", port.to_string())
                .env("WORKERS", WORKERS.to_string())
                .env("BENCH_APP", &app);
            if app_name == "server.js" {
                cmd.env("HOST", "127.0.0.1");
            }
            let host = if app_name == "server.js" {
                "HOST=127.0.0.1 "
            } else {
                ""
            };
            let name = if kind.cluster() && matches!(kind, Kind::Reference | Kind::NaiveReference) {
                let reference = tools
                    .reference()
                    .ok_or("the reference module is not installed")?;
                cmd.arg(dirs.apps.join("node/reference-app.js"))
                    .env("NODE_PATH", &reference.node_path);
                server.command = format!(
                    "NODE_PATH={} BENCH_APP={app_name} WORKERS={WORKERS} {host}PORT={port} \
                     node reference-app.js",
                    reference.node_path.display()
                );
                "the reference"
            } else {
                cmd.arg(dirs.apps.join("node/cluster-server.js"));
                server.command = format!(
                    "BENCH_APP={app_name} WORKERS={WORKERS} {host}PORT={port} node cluster-server.js"
                );
                "node cluster"
            };
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut p = Proc::spawn(name, cmd, false, echo)?;
            p.wait_line("serving", START_TIMEOUT, |l| l.contains("serving "))?;
            server.proc = Some(p);
        }
        Kind::MasterAdopted | Kind::NaiveMaster | Kind::NaiveMasterNoDrain => {
            // The app binds PORT itself: the master holds it (explicitly on 127.0.0.1 for
            // the app that binds HOST=127.0.0.1; as the seed-style PORT, what the app binds,
            // for the naive app's `listen(PORT)`).
            let port = free_port()?;
            let mut cmd = Command::new(&ctx.bins.master);
            let (app, what) = if kind == Kind::MasterAdopted {
                let listen = format!("127.0.0.1:{port}");
                cmd.args(["-l", &listen]).env("HOST", "127.0.0.1");
                let app = dirs.node.join("binds/server.js");
                (app, format!("-l {listen} "))
            } else {
                (dirs.naive(), String::new())
            };
            cmd.args(["--control", "off", "-w", &WORKERS.to_string()]);
            let drain = if kind == Kind::NaiveMasterNoDrain {
                cmd.args(["--node-drain", "off"]);
                " --node-drain off"
            } else {
                ""
            };
            cmd.arg("--").arg(node()?).arg(&app);
            cmd.current_dir(app.parent().unwrap_or(&dirs.node));
            cmd.env("PORT", port.to_string());
            let file = app.file_name().unwrap_or_default().to_string_lossy();
            let host = if kind == Kind::MasterAdopted {
                "HOST=127.0.0.1 "
            } else {
                ""
            };
            server.command = format!(
                "{host}PORT={port} master-process {what}-w {WORKERS} --control off{drain} -- \
                 node {file}"
            );
            let (p, _) = master::start(cmd, echo, START_TIMEOUT)?;
            server.proc = Some(p);
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
        }
        Kind::MasterNode | Kind::MasterGunicorn | Kind::MasterNodeAdoptOff => {
            let mut cmd = master::command(&ctx.bins.master, WORKERS);
            if kind == Kind::MasterNodeAdoptOff {
                cmd.args(["--adopt", "off"]);
            }
            cmd.arg("--");
            let app = if kind != Kind::MasterGunicorn {
                cmd.arg(node()?)
                    .arg(dirs.node.join("server.js"))
                    .current_dir(&dirs.node);
                "node server.js"
            } else {
                cmd.arg(tools.gunicorn.clone()?).args([
                    "-w",
                    "1",
                    "--no-control-socket",
                    "app:app",
                ]);
                cmd.current_dir(dirs.apps.join("python"));
                "gunicorn -w 1 --no-control-socket app:app"
            };
            let adopt = if kind == Kind::MasterNodeAdoptOff {
                " --adopt off"
            } else {
                ""
            };
            server.command = format!(
                "master-process -l 127.0.0.1:PORT -w {WORKERS} --control off{adopt} -- {app}"
            );
            let (p, addr) = master::start(cmd, echo, START_TIMEOUT)?;
            (server.proc, server.addr) = (Some(p), addr);
        }
        Kind::GunicornOne | Kind::GunicornTwo => start_gunicorn(&mut server, tools, &dirs, echo)?,
    }
    wait_serving(server.addr, START_TIMEOUT)?;
    server.workers();
    server.socket_notes = socket_check(&mut server);
    Ok(server)
}

/// `gunicorn -w 1` or `-w 2` on its own, with a control socket under `target/bench/peers`.
fn start_gunicorn(
    server: &mut Server,
    tools: &Tools,
    dirs: &Dirs,
    echo: bool,
) -> Result<(), String> {
    let workers = if server.kind == Kind::GunicornOne {
        1
    } else {
        WORKERS
    };
    let port = free_port()?;
    let ctl = tools.peers.join(format!("gunicorn-w{workers}.ctl"));
    let mut cmd = Command::new(tools.gunicorn.clone()?);
    cmd.args([
        "-w",
        &workers.to_string(),
        "-b",
        &format!("127.0.0.1:{port}"),
    ]);
    cmd.arg("--control-socket")
        .arg(&ctl)
        .arg("app:app")
        .current_dir(dirs.apps.join("python"));
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
    Ok(())
}

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
    let holds = |pid: &i32| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want))
        })
    };
    let mut out: Vec<i32> = sys::pids().into_iter().filter(holds).collect();
    out.sort_unstable();
    out
}

fn comm(pid: i32) -> String {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"));
    comm.map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// How the listening socket is shared: one socket on the port, and who holds it; for
/// master-process × gunicorn, also which processes answer.
fn socket_check(server: &mut Server) -> Vec<String> {
    let port = server.addr.port();
    let inodes = listen_inodes(port);
    let manager = server.manager_pid();
    let described: Vec<String> = inodes
        .iter()
        .map(|&ino| {
            let role = |p: i32| {
                if p == manager && server.kind != Kind::NodeBare {
                    " (manager)"
                } else {
                    ""
                }
            };
            let list: Vec<String> = holders(ino)
                .into_iter()
                .map(|p| format!("{} {p}{}", comm(p), role(p)))
                .collect();
            format!("inode {ino}: {}", list.join(", "))
        })
        .collect();
    let mut notes = vec![format!(
        "{} listening socket(s) on port {port}: {}",
        inodes.len(),
        described.join("; ")
    )];
    if server.kind == Kind::MasterGunicorn {
        notes.push(listen_fds_check(server));
    }
    notes
}

/// master-process × gunicorn: the arbiters are the master's children, and their sync workers
/// (not some other gunicorn) answer.
fn listen_fds_check(server: &mut Server) -> String {
    let arbiters = server.workers();
    let workers: BTreeSet<i32> = arbiters.iter().flat_map(|&a| sys::children(a)).collect();
    let answered: BTreeSet<i32> = (0..40)
        .filter_map(|_| get_pid(server.addr).ok())
        .map(|p| p as i32)
        .collect();
    let all_workers = answered.iter().all(|p| workers.contains(p));
    let lines = server.log_lines(0);
    let gunicorn_listen: Vec<String> = lines
        .iter()
        .filter_map(|l| Some(l[l.find("Listening at:")?..].to_owned()))
        .collect();
    format!(
        "LISTEN_FDS check: gunicorn arbiters {arbiters:?} (the master's children), their \
         sync workers {workers:?}; 40 requests were answered by {answered:?} ({}); \
         gunicorn logged {:?}; sockets listening on gunicorn's default port 8000: {}",
        if all_workers {
            "all gunicorn workers under the master"
        } else {
            "NOT all gunicorn workers under the master"
        },
        gunicorn_listen,
        listen_inodes(8000).len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_inodes_are_read() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let inodes = listen_inodes(port);
        assert_eq!(inodes.len(), 1);
        assert_eq!(holders(inodes[0]), [std::process::id() as i32]);
    }
}
