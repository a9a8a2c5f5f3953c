//! Finding node and installing the peers at pinned versions under `target/bench/peers/`:
//! pm2 with npm, gunicorn in a Python venv. Nothing global; an install that is there already
//! at the right version is kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::reference::{self, Reference};
use crate::process::run_tool;
use crate::{Ctx, setup};

/// The pm2 release installed and measured.
const PM2_VERSION: &str = "7.0.4";
/// The gunicorn release installed and measured.
pub const GUNICORN_VERSION: &str = "27.0.1";
/// How long an install step may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The tools found or installed.
#[derive(Debug)]
pub struct Tools {
    /// `node` on the PATH.
    pub node: Option<PathBuf>,
    /// pm2, or why not.
    pub pm2: Result<PathBuf, String>,
    /// gunicorn, or why not.
    pub gunicorn: Result<PathBuf, String>,
    /// The reference module (`--reference PATH`), or why not; `None` without `--reference`.
    pub reference: Option<Result<Reference, String>>,
    /// Where pm2's home and gunicorn's control sockets go.
    pub peers: PathBuf,
    /// What was installed or skipped, for the report.
    pub notes: Vec<String>,
    /// `(name, version)` of everything measured.
    pub versions: Vec<(String, String)>,
}

impl Tools {
    /// The installed reference module, if `--reference` was given and it installed.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()?.as_ref().ok()
    }

    /// One sentence for a section's intro: which reference ran.
    pub fn reference_sentence(&self) -> String {
        match self.reference() {
            Some(r) => format!(
                "**The reference is the real module**: master-process {} for Node.js (from {}), \
                 installed under `target/bench/reference` by `--reference` and started as its \
                 README says, its `init()` line first (`crates/bench/apps/node/reference-app.js`), \
                 SIGHUP to that process to reload.",
                r.version, r.source
            ),
            None => "**The reference module itself did not run** (no `--reference PATH`, or its \
                     install failed: see the notes): its stand-in, \
                     `crates/bench/apps/node/cluster-server.js`, reloads as it did (Node's \
                     cluster, every slot at once, the old worker SIGTERMed when its replacement \
                     listens)."
                .to_owned(),
        }
    }
}

