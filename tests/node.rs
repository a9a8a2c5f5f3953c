//! A real Node.js worker (`server.listen({fd: 3})`) passes the zero-downtime test.

use loadgen::Mode;

use crate::support::Master;
use crate::zero_downtime::reloads_under_load;

fn node_server() -> String {
    let status = std::process::Command::new("node").arg("--version").output();
    assert!(
        status.is_ok_and(|o| o.status.success()),
        "Node.js is required for this test (CI installs it: apt-get install nodejs)"
    );
    format!(
        "{}/tests/fixtures/node/server.js",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn node_worker_ready_by_delay_loses_no_request_across_twenty_reloads() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "delay:500ms"])
        .command(["node".to_string(), node_server()])
        .start();
    reloads_under_load(&mut m, Mode::Close, 20);
}

#[test]
fn node_worker_ready_by_systemd_notify_loses_no_request_on_keep_alive_connections() {
    let mut m = Master::cmd()
        .args(["-l", "127.0.0.1:0", "-w", "2", "--ready", "notify"])
        .env("NODE_READY", "systemd-notify")
        .command(["node".to_string(), node_server()])
        .start();
    reloads_under_load(&mut m, Mode::KeepAlive, 20);
}
