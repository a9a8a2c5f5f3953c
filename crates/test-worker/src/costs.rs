//! Timed loops for the benchmark's `adoption` section: what a `bind` costs the app when the
//! master adopts it, and what the adoption filter costs every other system call.
//!
//! Both run before the worker serves, and print one `key=value` line each. Timing uses
//! `Instant` (the vDSO's `clock_gettime`: no system call, so the filter never sees it).

use std::hint::black_box;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Rounds of the system call loop.
const ROUNDS: usize = 21;

/// The median and 90th percentile of `values` (µs), sorting them.
fn p50_p90(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.9))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A `sockaddr_in`/`sockaddr_in6` for `addr`, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `n` cycles of `socket` (non-blocking, as the worker's listeners), `bind(addr)`,
/// `listen(511)` and `close`, each call timed. One line:
/// `bind_loop addr=A cycles=N errors=E socket_p50_us=.. bind_p50_us=.. bind_p90_us=..
/// listen_p50_us=.. listen_p90_us=.. close_p50_us=.. cycle_mean_us=.. first_error=..`.
pub fn bind_loop(pid: u32, addr: SocketAddr, n: u64) {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let (storage, len) = sockaddr(addr);
    let cap = usize::try_from(n).unwrap_or(0);
    let (mut socket, mut bind, mut listen, mut close) = (
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
    );
    let mut errors = 0u64;
    let mut first_error = None;
    let mut fail = |what: &str| {
        errors += 1;
        if first_error.is_none() {
            first_error = Some(format!("{what}: {}", io::Error::last_os_error()));
        }
    };
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        socket.push(us(t.elapsed()));
        if fd < 0 {
            fail("socket");
            continue;
        }
        let t = Instant::now();
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
        let bound = unsafe { libc::bind(fd, (&raw const storage).cast(), len) };
        bind.push(us(t.elapsed()));
        if bound == 0 {
            let t = Instant::now();
            // SAFETY: listen(2) on our own descriptor.
            let listened = unsafe { libc::listen(fd, 511) };
            listen.push(us(t.elapsed()));
            if listened != 0 {
                fail("listen");
            }
        } else {
            fail("bind");
        }
        let t = Instant::now();
        // SAFETY: `fd` is ours, closed once.
        unsafe { libc::close(fd) };
        close.push(us(t.elapsed()));
    }
    let total = started.elapsed();
    let (socket, _) = p50_p90(&mut socket);
    let (bind50, bind90) = p50_p90(&mut bind);
    let (listen50, listen90) = p50_p90(&mut listen);
    let (close, _) = p50_p90(&mut close);
    let mean = us(total) / n.max(1) as f64;
    let first = first_error.map_or(String::new(), |e| format!(" first_error=\"{e}\""));
    say!(
        "test-worker[{pid}]: bind_loop addr={addr} cycles={n} errors={errors} \
         socket_p50_us={socket:.2} bind_p50_us={bind50:.2} bind_p90_us={bind90:.2} \
         listen_p50_us={listen50:.2} listen_p90_us={listen90:.2} close_p50_us={close:.2} \
         cycle_mean_us={mean:.2}{first}"
    );
}

/// 21 rounds of `n` `getppid` calls, each round timed. One line:
/// `syscall_loop calls=N rounds=21 ns_min=.. ns_p50=.. ns_max=..` (ns per call).
pub fn syscall_loop(pid: u32, n: u64) {
    let mut per_call = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: getppid(2) has no preconditions.
            black_box(unsafe { libc::syscall(libc::SYS_getppid) });
        }
        per_call.push(t.elapsed().as_secs_f64() * 1e9 / n.max(1) as f64);
    }
    let (p50, _) = p50_p90(&mut per_call);
    let (min, max) = (per_call[0], per_call[per_call.len() - 1]);
    say!(
        "test-worker[{pid}]: syscall_loop calls={n} rounds={ROUNDS} ns_min={min:.1} \
         ns_p50={p50:.1} ns_max={max:.1}"
    );
}

/// `n` `getppid` calls: the per-request work of a syscall-heavy app.
pub fn syscalls(n: u64) {
    for _ in 0..n {
        // SAFETY: getppid(2) has no preconditions.
        black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(p50_p90(&mut v), (3.0, 5.0));
        assert!(p50_p90(&mut []).0.is_nan());
    }
}
