//! # master-process
//!
//! Reload server applications with no downtime. A master process binds the listening
//! sockets once and runs the application as worker processes that inherit them (systemd's
//! `LISTEN_FDS` protocol). On SIGHUP it starts new workers and retires each old one only
//! once its replacement is ready; a new worker that fails leaves the old ones serving.
//!
//! See the README for the guarantees, the flags and the environment variables, and
//! `docs/ARCHITECTURE.md` for how the pieces fit.
//!
//! ## Modules
//! - [`config`]: the validated configuration and its value parsers.
//! - [`socket`]: listener specs, binding, unix socket files.
//! - [`spawn`]: starting a worker (the only fork/exec code).
//! - [`worker`]: one worker's lifecycle.
//! - [`supervisor`]: the decisions, as a state machine with no I/O.
//! - [`master`]: the event loop that feeds the supervisor.
//! - [`readiness`]: how a new worker is known to serve.
//! - [`notify`]: the sd_notify protocol, both ways.
//! - [`signals`]: our signal type and the self-pipe.
//! - [`procfs`]: the bits of `/proc` we read.
//! - [`error`]: the error type.

#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod error;
pub mod logging;
pub mod master;
pub mod notify;
pub mod procfs;
pub mod readiness;
pub mod signals;
pub mod socket;
pub mod spawn;
pub mod supervisor;
pub mod worker;

pub use config::{Config, OnCrash};
pub use error::{Error, Result};
pub use readiness::ReadyMode;
