//! The reference module, the original Node.js `master-process`, installed from `--reference
//! PATH` under `target/bench/reference/node_modules/master-process`.
//!
//! PATH is a checkout (its files are copied, `.git` and `node_modules` left out) or a git
//! directory (a bare mirror: `git archive HEAD` is extracted). Its dependencies come from npm
//! (`npm install --omit=dev`, in the module's own folder). None of its code is part of this
//! repository: it exists only under `target/`, and only when asked for. Apps reach it with
//! `NODE_PATH` (see `crates/bench/apps/node/reference-app.js`). An install from the same
//! source and commit is kept from one run to the next.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::run_tool;
use crate::{Ctx, setup};

/// How long an install step may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The reference's runtime dependencies, whose installed versions the report gives.
const DEPENDENCIES: [&str; 5] = ["async", "bytes", "debug", "ms", "pidusage"];

/// The installed reference.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `NODE_PATH` under which `require('master-process')` finds it.
    pub node_path: PathBuf,
    /// Its `package.json` version.
    pub version: String,
    /// Where it came from, and its commit if known: for the report.
    pub source: String,
}

/// The reference installed in this run, if any.
static INSTALLED: OnceLock<Reference> = OnceLock::new();

/// The reference installed in this run, if any.
pub fn installed() -> Option<&'static Reference> {
    INSTALLED.get()
}

/// What PATH is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A folder with the module's `package.json`.
    Checkout,
    /// A git directory (bare, or a `.git`).
    GitDir,
}

fn kind(path: &Path) -> Result<Kind, String> {
    if path.join("package.json").is_file() {
        Ok(Kind::Checkout)
    } else if path.join("HEAD").is_file() && path.join("objects").is_dir() {
        Ok(Kind::GitDir)
    } else {
        Err(format!(
            "--reference {}: neither a checkout (no package.json) nor a git directory",
            path.display()
        ))
    }
}

/// The commit of a git source, `-dirty` if a checkout has changes; `None` if not git.
fn commit(path: &Path, kind: Kind) -> Option<String> {
    let git = Path::new("git");
    let line = match kind {
        Kind::GitDir => {
            let dir = format!("--git-dir={}", path.display());
            setup::first_line(git, &[&dir, "rev-parse", "HEAD"], None)
        }
        Kind::Checkout if path.join(".git").exists() => setup::first_line(
            git,
            &["describe", "--always", "--dirty", "--abbrev=40"],
            Some(path),
        ),
        Kind::Checkout => return None,
    };
    let ok = line.len() >= 40 && line[..40].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(line)
}

/// `"key": "value"` from a package.json.
fn json_field(text: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\"");
    let rest = &text[text.find(&pat)? + pat.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// Copies a checkout's files, leaving out `.git` and `node_modules`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == "node_modules" {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Installs the reference from `path` (see the module's docs); `notes` get what was done.
pub fn install(ctx: &Ctx, path: &Path, notes: &mut Vec<String>) -> Result<Reference, String> {
    let path = path
        .canonicalize()
        .map_err(|e| format!("--reference {}: {e}", path.display()))?;
    let kind = kind(&path)?;
    let commit = commit(&path, kind);
    let source = match &commit {
        Some(c) => format!("{} at {c}", path.display()),
        None => path.display().to_string(),
    };
    let root = ctx.bins.out_dir.join("reference");
    let node_path = root.join("node_modules");
    let module = node_path.join("master-process");
    let marker = root.join("source.txt");
    let installed = |module: &Path| -> Option<String> {
        let text = fs::read_to_string(module.join("package.json")).ok()?;
        (json_field(&text, "name")? == "master-process").then_some(())?;
        let node_modules = module.join("node_modules");
        DEPENDENCIES
            .iter()
            .all(|d| node_modules.join(d).is_dir())
            .then_some(())?;
        json_field(&text, "version")
    };
    let same_source = commit.is_some()
        && kind == Kind::GitDir
        && fs::read_to_string(&marker).is_ok_and(|m| m == source);
    if same_source && let Some(version) = installed(&module) {
        notes.push(format!(
            "the reference module {version} (from {source}): already installed in `{}`",
            module.display()
        ));
        let r = Reference {
            node_path,
            version,
            source,
        };
        let _ = INSTALLED.set(r.clone());
        return Ok(r);
    }
    let started = Instant::now();
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| format!("cannot clear {}: {e}", root.display()))?;
    }
    fs::create_dir_all(&module).map_err(|e| format!("cannot create {}: {e}", module.display()))?;
    let echo = ctx.opts.verbose;
    match kind {
        Kind::GitDir => {
            let tar = root.join("reference.tar");
            eprintln!("bench: reference: git archive HEAD from {}", path.display());
            let mut cmd = Command::new("git");
            cmd.arg(format!("--git-dir={}", path.display()))
                .args(["archive", "--format=tar", "-o"])
                .arg(&tar)
                .arg("HEAD");
            run_tool("git archive", cmd, INSTALL_TIMEOUT, echo)?;
            let mut cmd = Command::new("tar");
            cmd.arg("-xf").arg(&tar).arg("-C").arg(&module);
            run_tool("tar -x", cmd, INSTALL_TIMEOUT, echo)?;
            let _ = fs::remove_file(&tar);
        }
        Kind::Checkout => {
            copy_tree(&path, &module).map_err(|e| format!("cannot copy {}: {e}", path.display()))?
        }
    }
    let npm = setup::find_in_path("npm").ok_or("npm is not installed")?;
    eprintln!(
        "bench: reference: npm install --omit=dev in {}",
        module.display()
    );
    let mut cmd = Command::new(npm);
    cmd.args([
        "install",
        "--omit=dev",
        "--no-audit",
        "--no-fund",
        "--no-package-lock",
        "--loglevel=error",
    ])
    .current_dir(&module);
    run_tool("npm install (the reference)", cmd, INSTALL_TIMEOUT, echo)?;
    let version = installed(&module).ok_or_else(|| {
        format!(
            "{} is not the master-process module with its dependencies installed",
            module.display()
        )
    })?;
    let _ = fs::write(&marker, &source);
    let deps: Vec<String> = DEPENDENCIES
        .iter()
        .map(|d| {
            let pkg = module.join("node_modules").join(d).join("package.json");
            let text = fs::read_to_string(pkg).unwrap_or_default();
            format!("{d} {}", json_field(&text, "version").unwrap_or_default())
        })
        .collect();
    notes.push(format!(
        "the reference module {version} (from {source}): installed now in `{}` \
         (`npm install --omit=dev`: {}; {:.0} s)",
        module.display(),
        deps.join(", "),
        started.elapsed().as_secs_f64()
    ));
    let r = Reference {
        node_path,
        version,
        source,
    };
    let _ = INSTALLED.set(r.clone());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_fields_and_kinds() {
        let text = "{\n  \"name\": \"master-process\",\n  \"version\" : \"4.2.0\",\n}";
        assert_eq!(json_field(text, "name").as_deref(), Some("master-process"));
        assert_eq!(json_field(text, "version").as_deref(), Some("4.2.0"));
        assert_eq!(json_field(text, "main"), None);
        let dir = std::env::temp_dir().join(format!("bench-ref-{}", std::process::id()));
        fs::create_dir_all(dir.join("objects")).expect("dir");
        assert!(kind(&dir).is_err());
        fs::write(dir.join("HEAD"), "ref: refs/heads/master\n").expect("HEAD");
        assert_eq!(kind(&dir), Ok(Kind::GitDir));
        fs::write(dir.join("package.json"), text).expect("package.json");
        assert_eq!(kind(&dir), Ok(Kind::Checkout));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
