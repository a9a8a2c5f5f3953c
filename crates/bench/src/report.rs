//! The report: sections of figures with targets, rendered as Markdown and as JSON.
//!
//! A benchmark section returns [`Section`]s; each holds [`Metric`]s (a figure, its target if
//! it has one, PASS/MISS), free-form notes, errors, and raw details for the JSON only.

use std::fmt::Write as _;

use crate::plot::Chart;

/// A JSON object from `"key": value` pairs, each value converted with [`Json::from`].
macro_rules! obj {
    ($($key:literal : $value:expr),* $(,)?) => {
        $crate::report::Json::Obj(vec![$(($key.to_owned(), $crate::report::Json::from($value))),*])
    };
}
pub(crate) use obj;

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

/// `impl From<$type> for Json`, each value `v` becoming `$json`.
macro_rules! json_from {
    ($($type:ty => |$v:ident| $json:expr;)*) => {
        $(impl From<$type> for Json {
            fn from($v: $type) -> Json {
                $json
            }
        })*
    };
}

json_from! {
    f64 => |x| Json::Num(x);
    u64 => |n| Json::Int(i64::try_from(n).unwrap_or(i64::MAX));
    usize => |n| Json::from(n as u64);
    i64 => |n| Json::Int(n);
    i32 => |n| Json::Int(n.into());
    bool => |b| Json::Bool(b);
    &str => |s| Json::Str(s.to_owned());
    String => |s| Json::Str(s);
    &String => |s| Json::Str(s.clone());
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

impl Json {
    /// An array of anything that converts.
    pub fn arr<T: Into<Json>>(items: impl IntoIterator<Item = T>) -> Json {
        Json::Arr(items.into_iter().map(Into::into).collect())
    }

    /// An object from `(key, value)` pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
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
            Json::Arr(items) if items.iter().all(Json::is_flat) => {
                out.push('[');
                for (n, item) in items.iter().enumerate() {
                    out.push_str(if n > 0 { ", " } else { "" });
                    item.write(out, indent);
                }
                out.push(']');
            }
            Json::Arr(items) => {
                let items = items.iter().map(|item| (None, item));
                block(out, indent, ('[', ']'), items);
            }
            Json::Obj(pairs) if pairs.is_empty() => out.push_str("{}"),
            Json::Obj(pairs) => {
                let pairs = pairs.iter().map(|(key, value)| (Some(key.as_str()), value));
                block(out, indent, ('{', '}'), pairs);
            }
        }
    }

    fn is_flat(&self) -> bool {
        !matches!(self, Json::Arr(_) | Json::Obj(_) | Json::Raw(_))
    }

    /// The value as pretty-printed JSON text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }
}

