//! Integration tests: the real `master-process` binary over real worker processes, sockets
//! and signals. One binary, one module per area; `support` is the shared harness.

#![allow(clippy::unwrap_used)]

mod support;

mod adoption;
mod cli;
mod control;
mod crash;
mod crash_loop;
mod deploy;
mod faults;
mod hardening;
mod library;
mod listeners;
mod listening;
mod monitor;
mod node;
mod notify;
mod npm_drain;
mod npm_e2e;
mod npm_package;
mod npm_support;
mod observability;
mod reload;
mod rolling;
mod soak;
mod stop;
mod systemd;
mod workers;
mod zero_downtime;
