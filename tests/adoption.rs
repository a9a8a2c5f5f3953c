//! Unchanged apps that bind their own port (issue 11): real runtimes (Node.js, through `sh -c`
//! and `npm start`, an Express app installed from npm, Python's http.server and asyncio, a
//! `gcc -static` C server, a Go server) under the real `master-process` binary get the
//! master's socket for their own `bind()`, and lose no request through ten reloads under
//! load; the rules that keep this honest (exact address and family, no widening, one
//! O_NONBLOCK mode, UDP and port 0 left alone) hold, each refusal saying why.
//!
//! The apps drain on SIGTERM as production apps should (stop accepting, answer further
//! requests on open connections with `Connection: close`, close connections idle for a
//! moment, then exit), by their own code or, for the Express app, which has none, by the
//! master's Node.js drain preload; so every load test runs both connection modes at once: a new
//! connection per request, and keep-alive connections. (An app that dies at once on SIGTERM
//! cuts the connections it holds: that is its shutdown, not the master's; see
//! ../shared/research/measuring-reloads.md. None is used here.)
//!
//! Built fixtures (the C and Go servers, the Express app's `node_modules`) are kept under
//! `target/adoption-fixtures/`, built once per content and reused by later tests and runs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::{Load, Mode, Target};
use serde_json::Value;

use crate::support::{
    DEADLINE, Ev, Json, Master, MasterCmd, children, free_port, get, get_unix, listening_on,
    master_bin, num, run_bounded, somaxconn, start_load,
};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The fixtures' source folder.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Where built fixtures are kept: `target/adoption-fixtures`.
fn cache_dir() -> PathBuf {
    let target = Path::new(master_bin())
        .parent()
        .and_then(Path::parent)
        .expect("the master binary is in target/<profile>/");
    let dir = target.join("adoption-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An exclusive lock on the fixture cache, held until dropped (other test processes building
/// the same fixture wait for it, then reuse what it built).
struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn take() -> CacheLock {
        let file = std::fs::File::create(cache_dir().join(".lock")).unwrap();
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a descriptor we own; the lock goes with it.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return CacheLock { _file: file };
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "flock: {e}");
        }
    }
}

/// A short, stable digest of `files` (FNV-1a): a fixture is rebuilt when its sources change.
fn digest(files: &[PathBuf]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for b in bytes
            .iter()
            .chain(f.file_name().unwrap().as_encoded_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// `name-<digest of sources>` in the cache, made by `build(tmp)` once: `build` writes `tmp`
/// (a file or a folder), which is renamed into place only when complete.
fn built(name: &str, sources: &[PathBuf], build: impl FnOnce(&Path)) -> PathBuf {
    let out = cache_dir().join(format!("{name}-{}", digest(sources)));
    if out.exists() {
        return out;
    }
    let _lock = CacheLock::take();
    if out.exists() {
        return out;
    }
    let tmp = cache_dir().join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_file(&tmp);
    build(&tmp);
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Runs a build command to completion; the test fails with its output if it fails.
fn run_build(mut cmd: Command, what: &str) {
    let out = run_bounded(
        {
            cmd.stdin(std::process::Stdio::null());
            cmd
        },
        Duration::from_secs(300),
    );
    assert_eq!(
        out.code, 0,
        "{what} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
}

/// The C server (`tests/fixtures/c/server.c`), built with `gcc -static`.
fn c_server() -> PathBuf {
    let src = fixtures().join("c/server.c");
    built("c-server", std::slice::from_ref(&src), |out| {
        let mut cmd = Command::new("gcc");
        cmd.args(["-static", "-O2", "-pthread", "-o"])
            .arg(out)
            .arg(&src);
        run_build(cmd, "gcc -static (CI installs gcc and libc6-dev)");
    })
}

/// The Go server (`tests/fixtures/go/server.go`), built once with `CGO_ENABLED=0`.
fn go_server() -> PathBuf {
    assert!(
        Command::new("go").arg("version").output().is_ok(),
        "`go` is not installed: `cargo xtask test` installs Debian's golang-go"
    );
    let src = fixtures().join("go/server.go");
    let cache = cache_dir();
    built("go-server", std::slice::from_ref(&src), |out| {
        let mut cmd = Command::new("go");
        cmd.arg("build")
            .arg("-o")
            .arg(out)
            .arg(&src)
            .current_dir(&cache)
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", cache.join("go-cache"))
            .env("GOPATH", cache.join("go-path"))
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off");
        run_build(cmd, "go build");
    })
}

/// The Express app (`tests/fixtures/node/express`) with its dependencies installed from npm
/// (`npm ci` against the committed lock file: pinned versions), once; also run by npm_e2e.
pub fn express_app() -> PathBuf {
    let src = fixtures().join("node/express");
    let files = ["package.json", "package-lock.json", "server.js"].map(|f| src.join(f));
    built("express-app", &files, |out| {
        std::fs::create_dir_all(out).unwrap();
        for f in &files {
            std::fs::copy(f, out.join(f.file_name().unwrap())).unwrap();
        }
        let mut cmd = Command::new("npm");
        cmd.args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--omit=dev",
        ])
        .current_dir(out)
        .env("npm_config_update_notifier", "false");
        run_build(cmd, "npm ci of the Express app (CI installs npm)");
    })
}

/// The unchanged Node.js app (`tests/fixtures/node/binds`: `listen(PORT)`, or
/// `listen(PORT, HOST)`).
fn node_app_dir() -> PathBuf {
    fixtures().join("node/binds")
}

fn node_app() -> Vec<String> {
    vec![
        "node".into(),
        node_app_dir().join("server.js").display().to_string(),
    ]
}

/// The Node.js app started by a shell that stays its parent (`sh -c 'node ...; exit $?'`: no
/// exec, so the bind comes from a child of the worker).
fn node_app_through_sh() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        r#"node "$0"; exit $?"#.into(),
        node_app_dir().join("server.js").display().to_string(),
    ]
}

