//! Learning-curve extrapolation: the pow3 family `y(t) = a - b t^-c` (t the epoch, from 1)
//! fitted by least squares to the epochs seen, and its prediction at a later epoch.
//!
//! For a fixed `c` the model is linear in `a` and `b` (ordinary least squares on `x = t^-c`),
//! so the fit is a one-dimensional search over `c`: a log-spaced grid, then golden-section
//! refinement around the best grid point.

/// A fitted pow3 curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pow3 {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// The sum of squared residuals on the points fitted.
    pub sse: f64,
}

impl Pow3 {
    /// The curve's value at epoch `t` (1-based).
    pub fn at(&self, t: f64) -> f64 {
        self.a - self.b * t.powf(-self.c)
    }
}

/// The range of exponents searched: flatter and steeper than any training curve.
const C_MIN: f64 = 1e-3;
const C_MAX: f64 = 10.0;
const GRID: usize = 200;
const GOLDEN_STEPS: usize = 100;

/// The best `a`, `b` for exponent `c` on `curve` (epoch i+1 for `curve[i]`), with its SSE.
fn solve(curve: &[f64], c: f64) -> Pow3 {
    let n = curve.len() as f64;
    let xs: Vec<f64> = (1..=curve.len()).map(|t| (t as f64).powf(-c)).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = curve.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(curve).map(|(x, y)| (x - mx) * (y - my)).sum();
    // y = a + slope x, so b = -slope; a flat x (one point) leaves the slope at 0.
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let a = my - slope * mx;
    let sse = xs
        .iter()
        .zip(curve)
        .map(|(x, y)| (a + slope * x - y).powi(2))
        .sum();
    Pow3 {
        a,
        b: -slope,
        c,
        sse,
    }
}

/// The least-squares pow3 fit of `curve` (`curve[i]` the value after epoch i+1); None when
/// there are fewer than three points or a value is not finite.
pub fn fit_pow3(curve: &[f64]) -> Option<Pow3> {
    if curve.len() < 3 || !curve.iter().all(|y| y.is_finite()) {
        return None;
    }
    let at = |i: usize| C_MIN * (C_MAX / C_MIN).powf(i as f64 / (GRID - 1) as f64);
    let best = (0..GRID)
        .min_by(|&i, &j| solve(curve, at(i)).sse.total_cmp(&solve(curve, at(j)).sse))
        .unwrap_or(0);
    // Golden-section search in log c between the grid neighbours of the best point.
    let (mut lo, mut hi) = (
        at(best.saturating_sub(1)).ln(),
        at((best + 1).min(GRID - 1)).ln(),
    );
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let sse = |l: f64| solve(curve, l.exp()).sse;
    for _ in 0..GOLDEN_STEPS {
        let m1 = hi - g * (hi - lo);
        let m2 = lo + g * (hi - lo);
        if sse(m1) <= sse(m2) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    let fit = solve(curve, ((lo + hi) / 2.0).exp());
    fit.a.is_finite().then_some(fit)
}

/// The accuracy `curve` predicts after `epochs` epochs (clamped to [0, 1]); None when it
/// cannot be fitted.
pub fn predict(curve: &[f64], epochs: usize) -> Option<f64> {
    fit_pow3(curve).map(|f| f.at(epochs as f64).clamp(0.0, 1.0))
}
