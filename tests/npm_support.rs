//! Shared by the npm package's tests (`npm_drain`, `npm_package`, `npm_e2e`): where the
//! package and its fixtures are, Node.js processes under the harness, a small HTTP/1.1
//! client that shows what a drain does to one connection, and pack + install into a fresh
//! project as a user would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{DEADLINE, Master, MasterCmd, Output, master_bin, run_bounded};

/// The package's source: `packages/node`.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packages/node")
}

/// The drain, as the master preloads it.
pub fn drain_js() -> String {
    package_dir().join("lib/drain.js").display().to_string()
}

/// A fixture of the package's tests (`packages/node/test/fixtures/NAME`).
pub fn fixture(name: &str) -> String {
    package_dir()
        .join("test/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Fails the test with a clear message if `program --version` cannot run.
pub fn require_tool(program: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{program} is required for this test (CI installs it: .ci/run installs nodejs and npm)"
    );
}

/// `node ARGS...` under the harness: its stderr is the log, it runs in a temp dir, and it is
/// killed on drop. `DEBUG=master-process` makes the drain and the package say what they do.
pub fn node<S: AsRef<str>>(args: &[S]) -> MasterCmd {
    require_tool("node");
    Master::cmd()
        .program("node")
        .args(args.iter().map(|a| a.as_ref().to_string()))
        .env("DEBUG", "master-process")
}

/// One HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One client connection, HTTP/1.1 with keep-alive (the default), requests sent one by one.
pub struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    /// Connects to `addr`; every read is bounded by [`DEADLINE`].
    pub fn connect(addr: SocketAddr) -> Http {
        let s = TcpStream::connect_timeout(&addr, DEADLINE)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Http {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// Sends `GET target` (keep-alive), without waiting for the answer.
    pub fn send(&mut self, target: &str) {
        write!(self.writer, "GET {target} HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap_or_else(|e| panic!("send GET {target}: {e}"));
    }

    /// Reads one complete response.
    pub fn response(&mut self) -> Response {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("read status line: {e}"));
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut r = Response {
            status,
            headers,
            body: String::new(),
        };
        match r
            .header("content-length")
            .map(|v| v.parse::<usize>().unwrap())
        {
            Some(n) => {
                let mut body = vec![0; n];
                self.reader.read_exact(&mut body).unwrap();
                r.body = String::from_utf8(body).unwrap();
            }
            None => {
                self.reader.read_to_string(&mut r.body).unwrap();
            }
        }
        r
    }

    /// `GET target` and its response.
    pub fn get(&mut self, target: &str) -> Response {
        self.send(target);
        self.response()
    }

    /// Whether the server closes this connection (end of stream, or a reset) within
    /// `within`, with nothing more sent on it. Fails the test if bytes arrive instead.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(within))
            .unwrap();
        let mut byte = [0u8; 1];
        let closed = match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected bytes on a connection that should close"),
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(DEADLINE))
            .unwrap();
        closed
    }
}

/// `packages/node/pack OUT --bin <the master-process binary under test>`: the tarballs, the
/// main package first. (The binary under test, not a release build: the same bytes are
/// tested, and no minute-long release build is needed.)
pub fn pack(out: &Path) -> Vec<PathBuf> {
    require_tool("node");
    require_tool("npm");
    // Without its debug info (27 MB -> 4 MB) when `strip` is there: packing and installing
    // it is then quick.
    let bin = out.join("master-process.bin");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(master_bin())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(master_bin(), &bin).unwrap();
    }
    let mut cmd = Command::new(package_dir().join("pack"));
    cmd.arg(out).arg("--bin").arg(&bin);
    let o = run_bounded(cmd, Duration::from_secs(120));
    assert_eq!(o.code, 0, "pack failed: {}", o.stderr);
    o.stdout.lines().map(PathBuf::from).collect()
}

/// A fresh npm project in `dir` with `tarballs` installed, as a user would
/// (`npm install OUT/*.tgz`), offline: nothing may come from the registry.
pub fn install(dir: &Path, tarballs: &[PathBuf]) {
    std::fs::write(
        dir.join("package.json"),
        r#"{ "name": "app", "version": "1.0.0", "private": true }"#,
    )
    .unwrap();
    let mut cmd = npm(dir);
    cmd.args(["install", "--offline", "--no-audit", "--no-fund"])
        .args(tarballs);
    let o = run_bounded(cmd, Duration::from_secs(120));
    assert_eq!(o.code, 0, "npm install failed: {}\n{}", o.stdout, o.stderr);
}

/// `npm` run in `dir`, with its cache inside `dir` (a fresh machine's empty cache).
pub fn npm(dir: &Path) -> Command {
    let mut cmd = Command::new("npm");
    cmd.current_dir(dir)
        .env("npm_config_cache", dir.join(".npm-cache"))
        .env("npm_config_update_notifier", "false")
        .env_remove("DEBUG");
    cmd
}

/// A one-shot `node ARGS` in `dir` with `env`, to completion.
pub fn node_once(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("node");
    cmd.current_dir(dir)
        .args(args)
        .env_remove("DEBUG")
        .env_remove("MASTER_PROCESS_BIN")
        .env_remove("MASTER_PROCESS_WORKER")
        .env_remove("NODE_ENV")
        .env_remove("MASTER_PROCESS")
        .env_remove("MASTER_PROCESS_LISTEN")
        .env_remove("PORT")
        .env_remove("WORKERS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(cmd, DEADLINE)
}
