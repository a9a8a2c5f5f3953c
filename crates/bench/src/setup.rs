//! Before measuring: the binaries (built in release mode in this workspace), `wrk`, the
//! versions and the date.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The programs a benchmark runs, and where the report goes.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `target/release/master-process`.
    pub master: PathBuf,
    /// `target/release/test-worker`.
    pub worker: PathBuf,
    /// `wrk` on the PATH.
    pub wrk: PathBuf,
    /// `target/bench`.
    pub out_dir: PathBuf,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}

/// The target directory: `CARGO_TARGET_DIR`, else the one bench itself runs from
/// (`<target>/release/bench`), else `<workspace>/target`.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return root.join(dir);
    }
    env::current_exe()
        .ok()
        .and_then(|exe| {
            let release = exe.parent()?;
            (release.file_name()? == "release").then(|| release.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| root.join("target"))
}

/// `name` on the PATH, if it is there and executable.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Builds master-process and test-worker in release mode (unless `build` is false) and
/// returns their paths. The caller has already found `wrk`.
pub fn build(build: bool, wrk: PathBuf) -> Result<Bins, String> {
    let target = target_dir();
    if build {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("bench: cargo build --release -p master-process -p test-worker");
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "-p",
                "master-process",
                "-p",
                "test-worker",
            ])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build --release -p master-process -p test-worker failed ({status})"
            ));
        }
    }
    let release = target.join("release");
    let bins = Bins {
        master: release.join("master-process"),
        worker: release.join("test-worker"),
        wrk,
        out_dir: target.join("bench"),
    };
    for bin in [&bins.master, &bins.worker] {
        if !bin.is_file() {
            return Err(format!("{} is missing", bin.display()));
        }
    }
    Ok(bins)
}

/// The first line a program prints (stdout, else stderr) for `args`.
pub(crate) fn first_line(program: &Path, args: &[&str], dir: Option<&Path>) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    match cmd.output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// `(name, version)` of what was measured and what measured it.
pub fn versions(bins: &Bins) -> Vec<(String, String)> {
    let root = workspace_root();
    let git = first_line(
        Path::new("git"),
        &["describe", "--always", "--dirty", "--abbrev=12"],
        Some(&root),
    );
    let wrk = first_line(&bins.wrk, &["--version"], None);
    let wrk = wrk.split(" Copyright").next().unwrap_or(&wrk).to_owned();
    vec![
        (
            "master-process".into(),
            first_line(&bins.master, &["--version"], None),
        ),
        ("wrk".into(), wrk),
        (
            "rustc".into(),
            first_line(Path::new("rustc"), &["--version"], None),
        ),
        ("git".into(), git),
    ]
}

/// The current time in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
