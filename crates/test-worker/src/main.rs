//! `test-worker`: the fixture worker of master-process's tests and benchmarks.
//!
//! An HTTP/1.1 server answering every request with its pid. It serves the sockets passed by
//! `LISTEN_FDS` (checking `LISTEN_PID`), or binds `TW_BIND` / `PORT` itself (bare mode, for
//! comparing the app with and without the master), drains gracefully on SIGTERM, and
//! misbehaves on demand through `TW_*` environment knobs (see `knobs.rs`).
//!
//! Exit codes: 0 after a drain, 2 for a usage error, 3 for a `LISTEN_PID` mismatch, 1 for a
//! system error, or whatever `TW_EXIT_AT_START`, `TW_EXIT_CODE` or `/exit?code=N` asks for.
//!
//! Everything is printed on stderr, one `test-worker[PID]: ...` line per event.

// No Rust runtime start-up: std's would set SIGPIPE to SIG_IGN and open /dev/null on closed
// stdio descriptors before `main`, hiding exactly what `TW_REPORT` must show we inherited.
// We do both ourselves, right after taking the snapshot. (Unit tests keep libtest's main.)
#![cfg_attr(not(test), no_main)]

/// Prints one line on stderr with a single write, so that lines of processes sharing the
/// stream never interleave (`eprintln!` writes each formatted piece separately).
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }};
}

mod costs;
mod http;
mod knobs;
mod listeners;
mod misbehave;
mod ready;
mod report;
mod server;
mod signals;

use std::io;
use std::process;

use knobs::Knobs;
use server::Shared;
use signals::Term;

/// The C entry point (see `#![no_main]` above).
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    run()
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> i32 {
    let pid = process::id();
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(e) => {
            say!("test-worker: {e}");
            return 2;
        }
    };
    if let Some(code) = knobs.exit_at_start {
        say!("test-worker[{pid}]: exiting at start with code {code} (TW_EXIT_AT_START)");
        return code;
    }

    // Nothing may open a descriptor or change a signal disposition before this.
    let snapshot = match knobs.report_dir.as_ref().map(|_| report::Snapshot::take()) {
        Some(Err(e)) => {
            say!("test-worker[{pid}]: cannot inspect /proc/self: {e}");
            return 1;
        }
        Some(Ok(snapshot)) => Some(snapshot),
        None => None,
    };
    sanitize_stdio();
    if let Err(e) = signals::set_ignored(libc::SIGPIPE) {
        say!("test-worker[{pid}]: cannot ignore SIGPIPE: {e}");
        return 1;
    }
    // The inherited listeners first: until they are ours, any descriptor we open could land
    // on 3, 4, ... and be mistaken for one.
    let mut listeners = match listeners::take_or_bind(pid) {
        Ok(listeners) => listeners,
        Err(fatal) => {
            say!("{}", fatal.message);
            return fatal.code;
        }
    };
    let term = match Term::install(knobs.ignore_sigterm) {
        Ok(term) => term,
        Err(e) => {
            say!("test-worker[{pid}]: cannot handle SIGTERM: {e}");
            return 1;
        }
    };
    if let Err(e) = signals::log_usr2(pid) {
        say!("test-worker[{pid}]: cannot handle SIGUSR2: {e}");
        return 1;
    }
    if let (Some(snapshot), Some(dir)) = (&snapshot, &knobs.report_dir) {
        match snapshot.write(dir, pid) {
            Ok(path) => say!("test-worker[{pid}]: report {}", path.display()),
            Err(e) => {
                say!(
                    "test-worker[{pid}]: cannot write the report in {}: {e}",
                    dir.display()
                );
                return 1;
            }
        }
    }

    let mut ready = knobs.ready;
    if knobs.ready_early {
        ready::send(ready, pid);
        ready = knobs::Ready::None;
    }
    misbehave::fork_child(pid, knobs.fork_child);
    misbehave::allocate(pid, knobs.memory_mb);
    misbehave::grow(knobs.memory_grow_mb_per_s);
    misbehave::idle_threads(pid, knobs.threads);
    if knobs.spin {
        misbehave::spin();
    }
    if let Some(after) = knobs.crash_after {
        misbehave::crash_after(pid, after, knobs.exit_code);
    }

    if knobs.syscall_loop > 0 {
        costs::syscall_loop(pid, knobs.syscall_loop);
    }
    if knobs.bind_loop > 0 {
        let first = || listeners.iter().find_map(|l| l.local.parse().ok());
        match knobs.bind_loop_addr.or_else(first) {
            Some(addr) => costs::bind_loop(pid, addr, knobs.bind_loop),
            None => {
                say!("test-worker[{pid}]: bind_loop: no TCP address to bind (TW_BIND_LOOP_ADDR)")
            }
        }
    }
    let shared = Shared::new(pid, &knobs);
    if knobs.never_ready {
        say!("test-worker[{pid}]: never ready (TW_NEVER_READY)");
        term.wait(None);
        server::drain(&mut listeners, shared);
    }
    // "Work" between taking the sockets and serving them: a blocking wait, not a poll.
    if knobs
        .listen_delay
        .is_some_and(|delay| term.wait(Some(delay)))
    {
        server::drain(&mut listeners, shared);
    }
    server::run(listeners, &term, ready, shared)
}

/// Opens /dev/null on any of descriptors 0, 1 and 2 that we inherited closed, so that no
/// socket ever lands there (and our stderr lines go nowhere rather than into a connection).
fn sanitize_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on a small integer only reports whether it is open.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if closed {
            // SAFETY: a valid NUL-terminated path; the lowest free descriptor, `fd`, is taken.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}
