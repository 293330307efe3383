//! Training-time augmentation, as the DARTS code applies it to CIFAR-10: random crop with
//! zero padding, random horizontal flip, normalisation, then cutout. Random draws happen per
//! sample in a fixed order (crop offsets, flip, cutout centre) from the caller's `Rng`, so a
//! batch is a pure function of the indices and the generator state.

use super::Dataset;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Which augmentations a loader applies. `Default` is none (evaluation, MNIST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Pad each side with `p` zero pixels (raw value 0, before normalisation, as
    /// torchvision's `RandomCrop(padding=p)`), then crop back to the original size at a
    /// uniformly random offset in `0..=2p` along each axis.
    pub crop_pad: Option<usize>,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Zero (after normalisation, as DARTS' `Cutout`) the square `[cy - L/2, cy + L/2)` x
    /// `[cx - L/2, cx + L/2)` around a uniformly random centre anywhere in the image,
    /// clipped at the borders (so it may be smaller than L x L).
    pub cutout: Option<usize>,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment::default()
    }
    /// DARTS' CIFAR-10 training transform: crop with padding 4 and flip, plus cutout of
    /// side `cutout` if given (DARTS uses 16 when training the final network).
    pub fn cifar(cutout: Option<usize>) -> Self {
        Augment {
            crop_pad: Some(4),
            flip: true,
            cutout,
        }
    }
    pub fn is_none(&self) -> bool {
        self.crop_pad.is_none() && !self.flip && self.cutout.is_none()
    }

    /// The random choices for one `h x w` sample.
    pub fn draw(&self, h: usize, w: usize, rng: &mut Rng) -> SampleDraw {
        let crop = match self.crop_pad {
            Some(p) => (rng.below(2 * p + 1), rng.below(2 * p + 1)),
            None => (0, 0),
        };
        let flip = self.flip && rng.bernoulli(0.5);
        let cutout = self.cutout.map(|_| (rng.below(h), rng.below(w)));
        SampleDraw { crop, flip, cutout }
    }
}

/// One sample's random choices: crop offsets into the padded image, flip, cutout centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleDraw {
    pub crop: (usize, usize),
    pub flip: bool,
    pub cutout: Option<(usize, usize)>,
}

/// Per-channel lookup tables from raw byte to normalised value `(p / 255 - mean) / std`.
pub(crate) fn normaliser(ds: &Dataset) -> Vec<[f32; 256]> {
    (0..ds.c)
        .map(|ch| {
            let (m, s) = (ds.mean[ch] as f64, ds.std[ch] as f64);
            let mut lut = [0f32; 256];
            for (p, v) in lut.iter_mut().enumerate() {
                *v = ((p as f64 / 255.0 - m) / s) as f32;
            }
            lut
        })
        .collect()
}

/// Writes sample `i` of `ds`, normalised and transformed by `draw`, into `out` (c*h*w).
pub(crate) fn render(
    ds: &Dataset,
    i: usize,
    luts: &[[f32; 256]],
    aug: &Augment,
    draw: &SampleDraw,
    out: &mut [f32],
) {
    let (h, w) = (ds.h, ds.w);
    let pad = aug.crop_pad.unwrap_or(0) as isize;
    let (oy, ox) = (draw.crop.0 as isize - pad, draw.crop.1 as isize - pad);
    let src = ds.image(i);
    for (ch, lut) in luts.iter().enumerate() {
        let sp = &src[ch * h * w..(ch + 1) * h * w];
        let op = &mut out[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let sy = y as isize + oy;
            let row = &mut op[y * w..(y + 1) * w];
            if sy < 0 || sy >= h as isize {
                row.fill(lut[0]);
                continue;
            }
            let srow = &sp[sy as usize * w..(sy as usize + 1) * w];
            for (x, o) in row.iter_mut().enumerate() {
                // Flip after the crop: output column x reads cropped column w-1-x.
                let cx = if draw.flip { w - 1 - x } else { x };
                let sx = cx as isize + ox;
                *o = if sx < 0 || sx >= w as isize {
                    lut[0]
                } else {
                    lut[srow[sx as usize] as usize]
                };
            }
        }
        if let (Some(len), Some((cy, cx))) = (aug.cutout, draw.cutout) {
            let half = len / 2;
            let (y1, y2) = (cy.saturating_sub(half), (cy + half).min(h));
            let (x1, x2) = (cx.saturating_sub(half), (cx + half).min(w));
            for y in y1..y2 {
                op[y * w + x1..y * w + x2].fill(0.0);
            }
        }
    }
}
