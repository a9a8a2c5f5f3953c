#![allow(clippy::unwrap_used)]
//! The fixture serves in bare mode. (This integration test also makes `cargo test
//! --workspace` build the `test-worker` binary that master-process's own tests run.)

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

#[test]
fn bare_worker_answers_with_its_pid() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-worker"))
        .env("TW_BIND", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // "test-worker[PID]: listening on 1 fd(s) bare (fd 3 127.0.0.1:PORT)"
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.contains("listening on").then(|| {
                l.rsplit(' ')
                    .next()
                    .unwrap()
                    .trim_end_matches(')')
                    .to_string()
            })
        })
        .expect("listening line");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(&format!("\r\n\r\n{pid}\n")), "{out}");
    child.kill().unwrap();
    child.wait().unwrap();
}
