//! A small SVG line chart, without dependencies: for figures that grow with the work (reload
//! time against workers, RSS against listeners), which people would rather look at than read.
//! A section adds one with `Section::plot`; bench writes it next to `report.md`, which shows it.

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

/// Where data land in the picture: the plot area and the scales.
struct Frame {
    log2_x: bool,
    /// The x range, on the scale (log2 of x if `log2_x`).
    x0: f64,
    x1: f64,
    /// The y of the top of the plot area (the last y tick).
    y_top: f64,
}

/// The plot area: left, top, width, height.
const AREA: (f64, f64, f64, f64) = (
    MARGIN.0,
    MARGIN.2,
    WIDTH - MARGIN.0 - MARGIN.1,
    HEIGHT - MARGIN.2 - MARGIN.3,
);

impl Frame {
    fn scale(&self, x: f64) -> f64 {
        if self.log2_x {
            x.max(f64::MIN_POSITIVE).log2()
        } else {
            x
        }
    }

    fn px(&self, x: f64) -> f64 {
        AREA.0 + (self.scale(x) - self.x0) / (self.x1 - self.x0) * AREA.2
    }

    fn py(&self, y: f64) -> f64 {
        AREA.1 + AREA.3 - y / self.y_top * AREA.3
    }

    /// The x ticks: powers of two on a log2 axis.
    fn x_ticks(&self) -> Vec<f64> {
        match self.log2_x {
            true => (self.x0.ceil() as i32..=self.x1.floor() as i32)
                .map(|e| 2f64.powi(e))
                .collect(),
            false => ticks(self.x1)
                .into_iter()
                .filter(|t| (self.x0..=self.x1).contains(t))
                .collect(),
        }
    }
}

impl Chart {
    fn frame(&self) -> (Frame, Vec<f64>) {
        let points = || self.series.iter().flat_map(|s| &s.points);
        let mut frame = Frame {
            log2_x: self.log2_x,
            x0: f64::MAX,
            x1: f64::MIN,
            y_top: 1.0,
        };
        for p in points() {
            let x = frame.scale(p.0);
            (frame.x0, frame.x1) = (frame.x0.min(x), frame.x1.max(x));
        }
        if frame.x0 >= frame.x1 {
            (frame.x0, frame.x1) = (frame.x0.min(0.0), frame.x0.max(0.0) + 1.0);
        }
        let y_ticks = ticks(points().map(|p| p.1).fold(0.0, f64::max));
        frame.y_top = y_ticks
            .last()
            .copied()
            .unwrap_or(1.0)
            .max(f64::MIN_POSITIVE);
        (frame, y_ticks)
    }

    /// The axes, their ticks and labels, and the title.
    fn axes(&self, out: &mut String, frame: &Frame, y_ticks: &[f64]) {
        let (left, top, w, h) = AREA;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
            left + w / 2.0,
            escape(&self.title)
        );
        for &t in y_ticks {
            let (y, right, text) = (frame.py(t), left + w, left - 6.0);
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{text:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                y + 4.0,
                label(t)
            );
        }
        for t in frame.x_ticks() {
            let (x, bottom) = (frame.px(t), top + h);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{bottom:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                bottom + 5.0,
                bottom + 18.0,
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
    }

    /// Series `i`: its line, its points, its entry in the legend.
    fn series(&self, out: &mut String, frame: &Frame, i: usize) {
        let (s, colour) = (&self.series[i], COLOURS[i % COLOURS.len()]);
        let at = |&(x, y): &(f64, f64)| (frame.px(x), frame.py(y));
        let path: Vec<String> = s
            .points
            .iter()
            .map(at)
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let path = path.join(" ");
        let _ = writeln!(
            out,
            "<polyline points=\"{path}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>"
        );
        for (x, y) in s.points.iter().map(at) {
            let _ = writeln!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>"
            );
        }
        let (lx, ly) = (AREA.0 + AREA.2 + 12.0, AREA.1 + 10.0 + 18.0 * i as f64);
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

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let (frame, y_ticks) = self.frame();
        self.axes(&mut out, &frame, &y_ticks);
        for i in 0..self.series.len() {
            self.series(&mut out, &frame, i);
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
