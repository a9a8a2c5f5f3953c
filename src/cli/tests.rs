use proptest::prelude::*;

use super::*;

fn parse(args: &[&str]) -> Result<Config> {
    let matches = command()
        .try_get_matches_from(std::iter::once("master-process").chain(args.iter().copied()))
        .map_err(|e| {
            let text = e.to_string();
            Error::invalid("args", "", text.lines().next().unwrap_or_default())
        })?;
    config(&matches)
}

#[test]
fn cli_definition_is_consistent() {
    command().debug_assert();
}

#[test]
fn flags_reach_the_config() {
    let c = parse(&[
        "-l",
        "127.0.0.1:0,web=/tmp/x.sock",
        "-w",
        "3",
        "--kill-timeout",
        "250",
        "--reload",
        "rolling",
        "--max-surge",
        "2",
        "--no-monitor",
        "--no-subreaper",
        "-v",
        "--backlog",
        "128",
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        "true",
    ])
    .unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.supervisor.workers, 3);
    assert_eq!(c.supervisor.kill_timeout, Duration::from_millis(250));
    assert_eq!(
        c.supervisor.strategy,
        crate::policy::Strategy::Rolling { max_surge: 2 }
    );
    assert!(!c.monitor_on && !c.subreaper && c.verbose);
    assert_eq!(c.backlog, Some(128));
    assert_eq!(c.name(), "web");
    assert_eq!(c.command, ["sh", "-c", "true"]);
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let e = parse(&["-l", "1", "--ready-timeout", "0", "--", "sh"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let line = e.to_string();
    assert!(
        line.contains("--ready-timeout") && line.contains("at least"),
        "{line}"
    );
}

#[test]
fn help_shows_defaults_and_every_environment_twin() {
    let help = command().render_long_help().to_string();
    for opt in ALL {
        let m = opt.meta();
        assert!(
            help.contains(&format!("--{}", m.long)),
            "--{} missing",
            m.long
        );
        for env in m.env {
            assert!(help.contains(env), "{env} missing");
        }
    }
    assert!(help.contains("[default: 5s]"), "{help}");
}

/// A value for an option: sometimes valid-looking, sometimes anything.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}",
        "[0-9]{1,12}(ms|s|m|h|d|y|days|us|ns)",
        "-[0-9]{1,5}",
        "(on|off|yes|no|MAX|AUTO|max|notify|listening|listening:any|delay:[0-9]{1,14}|parallel|rolling|log|exit|upgrade|restart)",
        "0o[0-7]{1,5}",
        "[0-9]{1,4}\\.[0-9]{1,4}%?",
        "(NaN|inf|-inf|1e400)",
        "(127\\.0\\.0\\.1:[0-9]{1,6}|\\[::1\\]:[0-9]{1,6}|/tmp/[a-z]{1,8}\\.sock|[a-z]{1,5}=[0-9]{1,5})",
        ".{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The whole command-line-to-Config path, over every option's input space: never a
    /// panic; either a valid Config or one error with exit code 2.
    #[test]
    fn any_flag_value_gives_a_config_or_a_usage_error(
        picks in proptest::collection::vec((0..ALL.len(), value()), 1..6)
    ) {
        let mut args: Vec<String> = Vec::new();
        for (i, v) in &picks {
            let m = ALL[*i].meta();
            match m.takes {
                Takes::Switch(_) => args.push(format!("--{}", m.long)),
                _ => args.push(format!("--{}={v}", m.long)),
            }
        }
        args.extend(["-l".into(), "127.0.0.1:0".into(), "--".into(), "sh".into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match parse(&refs) {
            Ok(c) => {
                prop_assert!(c.supervisor.workers >= 1);
                prop_assert!(c.supervisor.ready_timeout >= Duration::from_millis(100));
                prop_assert!(c.monitor.max_memory_mb >= 1 && c.monitor.max_memory_mb <= 1 << 24);
                prop_assert!(c.monitor.max_cpu_pct.is_finite() && c.monitor.max_cpu_pct > 0.0);
                prop_assert!(c.monitor.interval >= Duration::from_millis(10));
                for d in [c.supervisor.kill_timeout, c.supervisor.throttle, c.supervisor.max_backoff] {
                    prop_assert!(d <= crate::config::values::DAY);
                    // The master adds these to its clock: that must never overflow.
                    prop_assert!(std::time::Instant::now().checked_add(d).is_some());
                }
            }
            Err(e) => {
                prop_assert_eq!(e.exit_code(), 2, "{}", e);
                prop_assert!(!e.to_string().contains('\n'), "{}", e);
            }
        }
    }
}

#[test]
fn the_readme_documents_every_option_and_its_environment_twins() {
    let readme = include_str!("../../README.md");
    for opt in ALL {
        let m = opt.meta();
        assert!(
            readme.contains(&format!("`--{}", m.long))
                || readme.contains(&format!(", --{}", m.long)),
            "README lacks --{}",
            m.long
        );
        for env in m.env {
            assert!(readme.contains(env), "README lacks {env}");
        }
    }
}
