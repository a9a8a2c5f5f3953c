//! A tokio HTTP worker for master-process tests: serves the inherited socket (fd 3, as any
//! `LISTEN_FDS` server would) and answers every request with its pid.
//!
//! `TOKIO_WORK_MS=N` does N ms of blocking work after taking the socket (registered with the
//! runtime) and before accepting. On SIGTERM it stops accepting, lets the connections in
//! hand finish (closing idle keep-alive ones), and exits.

use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

fn log(msg: &str) {
    eprintln!(
        "{}",
        format_args!("tokio-worker[{}]: {msg}", std::process::id())
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    assert_eq!(
        std::env::var("LISTEN_FDS").as_deref(),
        Ok("1"),
        "expects one socket in LISTEN_FDS"
    );
    // SAFETY: the master passed a listening TCP socket as fd 3 (LISTEN_FDS=1); nothing else
    // in this process owns fd 3.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    if let Some(ms) = std::env::var("TOKIO_WORK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        log(&format!("working for {ms} ms"));
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mut term = signal(SignalKind::terminate())?;
    let draining = Arc::new(AtomicBool::new(false));
    let mut conns = JoinSet::new();
    log("serving");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve(stream, Arc::clone(&draining)));
                }
            }
            _ = term.recv() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    log("draining");
    draining.store(true, Ordering::SeqCst);
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    log("exit");
    Ok(())
}

/// Serves one connection: HTTP/1.1 keep-alive, a `Connection: close` once draining, and an
/// idle connection closed 500 ms into the drain.
async fn serve(mut stream: TcpStream, draining: Arc<AtomicBool>) {
    let _ = stream.set_nodelay(true);
    let body = format!("{}\n", std::process::id());
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = if draining.load(Ordering::SeqCst) && buf.is_empty() {
                match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    r = stream.read(&mut chunk) => r,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let close = draining.load(Ordering::SeqCst) || head.contains("connection: close");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
