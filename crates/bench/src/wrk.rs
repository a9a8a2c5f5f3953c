//! Steady throughput with `wrk`: one run, and its output parsed.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::report::{Json, obj};
use crate::{Ctx, sys};

/// wrk's threads.
pub const THREADS: u32 = 2;
/// wrk's connections.
pub const CONNECTIONS: u32 = 32;

/// One wrk run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkRun {
    /// `Requests/sec:`.
    pub rps: f64,
    /// `N requests in ...`.
    pub requests: u64,
    /// `Socket errors: connect, read, write, timeout` (all 0 when the line is absent).
    pub socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses:`.
    pub non2xx: u64,
}

impl WrkRun {
    /// Socket errors and non-2xx answers.
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non2xx
    }

    /// Every figure, each socket error kind apart.
    pub fn json(&self) -> Json {
        let [connect, read, write, timeout] = self.socket_errors;
        obj! {
            "requests_per_sec": self.rps,
            "requests": self.requests,
            "socket_errors_connect": connect,
            "socket_errors_read": read,
            "socket_errors_write": write,
            "socket_errors_timeout": timeout,
            "non_2xx": self.non2xx,
        }
    }
}

/// The requests/s of each run.
pub fn rps(runs: &[WrkRun]) -> Vec<f64> {
    runs.iter().map(|r| r.rps).collect()
}

/// Parses wrk's output.
pub fn parse(out: &str) -> Result<WrkRun, String> {
    let mut run = WrkRun::default();
    let mut found = false;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            run.rps = v
                .trim()
                .parse()
                .map_err(|_| format!("bad Requests/sec line {line:?}"))?;
            found = true;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // `Socket errors: connect 0, read 12, write 0, timeout 0`
            for part in v.split(',') {
                let mut words = part.split_whitespace();
                let (Some(name), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let kinds = ["connect", "read", "write", "timeout"];
                if let Some(i) = kinds.iter().position(|k| *k == name) {
                    run.socket_errors[i] = n.parse().unwrap_or(0);
                }
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non2xx = v.trim().parse().unwrap_or(0);
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            run.requests = n.trim().parse().unwrap_or(0);
        }
    }
    if !found {
        return Err(format!("no Requests/sec line in wrk's output:\n{out}"));
    }
    Ok(run)
}

/// Runs wrk once against `addr` for `secs` seconds, `Connection: close` if `close`.
pub fn run(ctx: &Ctx, addr: SocketAddr, close: bool, secs: u64) -> Result<WrkRun, String> {
    let mut cmd = Command::new(&ctx.bins.wrk);
    cmd.arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "2s"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/"));
    let mut proc = Proc::spawn("wrk", cmd, true, ctx.opts.verbose)?;
    let status = proc.wait_exit(Duration::from_secs(secs + 30))?;
    let out = proc.out().cloned().ok_or("wrk's stdout was not captured")?;
    out.wait_closed(Duration::from_secs(5));
    let text = out.lines().join("\n");
    if !status.success() {
        return Err(format!(
            "wrk failed ({status}):\n{text}{}",
            proc.log().tail(5)
        ));
    }
    parse(&text)
}

/// The two modes of a steady comparison: (name, `Connection: close`).
pub const MODES: [(&str, bool); 2] = [("new connection", true), ("keep-alive", false)];

/// What an interleaved comparison gave one server, per mode (index 0: new connection,
/// 1: keep-alive).
#[derive(Debug, Default)]
pub struct Steady {
    /// Every run.
    pub runs: [Vec<WrkRun>; 2],
    /// CPU ticks of the server's process (its manager's) during its own runs.
    pub ticks: [u64; 2],
}

impl Steady {
    /// The median requests/s of a mode.
    pub fn median(&self, mode: usize) -> f64 {
        crate::stats::median(&rps(&self.runs[mode]))
    }
}

/// wrk against every server (`(address, pid of the process whose CPU counts)`), interleaved:
/// after a 1 s warm-up of each, per mode, `reps` repetitions that run each server once, the
/// order rotating by one per repetition (bare, master, master, bare, ... for two), so that a
/// position effect or a drift favours no server. After each repetition `after(mode, rep,
/// runs)` gets that repetition's runs in order (server index, run): it checks that the servers
/// still run and says how it went.
pub fn interleaved(
    ctx: &Ctx,
    servers: &[(SocketAddr, i32)],
    mut after: impl FnMut(usize, usize, &[(usize, &WrkRun)]) -> Result<(), String>,
) -> Result<Vec<Steady>, String> {
    let (secs, n) = (ctx.opts.duration_s, servers.len());
    let mut out: Vec<Steady> = (0..n).map(|_| Steady::default()).collect();
    // Warm-up, not counted: first connections, page faults, thread stacks.
    for (_, close) in MODES {
        for &(addr, _) in servers {
            run(ctx, addr, close, 1)?;
        }
    }
    for (mi, (_, close)) in MODES.into_iter().enumerate() {
        for rep in 0..ctx.opts.reps {
            let order: Vec<usize> = (0..n).map(|k| (k + rep) % n).collect();
            for &i in &order {
                let (addr, pid) = servers[i];
                let t0 = sys::cpu_ticks(pid).unwrap_or(0);
                let r = run(ctx, addr, close, secs)?;
                out[i].ticks[mi] += sys::cpu_ticks(pid).unwrap_or(0).saturating_sub(t0);
                out[i].runs[mi].push(r);
            }
            let done: Vec<(usize, &WrkRun)> = order
                .iter()
                .filter_map(|&i| Some((i, out[i].runs[mi].last()?)))
                .collect();
            after(mi, rep, &done)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.00ms   80.00%
    Req/Sec    12.34k     1.00k   14.00k    70.00%
  123456 requests in 5.00s, 12.34MB read
  Socket errors: connect 1, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 2
Requests/sec:  24691.20
Transfer/sec:      2.47MB";
        let run = parse(out).expect("parse");
        let expected = WrkRun {
            rps: 24691.20,
            requests: 123456,
            socket_errors: [1, 12, 0, 3],
            non2xx: 2,
        };
        assert_eq!(run, expected);
        assert_eq!(run.errors(), 18);
        assert!(parse("garbage").is_err());
    }
}
