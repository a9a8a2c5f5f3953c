//! Small statistics over a handful of samples.

/// The median (mean of the two middle values for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `p`-th percentile (0..=100) by nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The smallest value; NaN when empty.
pub fn min(values: &[f64]) -> f64 {
    sorted(values).first().copied().unwrap_or(f64::NAN)
}

/// The largest value; NaN when empty.
pub fn max(values: &[f64]) -> f64 {
    sorted(values).last().copied().unwrap_or(f64::NAN)
}

/// (max - min) / median, as a fraction: how far apart repetitions were.
pub fn spread(values: &[f64]) -> f64 {
    (max(values) - min(values)) / median(values)
}

/// The values more than 30% away from the median, each formatted by `show(index, value)`.
pub fn outliers(values: &[f64], show: impl Fn(usize, f64) -> String) -> Vec<String> {
    let median = median(values);
    let odd = values
        .iter()
        .enumerate()
        .filter(|(_, v)| (**v / median - 1.0).abs() > 0.3);
    odd.map(|(i, &v)| show(i, v)).collect()
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 90.0), 18.0);
        assert_eq!(percentile(&v, 100.0), 20.0);
        assert_eq!(percentile(&[5.0], 90.0), 5.0);
        assert_eq!(max(&v), 20.0);
        assert_eq!(min(&v), 1.0);
        let odd = outliers(&[10.0, 10.0, 14.0, 6.0], |i, v| format!("{i}:{v}"));
        assert_eq!(odd, ["2:14", "3:6"]);
    }
}
