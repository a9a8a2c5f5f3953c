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

mod adopt;
#[doc(hidden)]
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod control;
mod credentials;
mod env;
mod error;
mod library;
mod logging;
mod master;
mod metrics;
mod monitor;
mod node;
mod notify;
mod policy;
mod procfs;
mod readiness;
mod signals;
mod socket;
mod spawn;
mod supervisor;
mod upgrade;
mod worker;

pub use policy::{OnCrash, OnVersionChange};

/// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    /// Feeds `data` to every parser of outside input; none may panic.
    pub fn all(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let _ = text.parse::<crate::socket::ListenerSpec>();
        let _ = crate::socket::ListenerSpec::from_port_env(&text);
        let mut config = crate::config::Config::defaults();
        for opt in crate::config::options::ALL {
            let _ = opt.apply(&mut config, &text);
        }
        let _ = text.parse::<crate::signals::Signal>();
        let _ = crate::notify::fields(&text).count();
        let _ = crate::control::Request::parse(&text);
        let _ = crate::control::Record::decode(&text);
        let _ = crate::procfs::parse_stat(&text);
        let _ = crate::readiness::listening::parse_syscall(&text);
        let _ = crate::readiness::listening::epoll_input_inodes(&text);
        let _ = crate::upgrade::Handover::decode(&text);
    }
}

/// Internals the workspace's own tools reuse (the benchmark, `crates/bench`): not part of the
/// API, no stability promised.
#[doc(hidden)]
pub mod __internal {
    /// `/proc` parsing: stat fields, children and trees, pidfds.
    pub mod procfs {
        pub use crate::procfs::*;
    }
}
pub use error::{Error, Result};
pub use library::{Builder, Listener, ListenerKey, Standalone, Stop, Worker, init};
pub use readiness::{Coverage, ReadyMode};

#[cfg(test)]
mod fuzz_twin {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The CI twin of `fuzz/`: any text, every parser, no panic.
        #[test]
        fn no_parser_panics_on_any_text(text in ".{0,300}") {
            crate::__fuzz::all(text.as_bytes());
        }

        /// Text shaped like the inputs, to reach deeper than random strings do.
        #[test]
        fn no_parser_panics_on_likely_text(
            text in "(web=|unix:|/|\\[::1\\]:|127\\.0\\.0\\.1:|[0-9]{1,6}|[0-9]+(ms|s|m|h)|-|MAX|AUTO|MP/1 |reload|status|wait|signal|SIG[A-Z0-9]{1,5}|READY=1|STATUS=|\n| |%[0-9A-F]{0,2}|=|\\)|\\(|0x[0-9a-f]{1,8}|tfd:|ino:|events:|handover format=1|worker pid=)*"
        ) {
            crate::__fuzz::all(text.as_bytes());
        }

        /// Bytes that are not UTF-8 at all.
        #[test]
        fn no_parser_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            crate::__fuzz::all(&bytes);
        }
    }

    proptest! {
        /// A listener spec that parses prints back to itself.
        #[test]
        fn listener_specs_round_trip(port in 0u16.., name in "[a-z]{1,8}") {
            for text in [format!("{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}"), format!("{name}={port}"), format!("/run/{name}.sock")] {
                let spec: crate::socket::ListenerSpec = text.parse().unwrap();
                prop_assert_eq!(spec.to_string(), text);
            }
        }

        /// Durations: a bare number is milliseconds, exactly.
        #[test]
        fn bare_durations_are_milliseconds(ms in 0u64..10_000_000_000) {
            let d = crate::policy::parse_duration(&ms.to_string()).unwrap();
            prop_assert_eq!(d, std::time::Duration::from_millis(ms));
        }

        /// Sizes: the memory limit accepts a number of MiB from 1 to 16 TiB and nothing else.
        #[test]
        fn memory_limits_are_positive_mib(v in ".{0,12}") {
            let mut c = crate::config::Config::defaults();
            let parsed = c.apply(&crate::config::options::MAX_MEMORY, "MAX_MEMORY_ALLOWED_MB", &v);
            let ok = v.trim().parse::<u64>().is_ok_and(|n| (1..=1 << 24).contains(&n));
            prop_assert_eq!(parsed.is_ok(), ok, "{:?}", v);
        }
    }
}