/// The Node.js app started by `npm start` (npm, then `sh -c`, then node: a grandchild binds).
fn node_app_through_npm() -> Vec<String> {
    vec![
        "npm".into(),
        "--prefix".into(),
        node_app_dir().display().to_string(),
        "start".into(),
    ]
}

fn python(script: &str) -> Vec<String> {
    vec![
        "python3".into(),
        fixtures().join("python").join(script).display().to_string(),
    ]
}

/// A master serving `command`, with npm quiet and offline-safe.
fn master(command: &[String]) -> MasterCmd {
    Master::cmd()
        .command(command)
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
}

// ---------------------------------------------------------------------------------------------
// The world as the tests see it

/// Whether this machine has IPv6 on loopback.
fn ipv6() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// One socket listens on `port`, at `local` as `ss` writes it, with the master's queue
/// (somaxconn), whatever the app asked of `listen()`.
fn assert_masters_backlog(port: u16, local: &str) {
    assert_backlog(port, local, somaxconn());
}

/// One socket listens on `port`, at `local`, with a queue of `backlog`.
fn assert_backlog(port: u16, local: &str, backlog: u32) {
    assert_eq!(
        queues(port),
        vec![(local.to_string(), backlog)],
        "ss -ltn on port {port}: one listener, the master's, with its backlog"
    );
}

/// The sockets listening on `port`: (local address as `ss` writes it, accept queue).
fn queues(port: u16) -> Vec<(String, u32)> {
    listening_on(port)
        .into_iter()
        .map(|l| (l.local, l.backlog))
        .collect()
}

/// Whether a connection to `addr` is refused (nothing listens there).
fn refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// The pid that answered a GET on `addr`.
fn pid_at(addr: SocketAddr) -> u32 {
    let body = get(addr, "/").unwrap_or_else(|e| panic!("GET http://{addr}/: {e}"));
    body.trim()
        .parse()
        .unwrap_or_else(|_| panic!("a pid from {addr}: {body:?}"))
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children(all[i]));
        i += 1;
    }
    all
}

/// Every process of the trees of the serving `workers`: whoever answers for them.
fn trees(workers: &[u32]) -> Vec<u32> {
    workers.iter().flat_map(|&w| tree(w)).collect()
}

// ---------------------------------------------------------------------------------------------
// status --json

/// The one listener of `status --json`.
fn the_listener(m: &Master) -> Value {
    let status = m.status_json();
    let listeners = status.at("listeners").arr();
    assert_eq!(listeners.len(), 1, "{status}");
    listeners[0].clone()
}

/// status --json shows the listener at `addr` (with `origin`) served by adopted binds, with
/// the master's backlog.
fn assert_adopted(m: &Master, addr: &str, origin: &str) {
    let l = the_listener(m);
    assert_eq!(l.at("addr").str(), addr, "{l}");
    assert_eq!(l.at("origin").str(), origin, "{l}");
    assert_eq!(l.at("workers_get_it").str(), "adopted", "{l}");
    assert!(l.at("adopted_binds").num() >= 1.0, "{l}");
    assert_eq!(l.at("backlog").num(), f64::from(somaxconn()), "{l}");
}

// ---------------------------------------------------------------------------------------------
// Ten reloads under load

