//! The command line.

/// `--help`.
pub const USAGE: &str = "\
usage: cargo run --release -p bench -- [OPTIONS]

  --reps N          wrk runs of each side per mode (default 5)
  --duration SECS   length of one wrk run, e.g. 5 or 5s (default 5)
  --storm-secs N    reloads in each reload storm, one per second (default 20; the
                    storm and peers sections)
  --idle-secs N     idle period for the master's idle CPU and wakeups (default 5)
  --detect-reloads N
                    reloads, one at a time, in each run of the detection section
                    (default 40)
  --monitor-secs N  measured period of each default-interval master of the monitor
                    section; its 100 ms-interval masters get half of it (default 20)
  --quick           smoke run: --reps 2 --duration 2 --storm-secs 5 --idle-secs 2
                    --detect-reloads 8 --monitor-secs 6 (explicit options win)
  --only LIST       comma-separated sections to run: throughput, storm, detection,
                    monitor, peers (peers installs pm2 and gunicorn under
                    target/bench/peers on first use: npm and PyPI)
  --no-build        use the binaries already in target/release
  -v, --verbose     copy every child's output to stderr
  -h, --help        this text";

/// The options.
#[derive(Debug, Clone)]
pub struct Opts {
    /// wrk repetitions per side and mode.
    pub reps: usize,
    /// Seconds per wrk run.
    pub duration_s: u64,
    /// SIGHUPs per storm.
    pub storm_secs: u64,
    /// Idle seconds for the idle CPU and wakeup figures.
    pub idle_secs: u64,
    /// Reloads per run of the detection section.
    pub detect_reloads: usize,
    /// Measured seconds of each default-interval master of the monitor section.
    pub monitor_secs: u64,
    /// `--quick` was given.
    pub quick: bool,
    /// Build the binaries first.
    pub build: bool,
    /// Echo children's output.
    pub verbose: bool,
    /// Sections to run (all if `None`).
    pub only: Option<Vec<String>>,
}

/// The numeric options: the defaults, then those of `--quick`.
const DEFAULTS: Numbers = [5, 5, 20, 5, 40, 20];
const QUICK: Numbers = [2, 2, 5, 2, 8, 6];
const FLAGS: [&str; 6] = [
    "--reps",
    "--duration",
    "--storm-secs",
    "--idle-secs",
    "--detect-reloads",
    "--monitor-secs",
];
type Numbers = [u64; 6];

fn number(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let digits = value.strip_suffix('s').unwrap_or(&value);
    digits
        .parse()
        .map_err(|_| format!("invalid {flag} value {value:?}"))
}

impl Opts {
    /// Parses the command line (without the program name); `Ok(None)` for `--help`.
    /// `sections` are the names `--only` accepts.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        sections: &[&str],
    ) -> Result<Option<Opts>, String> {
        let mut given: [Option<u64>; 6] = [None; 6];
        let (mut quick, mut build, mut verbose, mut only) = (false, true, false, None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next());
            if let Some(i) = FLAGS.iter().position(|f| *f == flag) {
                given[i] = Some(number(&flag, value())?);
                continue;
            }
            match flag.as_str() {
                "--quick" => quick = true,
                "--no-build" => build = false,
                "-v" | "--verbose" => verbose = true,
                "--only" => {
                    let list = value().ok_or("--only needs a value")?;
                    let names: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
                    if let Some(n) = names.iter().find(|n| !sections.contains(&n.as_str())) {
                        return Err(format!("unknown section {n:?}"));
                    }
                    only = Some(names);
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let base = if quick { QUICK } else { DEFAULTS };
        let [
            reps,
            duration_s,
            storm_secs,
            idle_secs,
            detect,
            monitor_secs,
        ] = std::array::from_fn(|i| given[i].unwrap_or(base[i]));
        if reps == 0 || duration_s == 0 || storm_secs == 0 || detect == 0 {
            return Err(
                "--reps, --duration, --storm-secs and --detect-reloads must be at least 1".into(),
            );
        }
        if monitor_secs < 2 {
            return Err("--monitor-secs must be at least 2".into());
        }
        Ok(Some(Opts {
            reps: reps as usize,
            duration_s,
            storm_secs,
            idle_secs,
            detect_reloads: detect as usize,
            monitor_secs,
            quick,
            build,
            verbose,
            only,
        }))
    }

    /// Whether section `id` runs.
    pub fn wants(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|n| n == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Opts>, String> {
        let sections = ["throughput", "storm", "detection", "monitor", "peers"];
        Opts::parse(args.iter().map(|s| s.to_string()), &sections)
    }

    fn opts(args: &[&str]) -> Opts {
        parse(args).expect("ok").expect("opts")
    }

    #[test]
    fn options() {
        let o = opts(&[]);
        assert_eq!(
            (o.reps, o.duration_s, o.storm_secs, o.idle_secs),
            (5, 5, 20, 5)
        );
        assert_eq!((o.detect_reloads, o.monitor_secs), (40, 20));
        let o = opts(&["--reps", "3", "--quick", "--duration=4s"]);
        assert_eq!(
            (o.reps, o.duration_s, o.storm_secs, o.idle_secs),
            (3, 4, 5, 2)
        );
        assert_eq!((o.detect_reloads, o.monitor_secs), (8, 6));
        let o = opts(&["--quick", "--monitor-secs", "10s", "--only", "monitor"]);
        assert_eq!(o.monitor_secs, 10);
        assert!(o.wants("monitor") && !o.wants("detection"));
        assert!(parse(&["--monitor-secs", "1"]).is_err());
        let o = opts(&["--quick", "--detect-reloads", "12", "--only", "detection"]);
        assert_eq!(o.detect_reloads, 12);
        assert!(o.wants("detection") && !o.wants("storm"));
        assert!(parse(&["--detect-reloads", "0"]).is_err());
        assert!(opts(&["--only", "storm"]).wants("storm"));
        assert!(!opts(&["--only", "storm"]).wants("throughput"));
        assert!(parse(&["--only", "nope"]).is_err());
        assert!(parse(&["--reps", "0"]).is_err());
        assert!(parse(&["--reps"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["-h"]).expect("ok").is_none());
    }
}