/// An array or object over several lines, one item (`key: value` for an object) per line.
fn block<'a>(
    out: &mut String,
    indent: usize,
    (open, close): (char, char),
    items: impl Iterator<Item = (Option<&'a str>, &'a Json)>,
) {
    out.push(open);
    for (n, (key, value)) in items.enumerate() {
        out.push_str(if n > 0 { ",\n" } else { "\n" });
        out.push_str(&"  ".repeat(indent + 1));
        if let Some(key) = key {
            loadgen::json_string(out, key);
            out.push_str(": ");
        }
        value.write(out, indent + 1);
    }
    out.push('\n');
    out.push_str(&"  ".repeat(indent));
    out.push(close);
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
    pub fn info(
        key: impl Into<String>,
        label: impl Into<String>,
        value: impl Into<Json>,
        shown: impl Into<String>,
    ) -> Metric {
        Metric {
            key: key.into(),
            label: label.into(),
            value: value.into(),
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
    /// Charts, each written next to the report under its file name and shown after the table.
    pub plots: Vec<(String, Chart)>,
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

    /// Adds a chart, written to `file` (`NAME.svg`) next to the report.
    pub fn plot(&mut self, file: &str, chart: Chart) {
        self.plots.push((file.to_owned(), chart));
    }

    /// Adds a JSON detail.
    pub fn detail(&mut self, key: impl Into<String>, value: Json) {
        self.details.push((key.into(), value));
    }

    /// Adds `- {head} {count} {what}, e.g.:` and the first `take` lines as sub-items, if any.
    pub fn note_lines(&mut self, head: &str, what: &str, lines: &[String], take: usize) {
        if lines.is_empty() {
            return;
        }
        self.notes
            .push(format!("- {head} {} {what}, e.g.:", lines.len()));
        for l in lines.iter().take(take) {
            self.notes.push(format!("  - `{l}`"));
        }
    }

    fn count(&self, status: Status) -> usize {
        self.metrics.iter().filter(|m| m.status == status).count()
    }

    fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## {}\n", self.title);
        paragraph(out, &self.intro);
        for e in &self.errors {
            let _ = writeln!(out, "**ERROR**: {}\n", e.replace('\n', "  \n"));
        }
        if !self.metrics.is_empty() {
            out.push_str("| Figure | Value | Target | Result |\n|---|---:|---|---|\n");
            for m in &self.metrics {
                let target = cell(m.target.as_deref().unwrap_or(""));
                let (label, shown) = (cell(&m.label), cell(&m.shown));
                let _ = writeln!(
                    out,
                    "| {label} | {shown} | {target} | {} |",
                    m.status.markdown()
                );
            }
            out.push('\n');
        }
        for (file, chart) in &self.plots {
            let _ = writeln!(out, "![{}]({file})\n", chart.title);
        }
        paragraph(out, &self.notes);
    }

    fn json(&self) -> Json {
        let metrics = self.metrics.iter().map(|m| {
            obj! {
                "key": &m.key, "label": &m.label, "value": m.value.clone(), "shown": &m.shown,
                "target": m.target.as_ref(), "status": m.status.json(),
            }
        });
        let mut json = obj! {
            "id": &self.id,
            "title": &self.title,
            "metrics": Json::arr(metrics),
            "notes": Json::arr(&self.notes),
            "errors": Json::arr(&self.errors),
            "details": Json::Obj(self.details.clone()),
        };
        if let Json::Obj(pairs) = &mut json
            && !self.plots.is_empty()
        {
            pairs.push((
                "plots".to_owned(),
                Json::arr(self.plots.iter().map(|(f, _)| f)),
            ));
        }
        json
    }
}

/// Lines, then a blank line if there were any.
fn paragraph(out: &mut String, lines: &[String]) {
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    if !lines.is_empty() {
        out.push('\n');
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The figures of one run within a section: keys `KEY.k`, labels `NAME: label`.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The run's JSON key.
    pub key: &'a str,
    /// The run's name, for people.
    pub name: &'a str,
}

impl Scope<'_> {
    /// A figure of this run, with no target.
    pub fn metric(
        &self,
        k: &str,
        label: &str,
        value: impl Into<Json>,
        shown: impl Into<String>,
    ) -> Metric {
        let (key, name) = (self.key, self.name);
        Metric::info(
            format!("{key}.{k}"),
            format!("{name}: {label}"),
            value,
            shown,
        )
    }

    /// A count, for information.
    pub fn count(&self, k: &str, label: &str, n: u64) -> Metric {
        self.metric(k, label, n, n.to_string())
    }

    /// A count whose target is 0.
    pub fn zero(&self, k: &str, label: &str, n: u64) -> Metric {
        self.count(k, label, n).target("0", n == 0)
    }
}

/// Values with `decimals` decimals, joined by `, `.
pub fn list(values: &[f64], decimals: usize) -> String {
    let v: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    v.join(", ")
}

/// The first `n` lines, each in backquotes, joined by `, `.
pub fn quoted(lines: &[String], n: usize) -> String {
    let v: Vec<String> = lines.iter().take(n).map(|l| format!("`{l}`")).collect();
    v.join(", ")
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
        let mut out = Vec::new();
        for s in &self.sections {
            for m in s.metrics.iter().filter(|m| m.status == Status::Miss) {
                let target = m.target.as_deref().unwrap_or("?");
                out.push(format!(
                    "{}: {} = {} (target {target})",
                    s.title, m.label, m.shown
                ));
            }
        }
        out
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n", self.title);
        for (label, value) in &self.header {
            let _ = writeln!(out, "- **{label}**: {value}");
        }
        out.push('\n');
        let (pass, miss, errors) = self.tally();
        let errors = if errors > 0 {
            format!(", {errors} ERROR")
        } else {
            String::new()
        };
        let _ = writeln!(out, "**Summary: {pass} PASS, {miss} MISS{errors}**\n");
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
        let mut top: Vec<(String, Json)> = vec![("title".into(), Json::from(&self.title))];
        top.extend(self.header_json.iter().cloned());
        let misses = Json::arr(self.misses());
        top.push((
            "summary".into(),
            obj! {"pass": pass, "miss": miss, "errors": errors, "misses": misses},
        ));
        top.push((
            "sections".into(),
            Json::arr(self.sections.iter().map(Section::json)),
        ));
        Json::Obj(top).render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_well_formed() {
        let v = obj! {
            "a": 0.97123456,
            "b": "x\"y\n",
            "c": Json::arr([1.0, 2.5]),
            "d": Json::Raw("{\"ok\":1}".into()),
            "e": f64::NAN,
            "f": Json::Obj(vec![]),
            "g": Json::arr([obj! {"h": 1_u64, "i": None::<u64>}]),
        };
        let text = v.render();
        assert!(text.contains("\"a\": 0.9712"));
        assert!(text.contains("\"b\": \"x\\\"y\\n\""));
        assert!(text.contains("\"c\": [1, 2.5]"));
        assert!(text.contains("\"e\": null"));
        assert!(text.contains("\"f\": {}"));
        assert!(text.contains("\"g\": [\n    {\n      \"h\": 1,\n      \"i\": null\n    }\n  ]"));
    }

    #[test]
    fn markdown_marks_misses() {
        let mut s = Section::new("t", "Test");
        s.push(Metric::info("x", "x", 1_u64, "1").target("0", false));
        s.push(Metric::info("y", "y", 0_u64, "0").target("0", true));
        let r = Report {
            title: "T".into(),
            sections: vec![s],
            ..Report::default()
        };
        let md = r.markdown();
        assert!(md.contains("**MISS**"));
        assert!(md.contains("1 PASS, 1 MISS"));
        assert!(md.contains("- MISS: Test: x = 1 (target 0)"));
        assert!(!md.contains("![") && !r.json().contains("\"plots\""));
        assert_eq!(r.tally(), (1, 1, 0));
        let mut r = r;
        let chart = Chart {
            title: "RSS".into(),
            ..Chart::default()
        };
        r.sections[0].plot("rss.svg", chart);
        assert!(r.markdown().contains("| PASS |\n\n![RSS](rss.svg)\n"));
        assert!(r.json().contains("\"plots\": [\"rss.svg\"]"));
    }
}
