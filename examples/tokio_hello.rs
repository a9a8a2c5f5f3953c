//! An axum (tokio) server that reloads with no downtime:
//! `cargo run --example tokio_hello --features tokio`.
//!
//! `init()` comes first, before the runtime exists: the master must stay one plain thread.
//!
//! On SIGTERM the worker stops accepting at once but gives the connections it holds half a
//! second before axum's graceful shutdown: that shutdown closes every connection that has
//! not started a request yet, even one whose request is already in its socket, which would
//! reset it.

use std::time::Duration;

use master_process::Stop;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut worker = master_process::Builder::new()
        .listen("127.0.0.1:8080")
        .workers(2)
        .init();
    let listener = worker.tcp_listener(0)?;
    let stop = worker.stop()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = Draining {
            inner: tokio::net::TcpListener::from_std(listener)?,
            stop: stop.clone(),
        };
        let pid = std::process::id();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move { format!("hello from {pid}\n") }),
        );
        worker.ready()?;
        let shutdown = async move {
            stop.wait_async().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    })
}

/// A listener that stops accepting when the stop is asked, without closing anything.
struct Draining {
    inner: tokio::net::TcpListener,
    stop: Stop,
}

impl axum::serve::Listener for Draining {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        tokio::select! {
            biased;
            _ = self.stop.wait_async() => std::future::pending().await,
            accepted = axum::serve::Listener::accept(&mut self.inner) => accepted,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
