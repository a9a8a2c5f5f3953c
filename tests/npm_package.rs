//! The npm package as a user gets it: `packages/node/pack` writes the tarballs, a fresh
//! project installs them offline (`npm install OUT/*.tgz`), and `require('master-process')`
//! finds the binary of the platform package, honours `MASTER_PROCESS_BIN`, falls back to
//! one process with one warning line. (The master over the app's own command line: npm_e2e.)

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::npm_support::{install, node_once, pack, package_dir, require_tool};
use crate::support::master_bin;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The platform package of this machine (the tests run on Linux x86-64 with glibc).
const PLATFORM_PACKAGE: &str = "@master-process/linux-x64-gnu";

/// A fresh project with the packed tarballs installed.
struct Project {
    dir: TempDir,
    _out: TempDir,
}

impl Project {
    fn new() -> Project {
        let out = tempfile::tempdir().unwrap();
        let tarballs = pack(out.path());
        let names: Vec<String> = tarballs
            .iter()
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                format!("master-process-{VERSION}.tgz"),
                format!("master-process-linux-x64-gnu-{VERSION}.tgz")
            ],
            "every tarball a user installs, at the crate's version"
        );
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), &tarballs);
        Project { dir, _out: out }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// The binary the platform package installed.
    fn platform_binary(&self) -> PathBuf {
        self.path()
            .join("node_modules")
            .join(PLATFORM_PACKAGE)
            .join("bin/master-process")
    }
}

#[test]
fn the_package_versions_are_the_crate_version() {
    require_tool("node");
    let out = node_once(
        &package_dir(),
        &[
            "-p",
            "const p = require('./package.json'); [p.version, ...Object.values(p.optionalDependencies)].join(' ')",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for v in out.stdout.split_whitespace() {
        assert_eq!(
            v, VERSION,
            "packages/node/package.json is out of sync with Cargo.toml"
        );
    }
}

#[test]
fn a_fresh_install_finds_the_binary_in_the_platform_package_or_falls_back_loudly() {
    let p = Project::new();
    let dir = p.path();
    let bin = p.platform_binary();
    let meta = std::fs::metadata(&bin).expect("the platform package holds bin/master-process");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o111, 0o111, "executable");

    // The npm command runs the platform package's binary...
    let shim = dir.join("node_modules/.bin/master-process");
    let shim = shim.to_str().unwrap();
    let out = node_once(dir, &[shim, "--version"], &[("DEBUG", "master-process")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("master-process {VERSION}"));
    assert!(
        out.stderr
            .contains(&format!("using {} ({PLATFORM_PACKAGE})", bin.display())),
        "{}",
        out.stderr
    );
    // ...or MASTER_PROCESS_BIN when set...
    let out = node_once(
        dir,
        &[shim, "--version"],
        &[
            ("DEBUG", "master-process"),
            ("MASTER_PROCESS_BIN", master_bin()),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("using {} (MASTER_PROCESS_BIN)", master_bin())),
        "{}",
        out.stderr
    );
    // ...and a MASTER_PROCESS_BIN that is no binary fails loudly, in init() too.
    let app = p.write(
        "app.js",
        "require('master-process').init();\nconsole.log('app ran');\n",
    );
    for args in [vec![shim, "--version"], vec![app.as_str()]] {
        let out = node_once(dir, &args, &[("MASTER_PROCESS_BIN", "/nonexistent")]);
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(
            out.stderr
                .contains("MASTER_PROCESS_BIN=/nonexistent is not an executable file"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("app ran"), "{args:?}: {}", out.stdout);
    }

    // No master possible or wanted: init() returns, the app runs as one process, and one
    // line on stderr says why.
    let print = "console.log(JSON.stringify(require('master-process').init()))";
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&[], &[("MASTER_PROCESS", "off")], "MASTER_PROCESS=off"),
        (&[], &[("NODE_ENV", "test")], "NODE_ENV=test"),
        (
            &[],
            &[("NODE_TEST_CONTEXT", "child-v8")],
            "under a test runner (node --test)",
        ),
        (&["--inspect=127.0.0.1:0"], &[], "a debugger is attached"),
        (
            &[],
            &[("WATCH_REPORT_DEPENDENCIES", "1")],
            "under node --watch",
        ),
    ];
    for (flags, env, reason) in cases {
        let mut args = flags.to_vec();
        args.extend(["-e", print]);
        let out = node_once(dir, &args, env);
        assert_eq!(out.code, 0, "{reason}: {}", out.stderr);
        assert_eq!(
            out.stdout.trim(),
            format!(r#"{{"role":"standalone","reason":"{reason}"}}"#)
        );
        let warnings: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("master-process:"))
            .collect();
        assert_eq!(
            warnings,
            [format!(
                "master-process: running as a single process, without master ({reason}); SIGHUP will not reload it"
            )],
            "{reason}: one warning line"
        );
    }

    // In a worker: init() returns at once with the indexes, and the drain is installed; the
    // same through ESM imports (named and default).
    let worker = [
        ("MASTER_PROCESS_WORKER", "1"),
        ("WORKER_INDEX", "1"),
        ("RELOAD_INDEX", "2"),
    ];
    let check = "JSON.stringify([r, typeof globalThis[Symbol.for('master-process.drain')], process.listenerCount('SIGTERM')])";
    let cjs = node_once(
        dir,
        &[
            "-p",
            &format!("const r = require('master-process').init(); {check}"),
        ],
        &worker,
    );
    let esm = p.write(
        "esm.mjs",
        &format!(
            "import {{ init }} from 'master-process';\nimport mp from 'master-process';\n\
             if (init !== mp.init) throw new Error('two inits');\nconst r = init();\nconsole.log({check});\n"
        ),
    );
    let esm = node_once(dir, &[&esm], &worker);
    for out in [cjs, esm] {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stdout.trim(),
            r#"[{"role":"worker","workerIndex":1,"reloadIndex":2},"object",1]"#
        );
        assert_eq!(out.stderr, "", "no warning in a worker");
    }

    // No binary anywhere (no platform package, none on PATH): one process, one warning.
    std::fs::remove_dir_all(dir.join("node_modules/@master-process")).unwrap();
    // PATH: a folder with node alone (a master-process installed beside node must not count).
    let node_only = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(which("node"), node_only.path().join("node")).unwrap();
    let node_dir = node_only.path().display().to_string();
    let out = node_once(dir, &["-e", print], &[("PATH", &node_dir)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "master-process: running as a single process, without master (no master-process binary for linux-x64-gnu (the optional dependency {PLATFORM_PACKAGE} is not installed"
        )),
        "{}",
        out.stderr
    );
    // The npm command does not take itself for the binary (node_modules/.bin is on PATH
    // under `npm run`)...
    let bin_dir = dir.join("node_modules/.bin").display().to_string();
    let path = format!("{bin_dir}:{node_dir}");
    let out = node_once(dir, &[shim, "--version"], &[("PATH", &path)]);
    assert_eq!(out.code, 2, "the npm command without a binary: {out:?}");
    assert!(
        out.stderr.contains("no binary for linux-x64-gnu"),
        "{}",
        out.stderr
    );
    // ...and finds a master-process on PATH, last.
    let on_path = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(master_bin(), on_path.path().join("master-process")).unwrap();
    let path = format!("{path}:{}", on_path.path().display());
    let out = node_once(
        dir,
        &[shim, "--version"],
        &[("PATH", &path), ("DEBUG", "master-process")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "using {}/master-process (PATH)",
            on_path.path().display()
        )),
        "{}",
        out.stderr
    );
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}
