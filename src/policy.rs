//! The policies the master decides with: small value types shared by the pure core (the
//! supervisor), the configuration and the library API. This module depends on nothing else
//! in the crate, so that the state machine never imports the user-facing configuration.
//!
//! Each type parses from the words a user types (`FromStr`, errors are one line saying what
//! is expected) and prints back the same way (`Display`), so the values round-trip through
//! flags, environment variables, status and the upgrade handover.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a reload replaces the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every slot at once, pairwise (the reference): up to twice the workers meanwhile.
    #[default]
    Parallel,
    /// A few slots at a time.
    Rolling {
        /// New workers, plus the old ones they replaced that still drain, at most.
        max_surge: usize,
    },
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Parallel => f.write_str("parallel"),
            Strategy::Rolling { max_surge } => write!(f, "rolling:{max_surge}"),
        }
    }
}

/// Declares a policy enum whose values are single words, with `FromStr` and `Display`
/// from one list of (variant, word) pairs.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in the order of the declaration.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word for this value.
            pub fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let t = s.trim();
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.word().eq_ignore_ascii_case(t))
                    .ok_or_else(|| expected_one_of($name::ALL.iter().map(|v| v.word())))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

/// `expected `a`, `b` or `c``.
fn expected_one_of<'a>(words: impl Iterator<Item = &'a str>) -> String {
    let words: Vec<String> = words.map(|w| format!("`{w}`")).collect();
    match words.split_last() {
        Some((last, [])) => format!("expected {last}"),
        Some((last, rest)) => format!("expected {} or {last}", rest.join(", ")),
        None => "expected nothing".to_string(),
    }
}

words! {
    /// What the master does when a serving worker exits unexpectedly.
    OnCrash {
        /// Restart it, waiting the rest of `WORKER_THROTTLE` if it lived less than that.
        #[default]
        Restart = "restart",
        /// Stop the other workers and exit with the crashed worker's code, for a service
        /// manager that restarts (the reference README's original mode).
        Exit = "exit",
    }
}

words! {
    /// What the master does when a reload brings workers built with another version of
    /// master-process than its own (they report it with `READY=1`).
    OnVersionChange {
        /// Log it and keep going.
        #[default]
        Log = "log",
        /// Exit with code 1 once the new workers are ready, for a service manager that
        /// restarts (the reference's behaviour).
        Exit = "exit",
    }
}

words! {
    /// What a reload does when the master's own executable changed on disk.
    OnMasterChange {
        /// Log it.
        #[default]
        Log = "log",
        /// Upgrade the master in place first (same pid, same sockets), then reload.
        Upgrade = "upgrade",
        /// Stop and exit with code 1, for a service manager that restarts (the reference's
        /// behaviour; the port is closed until the restart).
        Exit = "exit",
    }
}

words! {
    /// How a reload replaces the workers, as `--reload` says it (see [`Strategy`]).
    Reload {
        /// Every slot at once.
        #[default]
        Parallel = "parallel",
        /// `--max-surge` at a time.
        Rolling = "rolling",
    }
}

impl Strategy {
    /// The strategy `--reload` and `--max-surge` describe.
    pub fn new(reload: Reload, max_surge: usize) -> Strategy {
        match reload {
            Reload::Parallel => Strategy::Parallel,
            Reload::Rolling => Strategy::Rolling { max_surge },
        }
    }

    /// The kind of reload, without its surge.
    pub fn reload(self) -> Reload {
        match self {
            Strategy::Parallel => Reload::Parallel,
            Strategy::Rolling { .. } => Reload::Rolling,
        }
    }
}

words! {
    /// How log lines are written (`--log-format`).
    LogFormat {
        /// Text for people (timestamps unless under systemd's journal).
        #[default]
        Text = "text",
        /// One JSON object per line, for log shippers.
        Json = "json",
    }
}

words! {
    /// On or off, for the switches with an environment twin (`MASTER_PROCESS_MONITOR=off`).
    Toggle {
        /// On.
        #[default]
        On = "on",
        /// Off.
        Off = "off",
    }
}

/// With several listeners, which ones a worker must serve to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coverage {
    /// Every listener (the default).
    #[default]
    All,
    /// At least one.
    Any,
}

/// How the master decides that a new worker is ready (see the `readiness` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// The master sees the worker serve the listening sockets (`/proc`).
    Listening(Coverage),
    /// The worker sends `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// The worker is ready once it has stayed alive this long.
    Delay(Duration),
}

impl ReadyMode {
    /// The longest `delay:` accepted.
    pub const MAX_DELAY: Duration = Duration::from_secs(3600);

    /// The time after start at which a worker that is still alive counts as ready, if any.
    pub fn delay(self) -> Option<Duration> {
        match self {
            ReadyMode::Delay(d) => Some(d),
            ReadyMode::Notify | ReadyMode::Listening(_) => None,
        }
    }

