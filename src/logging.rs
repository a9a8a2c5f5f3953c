//! Log lines on stderr, one per lifecycle event, through `tracing`.
//!
//! Debug lines are on with `-v`, or with `DEBUG=master-process` as the reference did (the
//! npm `debug` convention: a comma or space separated list, `*` and `master-process:*` match,
//! a leading `-` excludes). `MASTER_PROCESS_LOG` takes a full directive list
//! (`master_process=debug,master_process::notify=trace`) and wins over both. Under systemd
//! (`JOURNAL_STREAM` set) text lines carry no timestamp: the journal adds its own.
//!
//! `--log-format json` writes one JSON object per line instead: `time` (RFC 3339, UTC),
//! `level`, `target`, `message`, and every field of the event (`pid`, `index`,
//! `generation`, `at_ms`...), numbers and booleans as JSON numbers and booleans: what log
//! shippers (journald's JSON, Kubernetes, Loki, Elasticsearch) read without a parser.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

pub use crate::policy::LogFormat;

/// Installs the global logger. Safe to call more than once (later calls do nothing).
pub fn init(verbose: bool, format: LogFormat) {
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
    let _ = match format {
        LogFormat::Json => registry.with(fmt.event_format(Json)).try_init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            registry.with(fmt.without_time()).try_init()
        }
        LogFormat::Text => registry.with(fmt).try_init(),
    };
}

/// One JSON object per event.
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            "{{\"time\":\"{time}\",\"level\":\"{}\",\"target\":{}",
            meta.level().as_str().to_ascii_lowercase(),
            json_string(meta.target())
        );
        let _ = write!(
            line,
            ",\"message\":{}",
            json_string(fields.message.as_deref().unwrap_or_default())
        );
        for (name, value) in &fields.pairs {
            let _ = write!(line, ",{}:{value}", json_string(name));
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// An event's message and fields, each value already written as JSON.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.pairs.push((field.name(), json_string(value)));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pairs.push((field.name(), value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pairs.push((field.name(), value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pairs.push((field.name(), value.to_string()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let text = if value.is_finite() {
            value.to_string()
        } else {
            json_string(&value.to_string())
        };
        self.pairs.push((field.name(), text));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.pairs.push((field.name(), json_string(&text)));
        }
    }
}

/// `s` as a JSON string, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
    use super::json_string;

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

    #[test]
    fn json_strings_escape_what_json_needs() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_string("héllo"), "\"héllo\"");
    }
}