/// Runs 10 reloads of `m` under a load in each connection mode at once (2 connections each,
/// new-connection and keep-alive, each sending its requests back to back): not one request may fail, every reload replaces every
/// worker, and every generation answers (the answering pid is in its workers' trees: an app
/// started by `sh -c` or `npm start` answers from a descendant of its worker).
/// Call it once every worker is ready.
fn ten_reloads_under_load(m: &mut Master, target: Target) {
    let started = Instant::now();
    let mut workers = m.serving();
    let mut generations = vec![trees(&workers)];
    let loads: Vec<(Mode, Load)> = [Mode::Close, Mode::KeepAlive]
        .into_iter()
        .map(|mode| (mode, start_load(target.clone(), mode, 2)))
        .collect();
    for generation in 1..=10 {
        let new = m.reload(generation);
        assert!(
            new.iter().all(|p| !workers.contains(p)),
            "reload {generation} replaced every worker: {workers:?} -> {new:?}"
        );
        generations.push(trees(&new));
        for (mode, load) in &loads {
            assert!(
                load.wait_for_more(20, DEADLINE),
                "{mode} load goes on after reload {generation}: {}",
                load.snapshot()
            );
        }
        workers = new;
    }
    for (mode, load) in loads {
        let report = load.stop();
        assert_eq!(report.failed(), 0, "{mode}: {report}\n{:#?}", report.errors);
        for (g, pids) in generations.iter().enumerate() {
            assert!(
                pids.iter().any(|p| report.by_pid.contains_key(p)),
                "{mode}: generation {g} ({pids:?}) answered no request: {:?}",
                report.by_pid
            );
        }
        eprintln!("10 reloads, {mode}: {report}");
    }
    eprintln!("10 reloads under load in {:?}", started.elapsed());
}

