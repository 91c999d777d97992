//! Percentiles of one run, medians over runs.

pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1);
    sorted[i] as f64
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per-run figures of one variant; the table shows their medians.
#[derive(Default)]
pub struct Series(Vec<Vec<f64>>);

impl Series {
    pub fn push(&mut self, figures: &[f64]) {
        if self.0.is_empty() {
            self.0 = vec![Vec::new(); figures.len()];
        }
        for (col, &f) in self.0.iter_mut().zip(figures) {
            col.push(f);
        }
    }

    pub fn median(&self, i: usize) -> f64 {
        self.0.get(i).map_or(f64::NAN, |c| median(c))
    }
}

/// The relay's figures and both baselines'.
pub struct Trio {
    pub relay: Series,
    pub copy: Series,
    pub big: Series,
}
