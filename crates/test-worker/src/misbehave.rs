//! The knobs that make the worker a bad citizen on purpose: eat memory, burn a CPU, crash
//! on a timer, leave a child behind.

use std::hint::black_box;
use std::process::{self, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::knobs::ForkChild;

const MIB: usize = 1024 * 1024;
/// Touching one byte per 4 KiB faults in every page (larger pages are covered too).
const PAGE: usize = 4096;

/// Allocates `bytes`, writes every page so it is really resident, and keeps it forever.
fn hold(bytes: usize) {
    if bytes == 0 {
        return;
    }
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(PAGE) {
        block[i] = 1;
    }
    black_box(Box::leak(block.into_boxed_slice()));
}

/// `TW_MEMORY_MB`: allocates now, before serving.
pub fn allocate(pid: u32, mib: u64) {
    if mib > 0 {
        hold(
            usize::try_from(mib)
                .unwrap_or(usize::MAX)
                .saturating_mul(MIB),
        );
        say!("test-worker[{pid}]: holding {mib} MiB");
    }
}

/// The memory `/memory?mb=N` holds, replaced at each request.
static EXTRA: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// `/memory?mb=N`: holds N MiB (every page touched) instead of what it held before; 0 frees.
pub fn set_extra_memory(pid: u32, mib: u64) {
    let bytes = usize::try_from(mib)
        .unwrap_or(usize::MAX)
        .saturating_mul(MIB);
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(PAGE) {
        block[i] = 1;
    }
    let mut extra = EXTRA.lock().unwrap_or_else(|e| e.into_inner());
    *extra = black_box(block);
    say!("test-worker[{pid}]: extra memory {mib} MiB");
}

/// `/shutdown`: shuts the shared listening socket (fd 3) down, for everyone sharing it.
pub fn shut_down_listener(pid: u32) {
    // SAFETY: shutdown(2) on a descriptor number has no memory effects; fd 3 is the first
    // inherited listener.
    let r = unsafe { libc::shutdown(3, libc::SHUT_RDWR) };
    say!(
        "test-worker[{pid}]: shutdown() on the listener: {}",
        if r == 0 {
            "done".to_string()
        } else {
            std::io::Error::last_os_error().to_string()
        }
    );
}

/// `TW_MEMORY_GROW_MB_PER_S`: grows in ten steps a second, for a smooth curve.
pub fn grow(mib_per_s: u64) {
    if mib_per_s == 0 {
        return;
    }
    let step = usize::try_from(mib_per_s)
        .unwrap_or(usize::MAX)
        .saturating_mul(MIB)
        / 10;
    thread::spawn(move || {
        loop {
            thread::sleep(Duration::from_millis(100));
            hold(step);
        }
    });
}

/// `TW_THREADS`: `n` threads that do nothing (parked), as the pools of a real server, so that
/// a probe that looks at every thread has that many to look at.
pub fn idle_threads(pid: u32, n: u64) {
    for _ in 0..n {
        let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(|| {
            loop {
                thread::park();
            }
        });
        if let Err(e) = spawned {
            say!("test-worker[{pid}]: cannot start an idle thread: {e}");
            return;
        }
    }
    if n > 0 {
        say!("test-worker[{pid}]: {n} idle thread(s) (TW_THREADS)");
    }
}

/// `TW_SPIN=1`: one thread at 100% of a CPU.
pub fn spin() {
    thread::spawn(|| {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    });
}

/// `TW_CRASH_AFTER_MS`: exits with `code` after `after`, whatever the worker is doing.
pub fn crash_after(pid: u32, after: Duration, code: i32) {
    thread::spawn(move || {
        thread::sleep(after);
        say!("test-worker[{pid}]: crashing with code {code} (TW_CRASH_AFTER_MS)");
        process::exit(code);
    });
}

/// `TW_FORK_CHILD`: starts `sleep 1000` (or `setsid sleep 1000`) and never waits for it.
pub fn fork_child(pid: u32, mode: ForkChild) {
    let mut command = match mode {
        ForkChild::No => return,
        ForkChild::Plain => Command::new("sleep"),
        ForkChild::Daemon => {
            let mut c = Command::new("setsid");
            c.arg("sleep");
            c
        }
    };
    command.arg("1000").stdin(Stdio::null());
    match command.spawn() {
        // Dropping the handle neither kills nor reaps the child: it is left running.
        Ok(child) => {
            if mode == ForkChild::Daemon {
                // Say so only once it really left our session, so that tests never race it.
                let cpid = child.id() as libc::pid_t;
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                // SAFETY: getsid(2) on a pid has no memory effects.
                while unsafe { libc::getsid(cpid) } != cpid && std::time::Instant::now() < deadline
                {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            say!("test-worker[{pid}]: child {}", child.id())
        }
        Err(e) => say!("test-worker[{pid}]: cannot start the child: {e}"),
    }
}