/// An app binding `PORT` itself, reached at `addr`: 10 reloads under load in both modes, then
/// the listener as status --json and `ss` show it.
fn adopted_through_ten_reloads(
    mut m: Master,
    port: u16,
    addr: SocketAddr,
    status_addr: &str,
    origin: &str,
    ss_local: &str,
) -> Master {
    m.wait_ready();
    ten_reloads_under_load(&mut m, Target::Tcp(addr));
    assert_masters_backlog(port, ss_local);
    assert_adopted(&m, status_addr, origin);
    m
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

// Node.js: listen(PORT) and listen(PORT, '127.0.0.1'), through sh -c and npm start, with 1 and
// 2 workers, PORT alone and an explicit --listen.

#[test]
fn node_listen_port_through_sh_c_with_two_workers_and_port_alone_is_adopted_through_ten_reloads_under_load()
 {
    let port = free_port();
    let m = master(&node_app_through_sh())
        .args(["-w", "2"])
        .env("PORT", port)
        .start();
    let m = adopted_through_ten_reloads(
        m,
        port,
        localhost(port),
        &format!("[::]:{port}"),
        "port",
        &format!("*:{port}"),
    );
    // Dual-stack, as the app asked: IPv6 too.
    if ipv6() {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        assert!(trees(&m.serving()).contains(&pid_at(v6)));
    }
}

#[test]
fn node_listen_port_through_npm_start_with_one_worker_and_an_explicit_listen_is_adopted_through_ten_reloads_under_load()
 {
    let port = free_port();
    let m = master(&node_app_through_npm())
        .args(["-w", "1", "--listen", &port.to_string()])
        .env("PORT", port)
        .start();
    adopted_through_ten_reloads(
        m,
        port,
        localhost(port),
        &format!("[::]:{port}"),
        "bound",
        &format!("*:{port}"),
    );
}

#[test]
fn node_listen_localhost_through_npm_start_with_two_workers_and_port_alone_is_adopted_through_ten_reloads_under_load()
 {
    let port = free_port();
    let m = master(&node_app_through_npm())
        .args(["-w", "2"])
        .env("PORT", port)
        .env("HOST", "127.0.0.1")
        .start();
    let addr = localhost(port);
    adopted_through_ten_reloads(
        m,
        port,
        addr,
        &addr.to_string(),
        "adopted",
        &addr.to_string(),
    );
    // Exactly what the app asked: not widened to any other address.
    assert!(refused(SocketAddr::from(([127, 0, 0, 2], port))));
    if ipv6() {
        assert!(refused(SocketAddr::from((Ipv6Addr::LOCALHOST, port))));
    }
}

#[test]
fn node_listen_localhost_through_sh_c_with_one_worker_and_an_explicit_listen_is_adopted_through_ten_reloads_under_load()
 {
    let port = free_port();
    let addr = localhost(port);
    let m = master(&node_app_through_sh())
        .args(["-w", "1", "--listen", &addr.to_string()])
        .env("PORT", port)
        .env("HOST", "127.0.0.1")
        .start();
    adopted_through_ten_reloads(m, port, addr, &addr.to_string(), "bound", &addr.to_string());
}

#[test]
fn an_unchanged_express_app_installed_from_npm_is_adopted_through_ten_reloads_under_load() {
    // Not a line of shutdown code in the app: it drains through the master's Node.js drain
    // preload (--node-drain on, the default), hence both connection modes.
    let app = express_app();
    let port = free_port();
    let m = master(&["node".into(), app.join("server.js").display().to_string()])
        .args(["-w", "1"])
        .env("PORT", port)
        .start();
    adopted_through_ten_reloads(
        m,
        port,
        localhost(port),
        &format!("[::]:{port}"),
        "port",
        &format!("*:{port}"),
    );
}

#[test]
fn python_http_server_binding_its_port_is_adopted_through_ten_reloads_under_load() {
    let port = free_port();
    // PORT alone: the app binds 0.0.0.0, which the master then holds (AF_INET, as the app's
    // socket is: CPython sizes its address buffers by the socket's family).
    let m = master(&python("http_server_binds.py"))
        .args(["-w", "2"])
        .env("PORT", port)
        .start();
    let m = adopted_through_ten_reloads(
        m,
        port,
        localhost(port),
        &format!("0.0.0.0:{port}"),
        "adopted",
        &format!("0.0.0.0:{port}"),
    );
    if ipv6() {
        assert!(refused(SocketAddr::from((Ipv6Addr::LOCALHOST, port))));
    }
    drop(m);
}

#[test]
fn python_asyncio_server_binding_its_port_is_adopted_through_ten_reloads_under_load() {
    let port = free_port();
    let addr = localhost(port);
    let m = master(&python("asyncio_binds.py"))
        .args(["-w", "2", "--listen", &addr.to_string()])
        .env("PORT", port)
        .start();
    adopted_through_ten_reloads(m, port, addr, &addr.to_string(), "bound", &addr.to_string());
}

#[test]
fn a_new_asyncio_generation_does_not_freeze_the_serving_one_while_it_starts() {
    // asyncio binds a blocking socket and makes it non-blocking only once it serves: the new
    // generation's bind must not switch the shared socket, which the serving generation made
    // non-blocking, back to blocking (it would hang inside accept, holding every connection
    // it takes, until the new generation switches it again).
    let port = free_port();
    let addr = localhost(port);
    let port_s = port.to_string();
    let script = fixtures().join("python/asyncio_binds.py");
    let mut m = Master::cmd()
        .with_knobs_command(&["python3", script.to_str().unwrap()], &[("PORT", &port_s)])
        .args(["-w", "2", "--listen", &addr.to_string()])
        .start();
    let old = m.wait_ready();
    let loads: Vec<(Mode, Load)> = [Mode::Close, Mode::KeepAlive]
        .into_iter()
        .map(|mode| (mode, start_load(Target::Tcp(addr), mode, 2)))
        .collect();
    // The next generation holds after its bind, blocking socket and all, until we open the
    // fifo: its start-up work lasts as long as this test needs.
    let fifo = m.dir().join("hold.fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    m.set_knobs(&[
        ("PORT", &port_s),
        ("PY_HOLD_AFTER_BIND", fifo.to_str().unwrap()),
    ]);
    m.signal(libc::SIGHUP);
    let line = m.expect("bound; start-up work until");
    let held: u32 = line
        .split("py-asyncio-app[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {line:?}"));
    // The shared socket stays non-blocking: in the held worker, and in the serving ones.
    for pid in std::iter::once(held).chain(old.iter().copied()) {
        let flags = listener_fd_flags(pid, port);
        assert!(!flags.is_empty(), "worker {pid} has the listening socket");
        assert!(
            flags.iter().all(|f| f & libc::O_NONBLOCK != 0),
            "worker {pid}: the shared socket is blocking: flags {:?}",
            flags.iter().map(|f| format!("{f:o}")).collect::<Vec<_>>()
        );
    }
    // And the serving generation goes on answering, in both modes.
    for (mode, load) in &loads {
        assert!(
            load.wait_for_more(100, DEADLINE),
            "{mode}: the serving generation stalled while the new one started: {}",
            load.snapshot()
        );
    }
    // Release: a reader of the fifo returns once a writer has it open (read and write: no
    // wait for a reader); kept open until the reload is done, for every new worker.
    let release = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    m.reload_done(1);
    drop(release);
    let mut answered = Vec::new();
    for (mode, load) in loads {
        let report = load.stop();
        assert_eq!(report.failed(), 0, "{mode}: {report}\n{:#?}", report.errors);
        answered.extend(report.by_pid.keys().copied());
    }
    assert!(
        old.iter().all(|p| answered.contains(p)),
        "{old:?} {answered:?}"
    );
}

