//! The value parsers of the options: syntax and range, one line of reason when a value is
//! refused (the caller names the flag or variable it came from).

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

pub use crate::policy::parse_duration as duration;

/// The longest of the worker-lifecycle durations (ready timeout, drain, throttle, backoff,
/// canary): a day. Longer is a typo.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// Checks `v` against `[min, max]`, describing the bounds with `show`.
pub fn within<T: PartialOrd>(
    v: &T,
    min: T,
    max: T,
    show: impl Fn(&T) -> String,
) -> Result<(), String> {
    if *v < min {
        Err(format!("must be at least {}", show(&min)))
    } else if *v > max {
        Err(format!("must be at most {}", show(&max)))
    } else {
        Ok(())
    }
}

/// [`within`] for durations, shown as `1s`, `24h`.
pub fn duration_within(d: &Duration, min: Duration, max: Duration) -> Result<(), String> {
    within(d, min, max, |d| humantime::format_duration(*d).to_string())
}

/// [`within`] for plain numbers.
pub fn number_within<T: PartialOrd + Display>(v: &T, min: T, max: T) -> Result<(), String> {
    within(v, min, max, ToString::to_string)
}

/// A whole number (surrounding spaces allowed); `what` names the unit in the error.
pub fn whole<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim()
        .parse::<T>()
        .map_err(|_| format!("expected a number of {what}"))
}

/// `WORKERS`: a number, `MAX` (one per core) or `AUTO` (cores - 1, at least 1).
pub fn workers(s: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = s.trim();
    match t.to_ascii_uppercase().as_str() {
        "MAX" => Ok(cores),
        "AUTO" => Ok(cores.saturating_sub(1).max(1)),
        _ => t.parse::<usize>().map_err(|_| {
            "expected a number of workers, MAX (one per core) or AUTO (cores - 1)".to_string()
        }),
    }
}

/// An octal file mode such as `0664`, `660` or `0o660`.
pub fn mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err("expected octal permission bits such as 0664 or 0660".into()),
    }
}

/// A percentage of one core, `95` or `95%`.
pub fn percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').trim().parse::<f64>() {
        Ok(p) if p.is_finite() => Ok(p),
        _ => Err("expected a percentage of one core (e.g. 95, or 180 for two cores)".into()),
    }
}

/// A value given as a word that must be one of a type's (`parallel`, `on`...).
pub fn word<T: FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_accept_numbers_max_and_auto() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(workers("3"), Ok(3));
        assert_eq!(workers("max"), Ok(cores));
        assert_eq!(workers("AUTO"), Ok((cores - 1).max(1)));
        assert!(workers("abc").unwrap_err().contains("MAX"));
        assert!(workers("-2").is_err());
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(mode("0664"), Ok(0o664));
        assert_eq!(mode("600"), Ok(0o600));
        assert_eq!(mode("0o640"), Ok(0o640));
        for bad in ["999", "1777", "", "rw"] {
            assert!(mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_name_the_bound_that_was_crossed() {
        assert_eq!(
            number_within(&0u32, 1, 10),
            Err("must be at least 1".into())
        );
        assert_eq!(
            number_within(&11u32, 1, 10),
            Err("must be at most 10".into())
        );
        assert_eq!(
            duration_within(&Duration::ZERO, Duration::from_millis(100), DAY),
            Err("must be at least 100ms".into())
        );
        assert!(duration_within(&DAY, Duration::ZERO, DAY).is_ok());
    }
}
