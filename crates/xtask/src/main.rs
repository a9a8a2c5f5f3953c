//! `cargo xtask test`: runs the whole test suite on a fresh machine with Rust.
//!
//! The tests use real peers (Node.js and npm, Python with the Prometheus client, systemd's
//! tools, tmux, ss, strace, curl, gcc, Go): what is missing is installed first (Debian
//! packages with apt-get, as root or through sudo; the Prometheus client from PyPI), and so
//! is `cargo-nextest`, which runs each test in its own process. Then the tests run: every
//! integration and unit test under nextest (the `ci` profile of `.config/nextest.toml`), and
//! the documentation's examples with `cargo test --doc`.
//!
//! `cargo xtask test -- ARGS` passes ARGS to nextest (a filter, `--no-fail-fast`...).

use std::process::{Command, ExitCode};

/// A program the tests run, and the Debian package that has it.
const TOOLS: [(&str, &str); 13] = [
    ("node", "nodejs"),
    ("npm", "npm"),
    ("python3", "python3"),
    ("curl", "curl"),
    ("strace", "strace"),
    ("systemd-notify", "systemd"),
    ("systemd-socket-activate", "systemd"),
    ("unshare", "util-linux"),
    ("ss", "iproute2"),
    ("tmux", "tmux"),
    ("gcc", "gcc"),
    ("go", "golang-go"),
    ("setpriv", "util-linux"),
];

/// A file the tests need that no program stands for, and the Debian package that has it:
/// `gcc -static` needs the C library's headers and static archive, which `gcc` only
/// recommends (not installed with `--no-install-recommends`).
const FILES: [(&str, &str); 1] = [("/usr/include/stdio.h", "libc6-dev")];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((task, rest)) if task == "test" => test(rest),
        _ => {
            eprintln!("usage: cargo xtask test [-- NEXTEST ARGS]");
            ExitCode::from(2)
        }
    }
}

fn test(extra: &[String]) -> ExitCode {
    if let Err(why) = install_tools() {
        eprintln!("xtask: {why}");
        return ExitCode::from(1);
    }
    let extra: Vec<&str> = extra
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--")
        .collect();
    let mut nextest = vec![
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--locked",
        "--profile",
        "ci",
    ];
    nextest.extend(&extra);
    for step in [
        nextest,
        vec!["test", "--workspace", "--all-features", "--doc", "--locked"],
    ] {
        if !run("cargo", &step) {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// Installs what is missing: Debian packages, the Prometheus client, cargo-nextest.
fn install_tools() -> Result<(), String> {
    let mut packages: Vec<&str> = TOOLS
        .iter()
        .filter(|(program, _)| !found(program))
        .map(|(_, package)| *package)
        .chain(
            FILES
                .iter()
                .filter(|(file, _)| !std::path::Path::new(file).exists())
                .map(|(_, package)| *package),
        )
        .collect();
    packages.sort_unstable();
    packages.dedup();
    if !packages.is_empty() {
        println!("xtask: installing {}", packages.join(" "));
        let sudo = !is_root();
        apt(sudo, &["update", "-q"])?;
        let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
        install.extend(&packages);
        apt(sudo, &install)?;
    }
    if !run_quiet("python3", &["-c", "import prometheus_client"]) {
        println!("xtask: installing prometheus-client (PyPI)");
        if !run(
            "python3",
            &["-m", "pip", "install", "-q", "prometheus-client"],
        ) {
            apt(
                !is_root(),
                &["install", "-y", "-q", "python3-prometheus-client"],
            )?;
        }
    }
    if !run_quiet("cargo", &["nextest", "--version"]) {
        println!("xtask: installing cargo-nextest");
        if !run("cargo", &["install", "cargo-nextest", "--locked"]) {
            return Err("cannot install cargo-nextest".into());
        }
    }
    Ok(())
}

fn apt(sudo: bool, args: &[&str]) -> Result<(), String> {
    let ok = if sudo {
        let mut all = vec!["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"];
        all.extend(args);
        run("sudo", &all)
    } else {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        status.is_ok_and(|s| s.success())
    };
    if ok {
        Ok(())
    } else {
        Err(format!("apt-get {} failed", args.join(" ")))
    }
}

/// Whether `program` is on PATH.
fn found(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a command with the terminal's stdio; whether it succeeded.
fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command silently; whether it succeeded.
fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}
