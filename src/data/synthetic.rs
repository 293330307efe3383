//! A generated image classification task that needs no files and that a small network can
//! learn in a few steps, so tests and demos can show the loss going down.
//!
//! Each class has a fixed pattern made of three cues of different kinds: a Gaussian blob at a
//! class-specific position (positive or negative per channel, so a colour too), a grating
//! with a class-specific orientation and period (a texture a 3x3 conv sees anywhere), and a
//! class-specific brightness per channel. Samples add a random blob shift of up to one pixel,
//! a random grating phase and Gaussian pixel noise. The patterns depend only on the class
//! index and the image shape, never on the seed, so sets drawn with different seeds (train,
//! test) are the same task; the seed decides the samples.

use super::{channel_stats, Dataset};
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::f64::consts::PI;

/// Standard deviation of the per-pixel noise, in [0, 1] pixel units.
const NOISE: f64 = 0.06;
const BLOB_AMPLITUDE: f64 = 0.45;
const GRATING_AMPLITUDE: f64 = 0.12;

/// `n` samples of `c x h x w` images in `classes` balanced classes, deterministic for `seed`.
/// Mean and std are computed from the generated pixels.
pub fn synthetic(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    classes: usize,
    seed: u64,
) -> Result<Dataset> {
    if n == 0 || c == 0 || h == 0 || w == 0 || classes == 0 {
        return Err(Error::invalid(
            "synthetic dataset",
            format!("n {n}, c {c}, h {h}, w {w} and classes {classes} must all be positive"),
        ));
    }
    let mut rng = Rng::fork(seed, "synthetic-data");
    // Balanced labels in a seeded order.
    let mut labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    rng.shuffle(&mut labels);

    let side = h.min(w) as f64;
    let sigma = (side / 8.0).max(1.0);
    let radius = 0.28 * side;
    let (cy0, cx0) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let plane = h * w;
    let mut images = vec![0u8; n * c * plane];
    for (i, &label) in labels.iter().enumerate() {
        let k = label as usize;
        let turn = 2.0 * PI * k as f64 / classes as f64;
        let by = cy0 + radius * turn.sin() + (rng.uniform() * 2.0 - 1.0);
        let bx = cx0 + radius * turn.cos() + (rng.uniform() * 2.0 - 1.0);
        let theta = PI * k as f64 / classes as f64;
        let period = 4.0 + (k % 3) as f64;
        let (gy, gx) = (
            theta.sin() * 2.0 * PI / period,
            theta.cos() * 2.0 * PI / period,
        );
        let phase = rng.uniform() * 2.0 * PI;
        for ch in 0..c {
            let level = 0.25 + 0.5 * (0.5 + 0.618_034 * k as f64 + 0.414_214 * ch as f64).fract();
            let sign = if (k + ch).is_multiple_of(2) {
                1.0
            } else {
                -1.0
            };
            let out = &mut images[(i * c + ch) * plane..(i * c + ch + 1) * plane];
            for y in 0..h {
                for x in 0..w {
                    let (dy, dx) = (y as f64 - by, x as f64 - bx);
                    let blob = (-(dy * dy + dx * dx) / (2.0 * sigma * sigma)).exp();
                    let grating = (gy * y as f64 + gx * x as f64 + phase).sin();
                    let v = level
                        + sign * BLOB_AMPLITUDE * blob
                        + GRATING_AMPLITUDE * grating
                        + NOISE * rng.normal();
                    out[y * w + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    let (mean, std) = channel_stats(&images, n, c, plane);
    Dataset::new(
        format!("synthetic/seed{seed}"),
        images,
        labels,
        (c, h, w),
        classes,
        mean,
        std,
    )
}
