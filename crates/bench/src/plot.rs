//! A small SVG line chart, without dependencies: for figures that grow with the work (reload
//! time against workers, RSS against listeners), which people would rather look at than read.
//! The report embeds the files a section writes next to `report.md`.
// The scale section (issue 16) is its first user.
#![cfg_attr(not(test), expect(dead_code, reason = "no section plots yet"))]

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, `(x, y)`, in order of x.
    pub points: Vec<(f64, f64)>,
}

/// A line chart: y from 0 up, x linear or in powers of two.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis, with its unit.
    pub x_label: String,
    /// Beside the y axis, with its unit.
    pub y_label: String,
    /// x on a log2 scale (1, 2, 4 ... 128 workers), ticks at powers of two.
    pub log2_x: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
/// Left, right, top and bottom margins around the plot area.
const MARGIN: (f64, f64, f64, f64) = (70.0, 150.0, 40.0, 50.0);
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// About five round ticks (1, 2 or 5 × 10^k apart) from 0 to at least `max`.
fn ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t < max + step)
        .collect()
}

/// A tick label: no decimals for whole numbers, else up to 3.
fn label(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let (left, right, top, bottom) = MARGIN;
        let (w, h) = (WIDTH - left - right, HEIGHT - top - bottom);
        let points = || self.series.iter().flat_map(|s| &s.points);
        let fx = |x: f64| {
            if self.log2_x {
                x.max(f64::MIN_POSITIVE).log2()
            } else {
                x
            }
        };
        let (x0, x1) = points()
            .map(|p| fx(p.0))
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let (x0, x1) = if x0 < x1 {
            (x0, x1)
        } else {
            (x0.min(0.0), x0.max(0.0) + 1.0)
        };
        let y_ticks = ticks(points().map(|p| p.1).fold(0.0, f64::max));
        let y_top = y_ticks
            .last()
            .copied()
            .unwrap_or(1.0)
            .max(f64::MIN_POSITIVE);
        let px = |x: f64| left + (fx(x) - x0) / (x1 - x0) * w;
        let py = |y: f64| top + h - y / y_top * h;
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
            left + w / 2.0,
            escape(&self.title)
        );
        for &t in &y_ticks {
            let y = py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left + w,
                left - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let x_ticks: Vec<f64> = match self.log2_x {
            true => (x0.ceil() as i32..=x1.floor() as i32)
                .map(|e| 2f64.powi(e))
                .collect(),
            false => ticks(x1)
                .into_iter()
                .filter(|t| *t >= x0 && *t <= x1)
                .collect(),
        };
        for t in x_ticks {
            let x = px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top + h,
                top + h + 5.0,
                top + h + 18.0,
                label(t)
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#888\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            left + w / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label),
            top + h / 2.0,
            escape(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                path.join(" ")
            );
            for &(x, y) in &s.points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                    px(x),
                    py(y)
                );
            }
            let ly = top + 10.0 + 18.0 * i as f64;
            let lx = left + w + 12.0;
            let _ = writeln!(
                out,
                "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(9.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(40.0), [0.0, 10.0, 20.0, 30.0, 40.0]);
        assert_eq!(ticks(0.0).len(), 6);
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(128.0), "128");
    }

    #[test]
    fn draws_lines_on_a_log2_axis() {
        let chart = Chart {
            title: "Reload time <by workers>".into(),
            x_label: "workers".into(),
            y_label: "ms".into(),
            log2_x: true,
            series: vec![
                Series {
                    name: "reload".into(),
                    points: vec![(1.0, 10.0), (8.0, 12.0), (128.0, 40.0)],
                },
                Series {
                    name: "cpu".into(),
                    points: vec![(1.0, 0.5), (128.0, 9.0)],
                },
            ],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("Reload time &lt;by workers&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        // x ticks at 1, 2, 4 ... 128: the first at the left edge, the last at the right one.
        for t in ["1", "2", "4", "8", "16", "32", "64", "128"] {
            assert!(svg.contains(&format!(">{t}</text>")), "tick {t}");
        }
        assert!(svg.contains("<circle cx=\"70.0\" cy=\"272.5\""), "{svg}");
        assert!(svg.contains("<circle cx=\"490.0\" cy=\"40.0\""), "{svg}");
    }
}
