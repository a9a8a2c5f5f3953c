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
  --scale-workers N the most workers of the scale sweeps: 1, 2, 4 ... N (default 128)
  --scale-reloads N reloads per point of the scale sweeps (default 3)
  --probe-secs N    how long a never-ready worker is watched (default 60; at least 6)
  --scale-secs N    measured period per point of the scale monitor sweep (default 6)
  --burst N         connections of the scale burst (default 2000)
  --soak-reloads N  reloads back to back in the scale soak (default 10000)
  --queue-clients N the most concurrent clients of the queue section: 64, 256 ... N
                    (default 4096)
  --queue-reloads N reloads per point of the queue section, one per second (default 3)
  --bind-cycles N   socket/bind/listen/close cycles per run of the adoption section
                    (default 5000)
  --scrape-secs N   scrapes of /metrics, one per second, in the metrics section
                    (default 20)
  --reference PATH  the reference module (the original Node.js master-process): a
                    checkout, or a git directory to `git archive` HEAD from. It is
                    installed under target/bench/reference (`npm install --omit=dev`
                    of its dependencies) and measured in the peers, queue and naive
                    sections; without it, those use a stand-in that reloads as it did
                    (crates/bench/apps/node/cluster-server.js), and say so
  --quick           smoke run: --reps 2 --duration 2 --storm-secs 5 --idle-secs 2
                    --detect-reloads 8 --monitor-secs 6 --scale-workers 16
                    --scale-reloads 2 --probe-secs 8 --scale-secs 4 --burst 500
                    --soak-reloads 300 --queue-clients 256 --queue-reloads 2
                    --bind-cycles 1000 --scrape-secs 5 (explicit options win)
  --only LIST       comma-separated sections to run: throughput, storm, detection,
                    monitor, metrics, adoption, peers, naive, scale, queue (peers,
                    naive and queue install pm2 and gunicorn under target/bench/peers
                    on first use: npm and PyPI)
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
    /// The most workers of the scale sweeps.
    pub scale_workers: usize,
    /// Reloads per point of the scale sweeps.
    pub scale_reloads: usize,
    /// Seconds a never-ready worker is watched.
    pub probe_secs: u64,
    /// Measured seconds per point of the scale monitor sweep.
    pub scale_secs: u64,
    /// Connections of the scale burst.
    pub burst: usize,
    /// Reloads of the scale soak.
    pub soak_reloads: usize,
    /// The most concurrent clients of the queue section.
    pub queue_clients: usize,
    /// Reloads per point of the queue section.
    pub queue_reloads: u64,
    /// socket/bind/listen/close cycles per run of the adoption section.
    pub bind_cycles: u64,
    /// Scrapes of /metrics in the metrics section.
    pub scrape_secs: u64,
    /// `--reference PATH`: the reference module's checkout or git directory.
    pub reference: Option<std::path::PathBuf>,
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
const DEFAULTS: Numbers = [
    5, 5, 20, 5, 40, 20, 128, 3, 60, 6, 2000, 10_000, 4096, 3, 5000, 20,
];
const QUICK: Numbers = [2, 2, 5, 2, 8, 6, 16, 2, 8, 4, 500, 300, 256, 2, 1000, 5];
const FLAGS: [&str; 16] = [
    "--reps",
    "--duration",
    "--storm-secs",
    "--idle-secs",
    "--detect-reloads",
    "--monitor-secs",
    "--scale-workers",
    "--scale-reloads",
    "--probe-secs",
    "--scale-secs",
    "--burst",
    "--soak-reloads",
    "--queue-clients",
    "--queue-reloads",
    "--bind-cycles",
    "--scrape-secs",
];
type Numbers = [u64; 16];

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
        let mut given: [Option<u64>; 16] = [None; 16];
        let (mut quick, mut build, mut verbose, mut only) = (false, true, false, None);
        let mut reference = None;
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
                "--reference" => {
                    let path = value().ok_or("--reference needs a path")?;
                    reference = Some(std::path::PathBuf::from(path));
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
            scale_workers,
            scale_reloads,
            probe_secs,
            scale_secs,
            burst,
            soak_reloads,
            queue_clients,
            queue_reloads,
            bind_cycles,
            scrape_secs,
        ] = std::array::from_fn(|i| given[i].unwrap_or(base[i]));
        if reps == 0 || duration_s == 0 || storm_secs == 0 || detect == 0 {
            return Err(
                "--reps, --duration, --storm-secs and --detect-reloads must be at least 1".into(),
            );
        }
        if monitor_secs < 2 {
            return Err("--monitor-secs must be at least 2".into());
        }
        let scale = [
            scale_workers,
            scale_reloads,
            scale_secs,
            burst,
            soak_reloads,
        ];
        if scale.contains(&0) || queue_clients < 64 || queue_reloads == 0 {
            return Err("--scale-workers, --scale-reloads, --scale-secs, --burst, \
                        --soak-reloads and --queue-reloads must be at least 1, \
                        --queue-clients at least 64"
                .into());
        }
        if bind_cycles == 0 || scrape_secs == 0 {
            return Err("--bind-cycles and --scrape-secs must be at least 1".into());
        }
        if probe_secs < 6 {
            return Err("--probe-secs must be at least 6".into());
        }
        Ok(Some(Opts {
            reps: reps as usize,
            duration_s,
            storm_secs,
            idle_secs,
            detect_reloads: detect as usize,
            monitor_secs,
            scale_workers: scale_workers as usize,
            scale_reloads: scale_reloads as usize,
            probe_secs,
            scale_secs,
            burst: burst as usize,
            soak_reloads: soak_reloads as usize,
            queue_clients: queue_clients as usize,
            queue_reloads,
            bind_cycles,
            scrape_secs,
            reference,
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
        let sections = [
            "throughput",
            "storm",
            "detection",
            "monitor",
            "metrics",
            "adoption",
            "peers",
            "naive",
            "scale",
            "queue",
        ];
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
        let o = opts(&[
            "--only",
            "scale",
            "--scale-workers",
            "8",
            "--soak-reloads=50",
        ]);
        assert_eq!((o.scale_workers, o.soak_reloads, o.probe_secs), (8, 50, 60));
        assert_eq!((o.burst, o.queue_clients, o.queue_reloads), (2000, 4096, 3));
        let o = opts(&["--quick"]);
        assert_eq!(
            (o.scale_workers, o.soak_reloads, o.queue_clients),
            (16, 300, 256)
        );
        assert!(parse(&["--probe-secs", "5"]).is_err());
        assert!(parse(&["--queue-clients", "10"]).is_err());
        assert!(parse(&["--burst", "0"]).is_err());
        let o = opts(&["--quick", "--reference", "/tmp/mp", "--scrape-secs=3"]);
        assert_eq!((o.bind_cycles, o.scrape_secs), (1000, 3));
        assert_eq!(o.reference, Some("/tmp/mp".into()));
        assert_eq!(opts(&[]).reference, None);
        assert!(parse(&["--reference"]).is_err());
    }
}
