//! A std-only HTTP server that reloads with no downtime: `cargo run --example hello`.
//!
//! The first process becomes the master: two workers on 127.0.0.1:8080 (the environment
//! overrides: `MASTER_PROCESS_LISTEN`, `WORKERS`, ...); `kill -HUP <master pid>` swaps them. Each
//! request is answered with the pid of the worker that served it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut worker = master_process::Builder::new()
        .listen("127.0.0.1:8080")
        .workers(2)
        .init();
    let listener = worker.tcp_listener(0)?;
    if let Some(why) = worker.standalone() {
        eprintln!(
            "hello: running as one process ({why:?}) on {}",
            listener.local_addr()?
        );
    }
    let stop = worker.stop()?;
    worker.ready()?;
    // Serve until SIGTERM, then let the requests in hand finish.
    std::thread::scope(|s| -> std::io::Result<()> {
        while let Some((stream, _)) = stop.accept(&listener)? {
            s.spawn(move || serve(stream));
        }
        Ok(())
    })?;
    Ok(())
}

/// Answers one request and closes the connection.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear(); // skip the request line and headers, up to the blank line
    }
    let body = format!("hello from {}\n", std::process::id());
    write!(
        &stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
