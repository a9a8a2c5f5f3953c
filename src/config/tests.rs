use std::time::Duration;

use super::options::{self, ALL, Takes};
use super::*;
use crate::policy::{OnCrash, ReadyMode, Strategy};

#[test]
fn every_declared_default_parses_and_is_in_range() {
    for opt in ALL {
        let meta = opt.meta();
        if let Some(text) = meta.default {
            let mut c = Config::default();
            assert_eq!(opt.apply(&mut c, text), Ok(()), "--{}", meta.long);
        }
        assert!(!meta.help.is_empty(), "--{} has no help", meta.long);
        if let Takes::Switch(text) = meta.takes {
            let mut c = Config::default();
            assert_eq!(opt.apply(&mut c, text), Ok(()), "--{}", meta.long);
        }
    }
}

#[test]
fn flags_and_variables_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for opt in ALL {
        let m = opt.meta();
        assert!(seen.insert(m.long.to_string()), "--{} twice", m.long);
        for env in m.env {
            assert!(seen.insert(env.to_string()), "{env} twice");
        }
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::defaults();
    assert_eq!(c.supervisor.workers, 1);
    assert_eq!(c.supervisor.kill_timeout, Duration::from_secs(5));
    assert_eq!(c.supervisor.throttle, Duration::from_secs(1));
    assert_eq!(c.supervisor.ready_timeout, Duration::from_secs(60));
    assert_eq!(c.supervisor.max_backoff, Duration::from_secs(30));
    assert_eq!(c.supervisor.ready, ReadyMode::default());
    assert_eq!(c.supervisor.strategy, Strategy::Parallel);
    assert_eq!(c.supervisor.on_crash, OnCrash::Restart);
    assert_eq!(c.supervisor.canary, None);
    assert_eq!(c.socket_mode, 0o664);
    assert_eq!(c.backlog, None);
    assert!(c.subreaper && c.monitor_on && !c.verbose);
    assert_eq!(c.monitor.max_memory_mb, 1200);
    assert_eq!(c.monitor.max_cpu_pct, 95.0);
    assert_eq!(c.monitor.interval, Duration::from_secs(2));
    assert_eq!(c.control, ControlSocket::Default);
}

#[test]
fn the_last_value_given_wins_and_names_its_source() {
    let mut c = Config::defaults();
    c.apply(&options::WORKER_COUNT, "WORKERS", "3").unwrap();
    c.apply(&options::WORKER_COUNT, "--workers", "2").unwrap();
    assert_eq!(c.supervisor.workers, 2);
    let e = c
        .apply(&options::WORKER_COUNT, "WORKERS", "abc")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("WORKERS") && e.contains("abc") && e.contains("MAX"),
        "{e}"
    );
}

#[test]
fn rolling_keeps_its_surge_whatever_the_order() {
    let mut a = Config::defaults();
    a.apply(&options::MAX_SURGE, "--max-surge", "3").unwrap();
    a.apply(&options::RELOAD, "--reload", "rolling").unwrap();
    let mut b = Config::defaults();
    b.apply(&options::RELOAD, "--reload", "rolling").unwrap();
    b.apply(&options::MAX_SURGE, "--max-surge", "3").unwrap();
    assert_eq!(a.supervisor.strategy, Strategy::Rolling { max_surge: 3 });
    assert_eq!(b.supervisor.strategy, Strategy::Rolling { max_surge: 3 });
}

#[test]
fn out_of_range_values_are_refused_where_they_are_parsed() {
    let refused = [
        (&options::READY_TIMEOUT as &dyn Declared, "0"),
        (&options::READY_TIMEOUT, "100000000000"),
        (&options::KILL_TIMEOUT, "2d"),
        (&options::THROTTLE, "18446744073709551615"),
        (&options::MAX_MEMORY, "18446744073709551615"),
        (&options::MAX_MEMORY, "0"),
        (&options::MAX_CPU, "0"),
        (&options::MAX_CPU, "NaN"),
        (&options::MAX_CPU, "inf"),
        (&options::MEMORY_FAILURES, "0"),
        (&options::MONITOR_INTERVAL, "0"),
        (&options::WORKER_COUNT, "0"),
        (&options::WORKER_COUNT, "1025"),
        (&options::MAX_SURGE, "0"),
        (&options::BACKLOG, "0"),
        (&options::SOCKET_MODE, "1777"),
        (&options::CANARY, "366d"),
        (&options::READY, "delay:2h"),
        (&options::NAME, "../etc"),
        (&options::NAME, ""),
    ];
    for (opt, value) in refused {
        let mut c = Config::defaults();
        assert!(
            opt.apply(&mut c, value).is_err(),
            "--{} {value:?} was accepted",
            opt.meta().long
        );
    }
}

#[test]
fn the_whole_needs_a_listener_and_a_command() {
    let mut c = Config::defaults();
    c.command = vec!["sh".into()];
    assert!(matches!(c.check(), Err(Error::NoListener)));
    c.apply(&options::PORT, "PORT", "8080").unwrap();
    assert!(c.check().is_ok());
    c.command.clear();
    assert!(matches!(c.check(), Err(Error::NoCommand)));
}

#[test]
fn names_come_from_the_flag_or_the_command() {
    let mut c = Config::defaults();
    c.command = vec!["/usr/bin/node".into(), "app.js".into()];
    assert_eq!(c.name(), "node");
    assert_eq!(name_from(Some(Path::new("./my app!"))), "my-app-");
    assert_eq!(name_from(Some(Path::new("/"))), "master-process");
    c.name = Some("web".into());
    assert_eq!(c.name(), "web");
}

#[test]
fn programs_are_resolved_like_execvp() {
    assert!(resolve_program(&"sh".into()).unwrap().is_absolute());
    let e = resolve_program(&"no-such-program-xyz".into()).unwrap_err();
    assert!(e.to_string().contains("not found in PATH"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let e = resolve_program(&plain.clone().into_os_string()).unwrap_err();
    assert!(e.to_string().contains("not an executable"), "{e}");
    assert!(resolve_program(&"/no/such/file".into()).is_err());
}
