//! Bad input: one clear line on stderr and exit code 2, before anything starts.

use crate::support::run_once;

fn assert_usage_error(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let (code, stderr) = run_once(args, env);
    assert_eq!(code, 2, "exit code for {args:?} {env:?}; stderr:\n{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    for e in expected {
        assert!(
            first.contains(e),
            "first line {first:?} lacks {e:?}; stderr:\n{stderr}"
        );
    }
}

#[test]
fn non_numeric_workers_is_a_usage_error() {
    assert_usage_error(
        &["-l", "127.0.0.1:0", "--", "true"],
        &[("WORKERS", "abc")],
        &["WORKERS", "abc", "MAX"],
    );
}

#[test]
fn negative_kill_timeout_is_a_usage_error() {
    assert_usage_error(
        &["-l", "127.0.0.1:0", "--", "true"],
        &[("MAX_KILL_TIMEOUT", "-1")],
        &["MAX_KILL_TIMEOUT", "negative"],
    );
}

#[test]
fn port_out_of_range_is_a_usage_error() {
    assert_usage_error(
        &["--", "true"],
        &[("PORT", "99999")],
        &["PORT", "99999", "65535"],
    );
}

#[test]
fn socket_in_a_missing_folder_is_a_usage_error() {
    assert_usage_error(
        &["-l", "/no/such/folder/app.sock", "--", "true"],
        &[],
        &["/no/such/folder", "does not exist"],
    );
}

#[test]
fn port_in_use_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_usage_error(
        &["-l", &addr, "--", "true"],
        &[],
        &[&addr, "already in use"],
    );
}

#[test]
fn missing_command_is_a_usage_error() {
    assert_usage_error(
        &["-l", "127.0.0.1:0", "--", "no-such-program-xyz"],
        &[],
        &["no-such-program-xyz", "not found"],
    );
}

#[test]
fn no_command_is_a_usage_error() {
    assert_usage_error(&["-l", "127.0.0.1:0"], &[], &["no command"]);
}

#[test]
fn no_listener_is_a_usage_error() {
    assert_usage_error(&["--", "true"], &[], &["--listen", "PORT"]);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    assert_usage_error(&["--frobnicate", "--", "true"], &[], &["--frobnicate"]);
}

#[test]
fn bad_ready_mode_and_on_crash_are_usage_errors() {
    assert_usage_error(
        &["-l", "127.0.0.1:0", "--ready", "soon", "--", "true"],
        &[],
        &["--ready", "notify"],
    );
    assert_usage_error(
        &["-l", "127.0.0.1:0", "--on-crash", "panic", "--", "true"],
        &[],
        &["--on-crash"],
    );
}

#[test]
fn help_names_every_environment_twin() {
    let (code, _) = run_once(&["--help"], &[]);
    assert_eq!(code, 0);
    let out = std::process::Command::new(crate::support::master_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "WORKERS",
        "WORKER_THROTTLE",
        "MAX_KILL_TIMEOUT",
        "PORT",
        "MASTER_PROCESS_LISTEN",
        "MASTER_PROCESS_READY",
    ] {
        assert!(help.contains(var), "--help lacks {var}:\n{help}");
    }
}