/// `"version": "X"` from a package.json.
fn package_version(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let rest = &text[text.find("\"version\"")? + "\"version\"".len()..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn install_pm2(ctx: &Ctx, peers: &Path, notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let pkg = peers.join("node_modules/pm2/package.json");
    let bin = peers.join("node_modules/.bin/pm2");
    let dir = peers.display();
    if package_version(&pkg).as_deref() == Some(PM2_VERSION) && bin.exists() {
        notes.push(format!("pm2 {PM2_VERSION}: already installed in `{dir}`"));
        return Ok(bin);
    }
    let npm = setup::find_in_path("npm").ok_or("npm is not installed")?;
    eprintln!("bench: peers: npm install --prefix {dir} pm2@{PM2_VERSION}");
    let started = Instant::now();
    let mut cmd = Command::new(npm);
    cmd.arg("install")
        .arg("--prefix")
        .arg(peers)
        .arg(format!("pm2@{PM2_VERSION}"));
    cmd.args(["--no-audit", "--no-fund", "--loglevel=error"]);
    run_tool("npm install pm2", cmd, INSTALL_TIMEOUT, ctx.opts.verbose)?;
    match package_version(&pkg) {
        Some(v) if v == PM2_VERSION && bin.exists() => {
            notes.push(format!(
                "pm2 {PM2_VERSION}: installed now with `npm install --prefix {dir} pm2@{PM2_VERSION}` \
                 ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
            Ok(bin)
        }
        other => Err(format!(
            "npm install ran but node_modules/pm2 is {other:?}, not {PM2_VERSION}"
        )),
    }
}

fn gunicorn_version(gunicorn: &Path) -> Option<String> {
    if !gunicorn.is_file() {
        return None;
    }
    let line = setup::first_line(gunicorn, &["--version"], None);
    // `gunicorn (version 27.0.1)`
    let v = line.split("version ").nth(1)?.trim_end_matches(')').trim();
    Some(v.to_owned())
}

fn install_gunicorn(ctx: &Ctx, peers: &Path, notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let venv = peers.join("venv");
    let gunicorn = venv.join("bin/gunicorn");
    if gunicorn_version(&gunicorn).as_deref() == Some(GUNICORN_VERSION) {
        let dir = venv.display();
        notes.push(format!(
            "gunicorn {GUNICORN_VERSION}: already installed in `{dir}`"
        ));
        return Ok(gunicorn);
    }
    let python = setup::find_in_path("python3").ok_or("python3 is not installed")?;
    let started = Instant::now();
    if !venv.join("bin/python").exists() {
        eprintln!("bench: peers: python3 -m venv {}", venv.display());
        let mut cmd = Command::new(python);
        cmd.args(["-m", "venv"]).arg(&venv);
        run_tool("python3 -m venv", cmd, INSTALL_TIMEOUT, ctx.opts.verbose)?;
    }
    eprintln!("bench: peers: pip install gunicorn=={GUNICORN_VERSION}");
    let mut cmd = Command::new(venv.join("bin/pip"));
    let pin = format!("gunicorn=={GUNICORN_VERSION}");
    cmd.args(["install", "--disable-pip-version-check", "-q", &pin]);
    run_tool(
        "pip install gunicorn",
        cmd,
        INSTALL_TIMEOUT,
        ctx.opts.verbose,
    )?;
    match gunicorn_version(&gunicorn) {
        Some(v) if v == GUNICORN_VERSION => {
            notes.push(format!(
                "gunicorn {GUNICORN_VERSION}: installed now with `python3 -m venv {0}` and \
                 `{0}/bin/pip install gunicorn=={GUNICORN_VERSION}` ({1:.0} s)",
                venv.display(),
                started.elapsed().as_secs_f64()
            ));
            Ok(gunicorn)
        }
        other => Err(format!(
            "pip install ran but gunicorn is {other:?}, not {GUNICORN_VERSION}"
        )),
    }
}

/// Finds node, installs pm2, gunicorn and the reference (if given) if need be, and notes
/// their versions.
pub fn tools(ctx: &Ctx) -> Tools {
    let peers = ctx.bins.out_dir.join("peers");
    let mut notes = Vec::new();
    let node = setup::find_in_path("node");
    let made =
        fs::create_dir_all(&peers).map_err(|e| format!("cannot create {}: {e}", peers.display()));
    let pm2 = match (&made, &node) {
        (Err(e), _) => Err(e.clone()),
        (Ok(()), None) => Err("node is not installed".to_owned()),
        (Ok(()), Some(_)) => install_pm2(ctx, &peers, &mut notes),
    };
    let reference = ctx.opts.reference.as_ref().map(|path| match &node {
        None => Err("node is not installed".to_owned()),
        Some(_) => reference::install(ctx, path, &mut notes),
    });
    let gunicorn = made.and_then(|()| install_gunicorn(ctx, &peers, &mut notes));
    if let Err(e) = &pm2 {
        notes.push(format!("**pm2 skipped**: {e}"));
    }
    match &reference {
        Some(Err(e)) => notes.push(format!(
            "**the reference module could not be installed**; the stand-in \
             (`crates/bench/apps/node/cluster-server.js`) runs in its place: {e}"
        )),
        None => notes.push(
            "the reference module itself was not given (`--reference PATH`): the stand-in \
             `crates/bench/apps/node/cluster-server.js`, a Node.js cluster primary that \
             reloads as the reference did, runs in its place"
                .to_owned(),
        ),
        Some(Ok(_)) => {}
    }
    if let Err(e) = &gunicorn {
        notes.push(format!(
            "**gunicorn skipped** (and with it every Python run): {e}"
        ));
    }
    let version = |bin: &Path| setup::first_line(bin, &["--version"], None);
    let mut versions = vec![("master-process".to_owned(), version(&ctx.bins.master))];
    if let Some(node) = &node {
        versions.push(("node".into(), version(node)));
    }
    if let Some(Ok(r)) = &reference {
        let what = format!("{} ({})", r.version, r.source);
        versions.push((
            "the reference module (master-process for Node.js)".into(),
            what,
        ));
    }
    if pm2.is_ok() {
        let pm2 = package_version(&peers.join("node_modules/pm2/package.json"));
        versions.push(("pm2".into(), pm2.unwrap_or_default()));
    }
    if let Ok(g) = &gunicorn {
        versions.push(("python".into(), version(&peers.join("venv/bin/python"))));
        versions.push(("gunicorn".into(), gunicorn_version(g).unwrap_or_default()));
    }
    Tools {
        node,
        pm2,
        gunicorn,
        reference,
        peers,
        notes,
        versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_package_version() {
        let dir = std::env::temp_dir().join(format!("bench-peers-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let pkg = dir.join("package.json");
        fs::write(
            &pkg,
            "{\n  \"name\": \"pm2\",\n  \"version\": \"7.0.4\",\n}",
        )
        .expect("write");
        assert_eq!(package_version(&pkg).as_deref(), Some("7.0.4"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
