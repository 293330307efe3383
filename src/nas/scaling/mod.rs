//! EfficientNet's compound scaling (Tan & Le 2019) of an MBConv network: depth `d = alpha^phi`,
//! width `w = beta^phi`, resolution `r = gamma^phi`, under `alpha * beta^2 * gamma^2 ~ 2`
//! (each unit of phi about doubles the FLOPs) with `alpha, beta, gamma >= 1`.
//!
//! This file owns the coefficients and the grid `nasrs scale search` tries: every point of
//! `alpha x beta x gamma` on a step, kept when its product is within a tolerance of 2 (at
//! phi = 1). The base network is read in `base.rs`, the scaled network built in `apply.rs`,
//! and the grid search as a run folder of training trials is `search.rs`.

pub mod apply;
pub mod base;
pub mod search;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The FLOPs factor each unit of phi aims at.
pub const TARGET_PRODUCT: f64 = 2.0;
/// Grid values are rounded to this many decimals, so that `1 + 3 * 0.1` is `1.3`.
const GRID_DECIMALS: f64 = 1e9;
/// The most grid points a search may enumerate (before the constraint).
pub const MAX_GRID_POINTS: usize = 1_000_000;

/// One set of compound-scaling coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    /// Depth.
    pub alpha: f64,
    /// Width.
    pub beta: f64,
    /// Resolution.
    pub gamma: f64,
}

impl Coefficients {
    /// `alpha * beta^2 * gamma^2`: the FLOPs factor of one unit of phi.
    pub fn product(&self) -> f64 {
        self.alpha * self.beta * self.beta * self.gamma * self.gamma
    }

    /// Refuses a coefficient below 1 or not finite, naming its flag.
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--alpha", self.alpha),
            ("--beta", self.beta),
            ("--gamma", self.gamma),
        ] {
            if !(v.is_finite() && (1.0..=64.0).contains(&v)) {
                return Err(Error::invalid(flag, format!("{v} is not in [1, 64]")));
            }
        }
        Ok(())
    }
}

/// The grid `nasrs scale search` tries.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// The spacing of every axis.
    pub step: f64,
    /// Inclusive `[min, max]` of each coefficient.
    pub alpha: (f64, f64),
    pub beta: (f64, f64),
    pub gamma: (f64, f64),
    /// Kept: `|alpha * beta^2 * gamma^2 - 2| <= tolerance`.
    pub tolerance: f64,
}

impl Default for Grid {
    /// The ranges of the issue (alpha in [1, 2], beta and gamma in [1, 1.5]), step 0.1,
    /// tolerance 0.1: 21 candidates.
    fn default() -> Self {
        Grid {
            step: 0.1,
            alpha: (1.0, 2.0),
            beta: (1.0, 1.5),
            gamma: (1.0, 1.5),
            tolerance: 0.1,
        }
    }
}

/// `"lo,hi"` as a range for `flag` (a single number is the range of that one value).
pub fn parse_range(flag: &str, text: &str) -> Result<(f64, f64)> {
    let num = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| Error::invalid(flag, format!("'{text}' is not MIN,MAX (e.g. 1,1.5)")))
    };
    match text.split(',').collect::<Vec<_>>()[..] {
        [one] => num(one).map(|v| (v, v)),
        [lo, hi] => Ok((num(lo)?, num(hi)?)),
        _ => Err(Error::invalid(
            flag,
            format!("'{text}' is not MIN,MAX (e.g. 1,1.5)"),
        )),
    }
}

fn round_grid(v: f64) -> f64 {
    (v * GRID_DECIMALS).round() / GRID_DECIMALS
}

impl Grid {
    /// The values of one axis: `min, min + step, ...` up to `max` (with a little slack for
    /// the decimal step, so that `1, 1.1, ..., 1.5` ends at 1.5).
    fn axis(&self, flag: &str, (lo, hi): (f64, f64)) -> Result<Vec<f64>> {
        if !(lo.is_finite() && hi.is_finite() && lo >= 1.0 && hi <= 64.0) {
            return Err(Error::invalid(
                flag,
                format!("{lo},{hi} is not within [1, 64] (the coefficients are at least 1)"),
            ));
        }
        if hi < lo {
            return Err(Error::invalid(
                flag,
                format!("{lo},{hi} is an empty range (MIN above MAX)"),
            ));
        }
        let n = ((hi - lo) / self.step + 1e-9).floor() as usize;
        Ok((0..=n)
            .map(|i| round_grid(lo + i as f64 * self.step))
            .collect())
    }

    /// Every grid point within the tolerance, alpha outermost, then beta, then gamma, each
    /// ascending. Refuses a bad step, tolerance or range naming its flag, and a grid with no
    /// point within the tolerance naming `--tolerance`.
    pub fn candidates(&self) -> Result<Vec<Coefficients>> {
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(Error::invalid(
                "--step",
                format!("{} is not a positive number", self.step),
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return Err(Error::invalid(
                "--tolerance",
                format!("{} is not a positive number", self.tolerance),
            ));
        }
        let a = self.axis("--alpha-range", self.alpha)?;
        let b = self.axis("--beta-range", self.beta)?;
        let g = self.axis("--gamma-range", self.gamma)?;
        let points = a
            .len()
            .checked_mul(b.len())
            .and_then(|n| n.checked_mul(g.len()));
        if points.is_none_or(|n| n > MAX_GRID_POINTS) {
            return Err(Error::invalid(
                "--step",
                format!(
                    "{} gives more than {MAX_GRID_POINTS} grid points; use a larger step",
                    self.step
                ),
            ));
        }
        let mut kept = Vec::new();
        for &alpha in &a {
            for &beta in &b {
                for &gamma in &g {
                    let c = Coefficients { alpha, beta, gamma };
                    // The slack keeps a product on the border (2.1 at tolerance 0.1) in.
                    if (c.product() - TARGET_PRODUCT).abs() <= self.tolerance + 1e-9 {
                        kept.push(c);
                    }
                }
            }
        }
        if kept.is_empty() {
            return Err(Error::invalid(
                "--tolerance",
                format!(
                    "no grid point (alpha {:?}, beta {:?}, gamma {:?}, step {}) has \
                     alpha * beta^2 * gamma^2 within {} of 2; widen the ranges or the tolerance",
                    self.alpha, self.beta, self.gamma, self.step, self.tolerance
                ),
            ));
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_grid_keeps_21_points_all_within_tolerance() {
        let g = Grid::default();
        let c = g.candidates().unwrap();
        assert_eq!(c.len(), 21);
        assert!(c.iter().all(|c| (c.product() - 2.0).abs() <= 0.1 + 1e-9));
        assert_eq!(
            c[0],
            Coefficients {
                alpha: 1.0,
                beta: 1.0,
                gamma: 1.4
            }
        );
    }

    #[test]
    fn ranges_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_range("--x", "1,1.5").unwrap(), (1.0, 1.5));
        assert_eq!(parse_range("--x", "1.2").unwrap(), (1.2, 1.2));
        assert!(parse_range("--x", "a,b").is_err());
        assert!(parse_range("--x", "1,2,3").is_err());
    }
}
