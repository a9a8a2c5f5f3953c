//! # master-process
//!
//! Reload server applications with no downtime. A master process binds the listening
//! sockets once and runs the application as worker processes that inherit them; on SIGHUP
//! it starts new workers and retires each old one only once its replacement is ready.
//!
//! This crate is the library face: put [`init()`] at the top of `main`, as the Node.js
//! module of the same name is used, and the program becomes its own master. (The
//! `master-process` binary does the same for programs in any language.)
//!
//! ```no_run
//! use std::io::Write;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The first process becomes the master and never returns from here; each worker
//!     // gets its handle. PORT, WORKERS, MAX_KILL_TIMEOUT... work as in the reference.
//!     let mut worker = master_process::Builder::new().listen("127.0.0.1:8080").workers(2).init();
//!     let listener = worker.tcp_listener(0)?;
//!     let stop = worker.stop()?;
//!     worker.ready()?; // the master may now retire the worker this one replaces
//!     std::thread::scope(|s| -> std::io::Result<()> {
//!         while let Some((mut stream, _)) = stop.accept(&listener)? {
//!             s.spawn(move || write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"));
//!         }
//!         Ok(()) // SIGTERM: stop accepting; the scope waits for the requests in hand
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! ## How it works
//!
//! [`init()`] looks at the process it runs in:
//! - **The first process** becomes the master: it binds the listeners (`.listen()`, or
//!   `PORT`), then runs its own executable with the same arguments as `WORKERS` worker
//!   processes, which inherit the sockets as fd 3, 4, ... (systemd's `LISTEN_FDS` protocol,
//!   `LISTEN_PID` set to each worker's own pid). It handles signals (SIGHUP reloads, SIGTERM
//!   stops, SIGUSR2 is forwarded), restarts crashed workers, and exits with its code:
//!   `init()` never returns there.
//! - **A worker** (the master marks its environment) gets a [`Worker`]: its listeners by
//!   name or position, [`Worker::ready`] to say it serves (`READY=1` on the master's notify
//!   socket), its [`Worker::worker_index`] and [`Worker::reload_index`], and a [`Stop`]
//!   to learn that a graceful stop was asked.
//! - **Under a debugger** (`TracerPid` set), with `MASTER_PROCESS=off`, or in **test mode**
//!   (`MASTER_PROCESS=test`), the app runs as one process: the handle binds the listeners
//!   itself when they are taken, `ready()` does nothing, SIGINT also asks for a stop. The
//!   same code runs everywhere.
//!
//! A reload swaps one worker per slot: a new worker with `RELOAD_INDEX` + 1 starts; when it
//! is ready, the old one gets SIGTERM (SIGKILL after `MAX_KILL_TIMEOUT`). The listening
//! socket never closes, so connections that arrive meanwhile wait in its queue.
//!
//! ## Guarantees
//!
//! - A reload refuses, resets or loses no request, provided the app stops gracefully: on
//!   [`Stop`], stop accepting, finish the requests in hand, then exit.
//! - A broken release never replaces a working one: a new worker that exits or does not call
//!   [`Worker::ready`] within the ready timeout fails the reload, and the old workers keep
//!   serving.
//! - No orphan, no zombie: workers die with the master (`PR_SET_PDEATHSIG`), each in its own
//!   process group; the master reaps them.
//! - Errors are values ([`Error`]), never panics: a bad environment variable, a missing or
//!   foreign socket (`LISTEN_PID` of another process), a port in use.
//!
//! ## Caveats
//!
//! - **Call `init()` first**, from a plain synchronous `main`, before any thread or async
//!   runtime starts: the master must be a single-threaded process (it forks, and workers die
//!   with the thread that started them). With tokio, build the runtime after `init()`, as
//!   `examples/tokio_hello.rs` does; `init()` logs a warning if other threads already run.
//! - The master runs the program again for each worker: anything `main` does before `init()`
//!   runs in every process.
//! - Options given to [`Builder`] are defaults: the environment (`WORKERS`, `PORT`,
//!   `MASTER_PROCESS_LISTEN`, `MAX_KILL_TIMEOUT`, `WORKER_THROTTLE`, ...) wins, so operators
//!   can tune a built binary.
//! - The [`Stop`] handler is installed by [`Worker::stop`]; a worker that never asks keeps
//!   SIGTERM's default effect (immediate exit), which cuts the requests it holds.
//! - Linux only.
//!
//! ## Features
//!
//! - `cli` (default): the `master-process` command-line tool (clap).
//! - `tokio`: [`Stop::wait_async`], to hand a graceful stop to a tokio server.

#![cfg_attr(test, allow(clippy::unwrap_used))]

#[doc(hidden)]
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod control;
mod error;
mod library;
mod logging;
mod master;
mod monitor;
mod notify;
mod procfs;
mod readiness;
mod signals;
mod socket;
mod spawn;
mod supervisor;
mod upgrade;
mod worker;

pub use config::{OnCrash, OnVersionChange};
pub use error::{Error, Result};
pub use library::{Builder, Listener, ListenerKey, Standalone, Stop, Worker, init};
pub use readiness::{Coverage, ReadyMode};
