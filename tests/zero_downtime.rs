//! Zero downtime, proven: a load client runs against workers under the master while the
//! test sends 20 SIGHUPs; not one request may fail, and every reload must replace the pids.

use loadgen::{Mode, Target};

use crate::support::{DEADLINE, Master, start_load};

/// Runs `reloads` reloads under load against `m` and asserts that nothing failed, that
/// every reload replaced every pid, and that every generation answered requests.
pub fn reloads_under_load(m: &mut Master, mode: Mode, reloads: u64) {
    reloads_under_load_with(m, mode, reloads, true);
}

/// [`reloads_under_load`]; `answers_from_workers` is false when the process that answers
/// is a descendant of the worker (a `sh -c` wrapper), so responses carry another pid.
pub fn reloads_under_load_with(
    m: &mut Master,
    mode: Mode,
    reloads: u64,
    answers_from_workers: bool,
) {
    let mut pids = m.wait_ready();
    let addr = m.tcp_addr();
    let load = start_load(Target::Tcp(addr), mode, 8);
    let mut generations = vec![pids.clone()];
    for generation in 1..=reloads {
        let new = m.reload(generation);
        assert!(
            new.iter().all(|p| !pids.contains(p)),
            "reload {generation} replaced every pid: {pids:?} -> {new:?}"
        );
        // The old generation is gone (a reload ends when its retired workers have exited):
        // what is answered from now on comes from the new one.
        assert!(
            load.wait_for_more(100, DEADLINE),
            "load goes on: {}",
            load.snapshot()
        );
        generations.push(new.clone());
        pids = new;
    }
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report}\n{:#?}", report.errors);
    for (g, pids) in generations
        .iter()
        .enumerate()
        .filter(|_| answers_from_workers)
    {
        assert!(
            pids.iter().any(|p| report.by_pid.contains_key(p)),
            "generation {g} ({pids:?}) answered no request: {:?}",
            report.by_pid
        );
    }
    eprintln!("{reloads} reloads, {mode:?}: {report}");
}

fn master() -> Master {
    Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify"])
        .env("TW_READY", "notify")
        .start()
}

#[test]
fn twenty_reloads_under_load_lose_no_request_with_a_new_connection_per_request() {
    reloads_under_load(&mut master(), Mode::Close, 20);
}

#[test]
fn twenty_reloads_under_load_lose_no_request_on_keep_alive_connections() {
    reloads_under_load(&mut master(), Mode::KeepAlive, 20);
}