/// The file status flags (`O_*`, from /proc/PID/fdinfo) of every descriptor of process `pid`
/// open on the TCP socket listening on `port` (matched by its inode).
fn listener_fd_flags(pid: u32, port: u16) -> Vec<i32> {
    let target = match listening_on(port).as_slice() {
        [l] => format!("socket:[{}]", l.inode),
        other => panic!("not one listener on port {port}: {other:?}"),
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
        .filter_map(|e| {
            let fdinfo = Path::new("/proc").join(pid.to_string()).join("fdinfo");
            let info = std::fs::read_to_string(fdinfo.join(e.file_name())).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            i32::from_str_radix(flags.trim(), 8).ok()
        })
        .collect()
}

#[test]
fn a_static_c_binary_binding_its_port_is_adopted_through_ten_reloads_under_load() {
    let server = c_server();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let m = master(&[server.display().to_string()])
        .args(["-w", "2", "--listen", &listen])
        .env("PORT", port)
        .start();
    adopted_through_ten_reloads(m, port, localhost(port), &listen, "bound", &listen);
}

#[test]
fn a_go_server_binding_its_port_is_adopted_through_ten_reloads_under_load() {
    let server = go_server();
    let port = free_port();
    let m = master(&[server.display().to_string()])
        .args(["-w", "2"])
        .env("PORT", port)
        .start();
    adopted_through_ten_reloads(
        m,
        port,
        localhost(port),
        &format!("[::]:{port}"),
        "port",
        &format!("*:{port}"),
    );
}

#[test]
fn a_unix_socket_app_that_unlinks_its_path_first_keeps_the_masters_socket_file_through_ten_reloads_under_load()
 {
    // The Node.js app unlinks PORT (a path) before it binds it, as most servers do; libuv
    // unlinks it again when a draining generation closes its server.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let mut m = master(&node_app())
        .args(["-w", "2"])
        .env("PORT", path.display())
        .start();
    m.wait_ready();
    let file = |p: &Path| {
        let meta = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (meta.dev(), meta.ino())
    };
    let before = file(&path);
    let pid: u32 = get_unix(&path, "/").unwrap().trim().parse().unwrap();
    assert!(trees(&m.serving()).contains(&pid));
    ten_reloads_under_load(&mut m, Target::Unix(path.clone()));
    assert_eq!(
        file(&path),
        before,
        "the master's socket file is the same file"
    );
    let pid: u32 = get_unix(&path, "/").unwrap().trim().parse().unwrap();
    assert!(trees(&m.serving()).contains(&pid));
    let l = the_listener(&m);
    assert_eq!(l.at("addr").str(), format!("unix:{}", path.display()));
    assert_eq!(l.at("workers_get_it").str(), "adopted", "{l}");
    assert!(
        l.at("adopted_binds").num() >= 22.0,
        "every worker's bind: {l:?}"
    );
    assert_eq!(l.at("backlog").num(), f64::from(somaxconn()), "{l}");
}

// PORT alone: the master holds exactly what the first worker binds.

/// Whether `addr` is served, and then by a worker of `m`.
fn served(m: &Master, addr: SocketAddr) -> bool {
    if refused(addr) {
        return false;
    }
    let pid = pid_at(addr);
    assert!(
        trees(&m.serving()).contains(&pid),
        "{addr} answered by {pid}"
    );
    true
}

/// The C server binding `host` under `PORT` alone is served there and nowhere else.
fn served_exactly_where_asked(m: &Master, host: &str, port: u16) {
    assert!(served(m, localhost(port)), "{host}: 127.0.0.1");
    assert_eq!(
        served(m, SocketAddr::from(([127, 0, 0, 2], port))),
        host != "127.0.0.1",
        "{host}: 127.0.0.2"
    );
    if ipv6() {
        assert_eq!(
            served(m, SocketAddr::from((Ipv6Addr::LOCALHOST, port))),
            host == "::",
            "{host}: [::1]"
        );
    }
}

#[test]
fn port_alone_holds_exactly_the_address_the_app_binds_and_never_widens_it() {
    let server = c_server();
    for (host, status_addr, ss_local, origin) in [
        ("::", "[::]:{}", "*:{}", "port"),
        ("0.0.0.0", "0.0.0.0:{}", "0.0.0.0:{}", "adopted"),
        ("127.0.0.1", "127.0.0.1:{}", "127.0.0.1:{}", "adopted"),
    ] {
        let port = free_port();
        let fill = |s: &str| s.replace("{}", &port.to_string());
        let mut m = master(&[server.display().to_string()])
            .env("PORT", port)
            .env("HOST", host)
            .start();
        let first = m.wait_ready();
        assert_adopted(&m, &fill(status_addr), origin);
        assert_masters_backlog(port, &fill(ss_local));
        served_exactly_where_asked(&m, host, port);
        // The next generation binds the same and gets the same socket.
        let second = m.reload(1);
        assert_ne!(first, second);
        served_exactly_where_asked(&m, host, port);
        assert_masters_backlog(port, &fill(ss_local));
        assert_adopted(&m, &fill(status_addr), origin);
    }
}

#[test]
fn port_alone_claimed_by_the_app_gets_the_backlog_of_the_backlog_option() {
    let server = c_server();
    let port = free_port();
    let addr = localhost(port);
    let mut m = master(&[server.display().to_string()])
        .args(["--backlog", "1000"])
        .env("PORT", port)
        .env("HOST", "127.0.0.1")
        .start();
    m.wait_ready();
    // The socket bound for the app's address (not the one bound at start) has it too.
    assert_backlog(port, &addr.to_string(), 1000);
    m.reload(1);
    assert_backlog(port, &addr.to_string(), 1000);
    let l = the_listener(&m);
    assert_eq!(l.at("addr").str(), addr.to_string());
    assert_eq!(l.at("backlog").num(), 1000.0, "{l}");
    assert!(m.serving().contains(&pid_at(addr)));
}

#[test]
fn udp_and_port_zero_sockets_of_the_app_are_left_alone() {
    let port = free_port();
    let addr = localhost(port);
    let mut m = master(&python("http_server_binds.py"))
        .args(["--listen", &addr.to_string()])
        .env("PORT", port)
        .env("HOST", "127.0.0.1")
        .env("EXTRAS", "1")
        .start();
    for generation in 0..2 {
        let workers = if generation == 0 {
            m.wait_ready()
        } else {
            m.reload(generation)
        };
        let ours = trees(&workers);
        let ports = get(addr, "/ports").unwrap();
        let tcp0: u16 = ports
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tcp0="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{ports:?}"));
        assert!(ports.contains(&format!("udp={port} ")), "{ports:?}");
        // Its UDP bind of the held port worked: the app's own socket answers.
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        udp.set_read_timeout(Some(DEADLINE)).unwrap();
        udp.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = udp.recv_from(&mut buf).expect("a UDP answer from the app");
        let pid: u32 = std::str::from_utf8(&buf[..n])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            ours.contains(&pid),
            "UDP answered by {pid}, not by {ours:?}"
        );
        // Its port-0 listener is its own: the queue it asked for (7), not the master's.
        assert_eq!(queues(tcp0), vec![(format!("127.0.0.1:{tcp0}"), 7)]);
        let mut s = TcpStream::connect(localhost(tcp0)).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).unwrap();
        assert!(ours.contains(&text.trim().parse().unwrap()), "{text:?}");
        // Only its bind of the held TCP port was adopted.
        assert_masters_backlog(port, &addr.to_string());
        let l = the_listener(&m);
        assert_eq!(
            l.at("adopted_binds").num(),
            f64::from(generation as u32 + 1),
            "{l}"
        );
        assert!(ours.contains(&pid_at(addr)));
    }
}

