//! The deployment examples in `deploy/`, checked where a machine without systemd running,
//! Docker or Kubernetes can check them: the units verify with the real `systemd-analyze`,
//! and every file's timeouts fit together as its comments say.

use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The value after `key` on the first line that has it, up to a quote, space or end.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.contains(key) && !l.trim_start().starts_with('#'))
        .unwrap_or_else(|| panic!("no {key}"));
    let rest = &line[line.find(key).unwrap() + key.len()..];
    rest.trim_start_matches(['"', ' ', ':'])
        .split(['"', ' ', '\''])
        .next()
        .unwrap()
}

fn seconds(v: &str) -> u64 {
    v.trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("not seconds: {v}"))
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    // The example's paths, pointed at this build, so that verify checks what it can.
    let service = read("systemd/app.service")
        .replace(
            "/usr/local/bin/master-process",
            crate::support::master_bin(),
        )
        .replace(
            "/srv/app/current/bin/server",
            crate::support::test_worker().to_str().unwrap(),
        )
        .replace("User=app", "User=root")
        .replace("Group=app", "Group=root");
    std::fs::write(dir.path().join("app.service"), service).unwrap();
    std::fs::write(dir.path().join("app.socket"), read("systemd/app.socket")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./app.socket", "./app.service"])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian's systemd) is required for this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn the_systemd_unit_stops_and_reloads_within_its_timeouts() {
    let unit = read("systemd/app.service");
    let kill = seconds(value(&unit, "MAX_KILL_TIMEOUT="));
    let stop = seconds(value(&unit, "TimeoutStopSec="));
    let start = seconds(value(&unit, "TimeoutStartSec="));
    assert!(
        kill < stop,
        "MAX_KILL_TIMEOUT {kill}s must fit in TimeoutStopSec {stop}s"
    );
    assert!(
        60 + kill < start,
        "reload --wait (60s ready timeout + {kill}s drain) must fit in TimeoutStartSec {start}s"
    );
    assert!(unit.contains("Type=notify") && unit.contains("KillMode=mixed"));
    assert!(unit.contains("ExecReload=/usr/local/bin/master-process reload --wait"));
    assert!(read("systemd/app.socket").contains("Accept=no"));
}

/// The first whole number in `text` after `marker`.
fn number_after(text: &str, marker: &str) -> u64 {
    let start = text.find(marker).unwrap_or_else(|| panic!("no {marker}")) + marker.len();
    let digits: String = text[start..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn the_kubernetes_grace_period_covers_prestop_and_the_drain() {
    let yaml = read("kubernetes/deployment.yaml");
    let grace = number_after(&yaml, "terminationGracePeriodSeconds:");
    let kill = number_after(&yaml, "name: MAX_KILL_TIMEOUT");
    let pre_stop = number_after(&yaml, "command: [\"sleep\"");
    assert!(
        pre_stop + kill < grace,
        "preStop {pre_stop}s + MAX_KILL_TIMEOUT {kill}s must fit in {grace}s"
    );
    let dockerfile = read("docker/Dockerfile");
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/master-process\""),
        "exec form: the master is PID 1"
    );
}
