//! Summaries of samples (mean and percentiles) for reports.

use serde::Serialize;

/// Mean, percentiles and extremes of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Empty input gives all zeros.
    pub fn of(samples: &mut [f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let pct = |p: f64| samples[(((n - 1) as f64) * p).round() as usize];
        Summary {
            count: n,
            mean: samples.iter().sum::<f64>() / n as f64,
            p50: pct(0.5),
            p99: pct(0.99),
            min: samples[0],
            max: samples[n - 1],
        }
    }

    /// Summarises integer samples.
    pub fn of_counts(samples: impl IntoIterator<Item = u64>) -> Summary {
        let mut v: Vec<f64> = samples.into_iter().map(|x| x as f64).collect();
        Summary::of(&mut v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Summary::of_counts(1..=100);
        assert_eq!(s.count, 100);
        assert_eq!(s.mean, 50.5);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 100.0);
        assert_eq!(s.p99, 99.0);
        assert!(s.p50 == 50.0 || s.p50 == 51.0);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }
}