// Refusals: one clear line each, and a failure rather than anything widened.

/// A command that runs the C server with the settings in `knobs.env` (changed by
/// `Master::set_knobs` before a reload: a "deploy").
fn c_server_with_knobs(knobs: &[(&str, &str)]) -> MasterCmd {
    let server = c_server();
    Master::cmd().with_knobs_command(&[server.to_str().unwrap()], knobs)
}

/// `reload --wait`, as a deploy script runs it: (exit code, what it printed).
fn reload_wait(m: &Master) -> (i32, String) {
    let out = m.ctl(&["reload", "--wait"]);
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn a_bind_of_another_family_than_the_listen_fails_the_reload_with_one_line_and_nothing_widened() {
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let port_s = port.to_string();
    let mut m = c_server_with_knobs(&[("PORT", &port_s), ("HOST", "0.0.0.0")])
        .args(["--listen", &listen])
        .start();
    let old = m.wait_ready();
    // The next release binds [::] (IPv6): the master holds 0.0.0.0 (IPv4).
    m.set_knobs(&[("PORT", &port_s), ("HOST", "::")]);
    for attempt in 1..=2 {
        let (code, text) = reload_wait(&m);
        assert_eq!(code, 1, "attempt {attempt}: {text}");
        assert!(
            text.contains(&format!("[::]:{port} (IPv6)"))
                && text.contains(&format!("--listen {port}")),
            "the failed reload says why and what to do: {text}"
        );
        // The old generation keeps serving, on IPv4 only.
        assert_eq!(pid_at(localhost(port)), old[0]);
        if ipv6() {
            assert!(refused(SocketAddr::from((Ipv6Addr::LOCALHOST, port))));
        }
    }
    assert_masters_backlog(port, &listen);
    let status = m.status_json();
    assert_eq!(status.at("master").at("reloads_failed").num(), 2.0);
    assert_eq!(the_listener(&m).at("addr").str(), listen);
    // One line in the log, however many workers were refused for the same reason.
    assert_eq!(m.count("bind refused"), 1, "{:#?}", m.lines());
}

#[test]
fn a_bind_of_another_address_than_the_listen_fails_the_worker_with_one_line_and_is_never_widened() {
    let server = c_server();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    // The app binds 127.0.0.1 only: the master must not hand it 0.0.0.0 (it would expose a
    // loopback service), so the worker fails, again and again.
    let mut m = master(&[server.display().to_string()])
        .args(["--listen", &listen, "--throttle", "100ms"])
        .env("PORT", port)
        .env("HOST", "127.0.0.1")
        .start();
    for _ in 0..3 {
        m.expect_ev(Ev::Crashed);
    }
    let line = m
        .wait_for(DEADLINE, |l| l.contains("bind refused"))
        .expect("a refusal line");
    assert!(
        line.contains(&format!("127.0.0.1:{port}"))
            && line.contains(&format!("--listen 127.0.0.1:{port}")),
        "{line}"
    );
    assert_eq!(m.count("bind refused"), 1, "{:#?}", m.lines());
    // Nothing but the master's socket, as it was bound.
    assert_masters_backlog(port, &listen);
    let status = m.status_json();
    let slot = &status.at("slots").arr()[0];
    assert!(slot.at("crashes").num() >= 3.0, "{slot}");
    assert_eq!(
        status.at("listeners").arr()[0].at("adopted_binds").num(),
        0.0
    );
}

#[test]
fn adoption_off_leaves_an_app_that_binds_its_port_failing_with_one_line() {
    let port = free_port();
    let mut m = master(&node_app())
        .args(["--adopt", "off", "--throttle", "100ms"])
        .env("PORT", port)
        .start();
    // The app's own error is EADDRINUSE; once its worker crash-loops, the master says why.
    for _ in 0..3 {
        m.expect_ev(Ev::Crashed);
    }
    let hint = m.expect("worker is crash-looping: ");
    assert!(
        hint.contains(&format!("[::]:{port}"))
            && hint.contains("EADDRINUSE")
            && hint.contains("--adopt off")
            && hint.contains("--adopt on"),
        "{hint}"
    );
    assert!(
        m.logged("EADDRINUSE: address already in use"),
        "{:#?}",
        m.lines()
    );
    // Once: the loop goes on, the line does not.
    m.expect_ev(Ev::Crashed);
    assert_eq!(m.count("worker is crash-looping: "), 1, "{:#?}", m.lines());
    let status = m.status_json();
    assert_eq!(status.at("master").at("adopt").str(), "off");
    let l = &status.at("listeners").arr()[0];
    assert_eq!(l.at("workers_get_it").str(), "inherited", "{l}");
    assert_masters_backlog(port, &format!("*:{port}"));
}

#[test]
fn a_blocking_generation_after_a_non_blocking_one_is_refused_and_the_old_one_keeps_serving() {
    let port = free_port();
    let addr = localhost(port);
    let port_s = port.to_string();
    let mut m = c_server_with_knobs(&[
        ("PORT", &port_s),
        ("HOST", "127.0.0.1"),
        ("C_NONBLOCK", "1"),
    ])
    .args(["-w", "2", "--listen", &addr.to_string()])
    .start();
    let old = m.wait_ready();
    let load = start_load(Target::Tcp(addr), Mode::Close, 4);
    // The next release accepts in blocking mode: it would freeze the other generation inside
    // accept (O_NONBLOCK belongs to the shared socket). Refused, and the reload fails.
    m.set_knobs(&[
        ("PORT", &port_s),
        ("HOST", "127.0.0.1"),
        ("C_NONBLOCK", "0"),
    ]);
    let (code, text) = reload_wait(&m);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("blocking"),
        "the failed reload says why: {text}"
    );
    assert!(load.wait_for_more(100, DEADLINE), "{}", load.snapshot());
    assert_eq!(m.serving(), old);
    // The same mode again is served.
    m.set_knobs(&[
        ("PORT", &port_s),
        ("HOST", "127.0.0.1"),
        ("C_NONBLOCK", "1"),
    ]);
    let (code, text) = reload_wait(&m);
    assert_eq!(code, 0, "{text}");
    assert!(load.wait_for_more(100, DEADLINE), "{}", load.snapshot());
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}\n{:#?}", report.errors);
    assert!(
        old.iter().all(|p| report.by_pid.contains_key(p)),
        "{report}"
    );
    let status = m.status_json();
    assert_eq!(status.at("master").at("reloads_failed").num(), 1.0);
    assert_eq!(status.at("master").at("reloads_done").num(), 1.0);
    assert_masters_backlog(port, &addr.to_string());
}

