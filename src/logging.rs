//! Log lines on stderr, one per lifecycle event, through `tracing`.
//!
//! Debug lines are on with `-v`, or with `DEBUG=master-process` as the reference did (the
//! npm `debug` convention: a comma or space separated list, `*` and `master-process:*` match,
//! a leading `-` excludes). `MASTER_PROCESS_LOG` takes a full directive list
//! (`master_process=debug,master_process::notify=trace`) and wins over both. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no timestamp: the journal adds its own.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs the global logger. Safe to call more than once (later calls do nothing).
pub fn init(verbose: bool) {
    let debug = verbose || debug_env_matches(std::env::var("DEBUG").ok().as_deref());
    let default = Targets::new().with_default(LevelFilter::WARN).with_target(
        "master_process",
        if debug {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        },
    );
    let filter = std::env::var("MASTER_PROCESS_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or(default);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        registry.with(fmt.without_time()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

/// Whether a `DEBUG` value turns on our debug lines.
fn debug_env_matches(value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let mut on = false;
    for name in value.split([',', ' ']).filter(|s| !s.is_empty()) {
        let (negated, name) = match name.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if matches!(name, "*" | "master-process" | "master-process:*") {
            on = !negated;
        }
    }
    on
}

#[cfg(test)]
mod tests {
    use super::debug_env_matches as m;

    #[test]
    fn debug_follows_the_npm_debug_convention() {
        assert!(m(Some("master-process")));
        assert!(m(Some("express,master-process")));
        assert!(m(Some("*")));
        assert!(m(Some("master-process:*")));
        assert!(!m(Some("*,-master-process")));
        assert!(!m(Some("express")));
        assert!(!m(Some("")));
        assert!(!m(None));
    }
}