    /// What to tell a user whose worker was not ready in time, in this mode.
    pub fn timeout_hint(self) -> &'static str {
        match self {
            ReadyMode::Notify => "--ready notify: it must send READY=1 on NOTIFY_SOCKET",
            ReadyMode::Listening(_) => {
                "--ready listening: it was never seen waiting on the listening socket(s); a \
                 server using io_uring, or one that changed its user, cannot be seen: use \
                 --ready notify or --ready delay:DURATION"
            }
            ReadyMode::Delay(_) => "--ready delay: it did not stay alive long enough",
        }
    }
}

impl Default for ReadyMode {
    fn default() -> Self {
        ReadyMode::Listening(Coverage::All)
    }
}

impl FromStr for ReadyMode {
    type Err = String;

    /// Parses `listening` (`listening:all`), `listening:any`, `notify` or `delay:DUR`
    /// (`delay:2s`, `delay:500`).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "notify" => return Ok(ReadyMode::Notify),
            "listening" | "listening:all" => return Ok(ReadyMode::Listening(Coverage::All)),
            "listening:any" => return Ok(ReadyMode::Listening(Coverage::Any)),
            _ => {}
        }
        match t.get(..6).filter(|p| p.eq_ignore_ascii_case("delay:")) {
            Some(_) => {
                let d = parse_duration(&t[6..]).map_err(|why| format!("delay: {why}"))?;
                if d > ReadyMode::MAX_DELAY {
                    return Err("delay: at most 1h".into());
                }
                Ok(ReadyMode::Delay(d))
            }
            None => Err(
                "expected `listening`, `listening:any`, `notify` or `delay:DURATION` \
                 (e.g. delay:2s)"
                    .into(),
            ),
        }
    }
}

impl fmt::Display for ReadyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyMode::Listening(Coverage::All) => f.write_str("listening"),
            ReadyMode::Listening(Coverage::Any) => f.write_str("listening:any"),
            ReadyMode::Notify => f.write_str("notify"),
            ReadyMode::Delay(d) => write!(f, "delay:{}", humantime::format_duration(*d)),
        }
    }
}

/// Parses a duration as the reference did: a bare number is milliseconds (`5000`), else a
/// number with a unit (`5s`, `250ms`, `1m30s`). Never negative; at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let shape = "expected a duration like 5s, 250ms, 1m30s or a number of milliseconds";
    if t.is_empty() {
        return Err(shape.into());
    }
    if t.starts_with('-') {
        return Err("must not be negative".into());
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| "number too large".to_string())?
    } else {
        humantime::parse_duration(t).map_err(|_| shape.to_string())?
    };
    if d > MAX_DURATION {
        return Err("too long: at most a year".into());
    }
    Ok(d)
}

/// The longest duration any option takes: a year. Anything longer is a typo, and would
/// overflow the clock's arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_any_case_and_print_back() {
        assert_eq!("EXIT".parse::<OnCrash>(), Ok(OnCrash::Exit));
        assert_eq!(OnMasterChange::Upgrade.to_string(), "upgrade");
        assert_eq!(
            "panic".parse::<OnMasterChange>().unwrap_err(),
            "expected `log`, `upgrade` or `exit`"
        );
        assert_eq!("x".parse::<Toggle>().unwrap_err(), "expected `on` or `off`");
    }

    #[test]
    fn ready_modes_parse_and_print_back() {
        assert_eq!("notify".parse::<ReadyMode>(), Ok(ReadyMode::Notify));
        let d = "delay:1500".parse::<ReadyMode>().unwrap();
        assert_eq!(d, ReadyMode::Delay(Duration::from_millis(1500)));
        assert_eq!(d.to_string(), "delay:1s 500ms");
        assert_eq!(d.to_string().parse::<ReadyMode>(), Ok(d));
        assert_eq!(
            "LISTENING:any".parse::<ReadyMode>().unwrap().to_string(),
            "listening:any"
        );
        assert_eq!(ReadyMode::default(), ReadyMode::Listening(Coverage::All));
        let e = "listen".parse::<ReadyMode>().unwrap_err();
        assert!(e.contains("`listening`") && e.contains("notify"), "{e}");
        assert!("delay:-1".parse::<ReadyMode>().is_err());
        assert!("delay:2h".parse::<ReadyMode>().is_err());
    }

    #[test]
    fn durations_accept_bare_milliseconds_and_units_within_a_year() {
        assert_eq!(parse_duration("5000"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert!(parse_duration("-1").unwrap_err().contains("negative"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("400days").unwrap_err().contains("year"));
        assert!(parse_duration("18446744073709551615").is_err());
    }
}
