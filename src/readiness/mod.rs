//! How the master learns that a new worker serves.
//!
//! A worker is *ready* when the master may retire the worker it replaces. Each
//! [`ReadyMode`] is a different source of that fact:
//!
//! - [`ReadyMode::Listening`] (the default): the master sees, in `/proc`, a thread of the
//!   worker (or of its descendants) waiting on the listening socket, or connections it has
//!   accepted from it ([`listening`]). No change to the app: the reference's semantics
//!   (Node's `listening` event) for any server.
//! - [`ReadyMode::Notify`]: the worker says so, with `READY=1` on `NOTIFY_SOCKET` (the
//!   systemd protocol, see [`crate::notify`]). Exact, but the app must speak it.
//! - [`ReadyMode::Delay`]: the worker stayed alive for a while (einhorn's and
//!   Server::Starter's timer). Works with anything, proves little.
//!
//! Each mode is the only source of readiness: a `READY=1` counts under `notify` alone. Some
//! servers send it before they can serve (gunicorn's arbiter, before its workers have loaded
//! the app), and a new worker believed ready too soon retires the old ones for a release
//! that may never serve. The supervisor turns the mode into deadlines
//! ([`ReadyMode::delay`]); sources of readiness that need the OS (the notify socket, the
//! `/proc` probe) live in the master loop and reach the supervisor as events.

pub mod listening;

pub use crate::policy::{Coverage, ReadyMode};