#[test]
fn status_json_says_per_listener_whether_workers_get_it_adopted_or_inherited() {
    let server = c_server();
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (localhost(p1), localhost(p2));
    // The app binds the first listener itself and leaves the second (fd 4) alone.
    let mut m = master(&[server.display().to_string()])
        .args([
            "--listen",
            &format!("web={a1}"),
            "--listen",
            &format!("admin={a2}"),
            "--ready",
            "listening:any",
        ])
        .env("PORT", p1)
        .env("HOST", "127.0.0.1")
        .start();
    m.wait_ready();
    let status = m.status_json();
    assert_eq!(status.at("master").at("adopt").str(), "on");
    let listeners = status.at("listeners").arr();
    let by_name = |name: &str| {
        listeners
            .iter()
            .find(|l| l.at("name").str() == name)
            .unwrap_or_else(|| panic!("{name}: {listeners:?}"))
    };
    let (web, admin) = (by_name("web"), by_name("admin"));
    assert_eq!(web.at("addr").str(), a1.to_string());
    assert_eq!(web.at("workers_get_it").str(), "adopted");
    assert_eq!(web.at("adopted_binds").num(), 1.0);
    assert_eq!(admin.at("addr").str(), a2.to_string());
    assert_eq!(admin.at("workers_get_it").str(), "inherited");
    assert_eq!(admin.at("adopted_binds").num(), 0.0);
    for l in [web, admin] {
        assert_eq!(l.at("backlog").num(), f64::from(somaxconn()));
        assert_eq!(l.at("origin").str(), "bound");
    }
    assert!(m.serving().contains(&pid_at(a1)));
    assert_masters_backlog(p1, &a1.to_string());
    // The table says the same.
    let table = m.ctl(&["status"]);
    assert!(table.stdout.contains("adopted"), "{}", table.stdout);
}

