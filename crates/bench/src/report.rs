//! The report: sections of figures with targets, rendered as Markdown and as JSON.
//!
//! A benchmark section returns [`Section`]s; each holds [`Metric`]s (a figure, its target if
//! it has one, PASS/MISS), free-form notes, errors, and raw details for the JSON only.

use std::fmt::Write as _;

/// A JSON value, written by hand.
#[derive(Debug, Clone)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number, written with at most 4 decimals (non-finite: `null`).
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in order.
    Obj(Vec<(String, Json)>),
    /// Already-serialized JSON (e.g. `loadgen::Report::to_json`).
    Raw(String),
}

impl Json {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// An unsigned integer value.
    pub fn uint(n: u64) -> Json {
        Json::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// An object from `(key, value)` pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// An array of numbers.
    pub fn nums(values: &[f64]) -> Json {
        Json::Arr(values.iter().map(|&v| Json::Num(v)).collect())
    }

    /// Writes the value, indented by `indent` levels when it spans lines.
    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Num(x) => out.push_str(&number(*x)),
            Json::Str(s) => loadgen::json_string(out, s),
            Json::Raw(raw) => out.push_str(raw),
            Json::Arr(items) => {
                let flat = items
                    .iter()
                    .all(|i| !matches!(i, Json::Arr(_) | Json::Obj(_) | Json::Raw(_)));
                if flat {
                    out.push('[');
                    for (n, item) in items.iter().enumerate() {
                        if n > 0 {
                            out.push_str(", ");
                        }
                        item.write(out, indent);
                    }
                    out.push(']');
                    return;
                }
                out.push('[');
                for (n, item) in items.iter().enumerate() {
                    out.push_str(if n > 0 { ",\n" } else { "\n" });
                    pad(out, indent + 1);
                    item.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(pairs) => {
                if pairs.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                for (n, (key, value)) in pairs.iter().enumerate() {
                    out.push_str(if n > 0 { ",\n" } else { "\n" });
                    pad(out, indent + 1);
                    loadgen::json_string(out, key);
                    out.push_str(": ");
                    value.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
        }
    }

    /// The value as pretty-printed JSON text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

fn number(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_owned();
    }
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Target met.
    Pass,
    /// Target missed.
    Miss,
    /// No target: for information.
    Info,
}

impl Status {
    fn json(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Miss => "MISS",
            Status::Info => "INFO",
        }
    }

    fn markdown(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Miss => "**MISS**",
            Status::Info => "",
        }
    }
}

/// One figure of a section.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Its JSON key, unique within the section (`close.failed`).
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// The value for JSON.
    pub value: Json,
    /// The value for people (with its unit).
    pub shown: String,
    /// The target, for people (`>= 0.97`), if there is one.
    pub target: Option<String>,
    /// PASS / MISS / INFO.
    pub status: Status,
}

impl Metric {
    /// A figure with no target.
    pub fn info(key: &str, label: &str, value: Json, shown: impl Into<String>) -> Metric {
        Metric {
            key: key.to_owned(),
            label: label.to_owned(),
            value,
            shown: shown.into(),
            target: None,
            status: Status::Info,
        }
    }

    /// Gives the figure a target, met or not.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Metric {
        self.target = Some(target.into());
        self.status = if met { Status::Pass } else { Status::Miss };
        self
    }

    /// Names an expectation that is not a target (stays INFO).
    pub fn expect(mut self, expected: impl Into<String>) -> Metric {
        self.target = Some(format!("({})", expected.into()));
        self
    }
}

/// One section of the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Its JSON id.
    pub id: String,
    /// Its heading.
    pub title: String,
    /// Lines under the heading (how it was measured).
    pub intro: Vec<String>,
    /// The figures.
    pub metrics: Vec<Metric>,
    /// Lines after the table (raw numbers, evidence).
    pub notes: Vec<String>,
    /// What went wrong, if it could not be measured (fully).
    pub errors: Vec<String>,
    /// Raw data for the JSON only.
    pub details: Vec<(String, Json)>,
}

impl Section {
    /// An empty section.
    pub fn new(id: &str, title: &str) -> Section {
        Section {
            id: id.to_owned(),
            title: title.to_owned(),
            ..Section::default()
        }
    }

    /// A section that could not run.
    pub fn failed(id: &str, error: String) -> Section {
        let mut s = Section::new(id, &format!("{id}: could not run"));
        s.errors.push(error);
        s
    }

    /// Adds a figure.
    pub fn push(&mut self, metric: Metric) {
        self.metrics.push(metric);
    }

    fn count(&self, status: Status) -> usize {
        self.metrics.iter().filter(|m| m.status == status).count()
    }

    fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## {}\n", self.title);
        for line in &self.intro {
            let _ = writeln!(out, "{line}");
        }
        if !self.intro.is_empty() {
            out.push('\n');
        }
        for e in &self.errors {
            let _ = writeln!(out, "**ERROR**: {}\n", e.replace('\n', "  \n"));
        }
        if !self.metrics.is_empty() {
            out.push_str("| Figure | Value | Target | Result |\n|---|---:|---|---|\n");
            for m in &self.metrics {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    cell(&m.label),
                    cell(&m.shown),
                    cell(m.target.as_deref().unwrap_or("")),
                    m.status.markdown()
                );
            }
            out.push('\n');
        }
        for line in &self.notes {
            let _ = writeln!(out, "{line}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
    }

    fn json(&self) -> Json {
        let metrics = self
            .metrics
            .iter()
            .map(|m| {
                Json::obj([
                    ("key", Json::str(&m.key)),
                    ("label", Json::str(&m.label)),
                    ("value", m.value.clone()),
                    ("shown", Json::str(&m.shown)),
                    ("target", m.target.as_ref().map_or(Json::Null, Json::str)),
                    ("status", Json::str(m.status.json())),
                ])
            })
            .collect();
        Json::obj([
            ("id", Json::str(&self.id)),
            ("title", Json::str(&self.title)),
            ("metrics", Json::Arr(metrics)),
            (
                "notes",
                Json::Arr(self.notes.iter().map(Json::str).collect()),
            ),
            (
                "errors",
                Json::Arr(self.errors.iter().map(Json::str).collect()),
            ),
            ("details", Json::Obj(self.details.clone())),
        ])
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The title.
    pub title: String,
    /// `(label, value)` lines under the title (machine, versions, date...).
    pub header: Vec<(String, String)>,
    /// The same facts, structured, for JSON.
    pub header_json: Vec<(String, Json)>,
    /// The sections in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// (PASS, MISS, errors) over every section.
    pub fn tally(&self) -> (usize, usize, usize) {
        self.sections.iter().fold((0, 0, 0), |(p, m, e), s| {
            (
                p + s.count(Status::Pass),
                m + s.count(Status::Miss),
                e + s.errors.len(),
            )
        })
    }

    /// Every missed figure, as `section: label = value (target)`.
    fn misses(&self) -> Vec<String> {
        self.sections
            .iter()
            .flat_map(|s| {
                s.metrics
                    .iter()
                    .filter(|m| m.status == Status::Miss)
                    .map(|m| {
                        format!(
                            "{}: {} = {} (target {})",
                            s.title,
                            m.label,
                            m.shown,
                            m.target.as_deref().unwrap_or("?")
                        )
                    })
            })
            .collect()
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n", self.title);
        for (label, value) in &self.header {
            let _ = writeln!(out, "- **{label}**: {value}");
        }
        out.push('\n');
        let (pass, miss, errors) = self.tally();
        let _ = writeln!(
            out,
            "**Summary: {pass} PASS, {miss} MISS{}**\n",
            if errors > 0 {
                format!(", {errors} ERROR")
            } else {
                String::new()
            }
        );
        for m in self.misses() {
            let _ = writeln!(out, "- MISS: {m}");
        }
        if miss > 0 {
            out.push('\n');
        }
        for section in &self.sections {
            section.markdown(&mut out);
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        let (pass, miss, errors) = self.tally();
        let mut top: Vec<(String, Json)> = vec![("title".into(), Json::str(&self.title))];
        top.extend(self.header_json.iter().cloned());
        top.push((
            "summary".into(),
            Json::obj([
                ("pass", Json::uint(pass as u64)),
                ("miss", Json::uint(miss as u64)),
                ("errors", Json::uint(errors as u64)),
                (
                    "misses",
                    Json::Arr(self.misses().into_iter().map(Json::Str).collect()),
                ),
            ]),
        ));
        top.push((
            "sections".into(),
            Json::Arr(self.sections.iter().map(Section::json).collect()),
        ));
        Json::Obj(top).render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_well_formed() {
        let v = Json::obj([
            ("a", Json::Num(0.97123456)),
            ("b", Json::str("x\"y\n")),
            ("c", Json::nums(&[1.0, 2.5])),
            ("d", Json::Raw("{\"ok\":1}".into())),
            ("e", Json::Num(f64::NAN)),
            ("f", Json::Obj(vec![])),
        ]);
        let text = v.render();
        assert!(text.contains("\"a\": 0.9712"));
        assert!(text.contains("\"b\": \"x\\\"y\\n\""));
        assert!(text.contains("\"c\": [1, 2.5]"));
        assert!(text.contains("\"e\": null"));
        assert!(text.contains("\"f\": {}"));
    }

    #[test]
    fn markdown_marks_misses() {
        let mut s = Section::new("t", "Test");
        s.push(Metric::info("x", "x", Json::Int(1), "1").target("0", false));
        s.push(Metric::info("y", "y", Json::Int(0), "0").target("0", true));
        let r = Report {
            title: "T".into(),
            sections: vec![s],
            ..Report::default()
        };
        let md = r.markdown();
        assert!(md.contains("**MISS**"));
        assert!(md.contains("1 PASS, 1 MISS"));
        assert_eq!(r.tally(), (1, 1, 0));
    }
}
