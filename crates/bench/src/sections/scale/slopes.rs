//! The table of slopes: each measured series fitted with a line (least squares), its slope
//! the cost per unit, and how far its largest point is from the line fitted to the others,
//! the test for a cost that grows worse than linearly.

use crate::Ctx;
use crate::report::{Json, Metric, Section, obj};

/// One series and its line.
#[derive(Debug, Clone)]
pub struct Fit {
    /// JSON key.
    pub key: String,
    /// What grows with what, for people ("master CPU per reload vs workers").
    pub what: String,
    /// The unit of the slope ("ms per worker").
    pub unit: String,
    /// The points, x ascending.
    pub points: Vec<(f64, f64)>,
    /// Least-squares slope and intercept over every point.
    pub slope: f64,
    pub intercept: f64,
    /// The largest point over the line fitted to the others (1: on the line; 2: twice what
    /// a linear cost predicts). `None` with fewer than 3 points.
    pub last_over_line: Option<f64>,
}

/// Least squares over `points`: (slope, intercept).
pub fn line(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 {
        return (0.0, my);
    }
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

impl Fit {
    /// Fits `points`.
    pub fn new(key: &str, what: &str, unit: &str, mut points: Vec<(f64, f64)>) -> Fit {
        points.retain(|(x, y)| x.is_finite() && y.is_finite());
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (slope, intercept) = line(&points);
        // Only where the line of the others predicts a clearly positive value: a ratio to a
        // value near 0 (a flat, noisy series) says nothing.
        let scale = points.iter().map(|p| p.1.abs()).fold(0.0, f64::max);
        let last_over_line = (points.len() >= 3)
            .then(|| {
                let (rest, last) = points.split_at(points.len() - 1);
                let (s, i) = line(rest);
                let predicted = s * last[0].0 + i;
                (predicted > 0.05 * scale).then(|| last[0].1 / predicted)
            })
            .flatten();
        Fit {
            key: key.to_owned(),
            what: what.to_owned(),
            unit: unit.to_owned(),
            points,
            slope,
            intercept,
            last_over_line,
        }
    }

    /// A metric for the slopes table.
    pub fn metric(&self) -> Metric {
        let last = self.last_over_line;
        let shown = match last {
            Some(r) => format!(
                "{:.4} {} (+ {:.3} fixed); largest point {r:.2} × the line of the others",
                self.slope, self.unit, self.intercept
            ),
            None => format!(
                "{:.4} {} (+ {:.3} fixed)",
                self.slope, self.unit, self.intercept
            ),
        };
        let value = obj! {
            "slope": self.slope, "intercept": self.intercept, "unit": &self.unit,
            "last_over_line": last,
            "points": Json::arr(self.points.iter().map(|&(x, y)| Json::arr([x, y]))),
        };
        Metric::info(self.key.clone(), self.what.clone(), value, shown)
    }
}

/// The section: one line per series.
pub fn section(ctx: &Ctx, fits: &[Fit]) -> Section {
    let mut s = Section::new(
        "scale.slopes",
        "Scale: slopes (cost per worker, per listener, per reload)",
    );
    s.intro.push(format!(
        "Each series of the scale sections above fitted with a line (least squares over every \
         point): the slope is the cost of one more unit. \"Largest point × the line of the \
         others\": the largest point divided by what the line fitted to the other points \
         predicts for it; about 1 for a cost that grows linearly, well above 1 (say 2) for one \
         that grows worse. Reproduce: `{}`.",
        reproduce(ctx)
    ));
    for f in fits {
        s.push(f.metric());
    }
    s
}

fn reproduce(ctx: &Ctx) -> String {
    let o = &ctx.opts;
    format!(
        "cargo run --release -p bench -- --only scale --scale-workers {} --scale-reloads {} \
         --probe-secs {} --scale-secs {} --burst {} --soak-reloads {}",
        o.scale_workers, o.scale_reloads, o.probe_secs, o.scale_secs, o.burst, o.soak_reloads
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_lines_and_flags_growth() {
        let linear: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&x| (x, 3.0 * x + 1.0))
            .collect();
        let f = Fit::new("k", "y vs x", "per x", linear);
        assert!((f.slope - 3.0).abs() < 1e-9 && (f.intercept - 1.0).abs() < 1e-9);
        assert!((f.last_over_line.expect("3 points") - 1.0).abs() < 1e-9);
        let square: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0]
            .iter()
            .map(|&x| (x, x * x))
            .collect();
        let f = Fit::new("k", "y vs x", "per x", square);
        assert!(f.last_over_line.expect("points") > 1.5);
        assert!(
            Fit::new("k", "", "", vec![(1.0, 1.0)])
                .last_over_line
                .is_none()
        );
    }
}