#[test]
fn an_asyncio_app_binding_both_families_is_told_both_listens_and_with_them_serves_both() {
    if !ipv6() {
        eprintln!("no IPv6 loopback on this machine; nothing to test");
        return;
    }
    // asyncio.start_server with no host binds 0.0.0.0 and [::] IPv6-only on one port.
    let port = free_port();
    let both = [format!("0.0.0.0:{port}"), format!("[::]:{port}")];
    let mut m = master(&python("asyncio_binds.py"))
        .args(["--throttle", "100ms"])
        .env("PORT", port)
        .env("HOST", "")
        .start();
    // PORT alone holds one address: the first bind is claimed, the second refused, and the
    // line names both --listen values to give.
    let line = m.expect("bind refused");
    m.expect_ev(Ev::Crashed);
    assert!(
        line.contains(&format!("--listen {} --listen {}", both[0], both[1]))
            || line.contains(&format!("--listen {} --listen {}", both[1], both[0])),
        "{line}"
    );
    drop(m);
    let mut m = master(&python("asyncio_binds.py"))
        .args(["-w", "2", "--listen", &both[0], "--listen", &both[1]])
        .env("PORT", port)
        .env("HOST", "")
        .start();
    let v4 = localhost(port);
    m.wait_ready();
    ten_reloads_under_load(&mut m, Target::Tcp(v4));
    let mut queues = queues(port);
    queues.sort();
    let want: Vec<(String, u32)> = both.iter().map(|a| (a.clone(), somaxconn())).collect();
    assert_eq!(
        queues, want,
        "ss -ltn: both of the master's listeners, its backlog"
    );
    let status = m.status_json();
    for (l, addr) in status.at("listeners").arr().iter().zip(&both) {
        assert_eq!(l.at("addr").str(), addr, "{l}");
        assert_eq!(l.at("workers_get_it").str(), "adopted", "{l}");
        assert!(l.at("adopted_binds").num() >= 1.0, "{l}");
    }
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let serving = m.serving();
    for addr in [v4, v6] {
        assert!(
            serving.contains(&pid_at(addr)),
            "{addr} served by {serving:?}"
        );
    }
}

#[test]
fn port_alone_a_worker_that_binds_but_never_serves_is_not_taken_for_ready() {
    // The claim leaves the master's first socket, shut down, at the worker's fd 3, at the
    // address the worker asked for: it is no accepted connection, and proves nothing.
    let port = free_port();
    let script = "import os, socket, time\n\
                  s = socket.socket()\n\
                  s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('0.0.0.0', int(os.environ['PORT'])))\n\
                  print('bound', file=__import__('sys').stderr, flush=True)\n\
                  time.sleep(600)\n";
    let mut m = master(&["python3".into(), "-c".into(), script.into()])
        .args(["--ready-timeout", "5s"])
        .env("PORT", port)
        .start();
    let pid = num(&m.expect_ev(Ev::Started), "pid");
    m.expect("bound");
    // The bind was claimed: the master holds exactly what the app asked for.
    assert_eq!(the_listener(&m).at("addr").str(), format!("0.0.0.0:{port}"));
    // Not ready: stopped at --ready-timeout.
    let stopping = m.expect_ev(Ev::Stopping);
    assert_eq!(num(&stopping, "pid"), pid, "{stopping}");
    assert!(m.events(Ev::Ready).is_empty(), "{:#?}", m.lines());
}
