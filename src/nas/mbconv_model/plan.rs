//! The plan of an MBConv network: EfficientNet-B0's seven stages, the width and depth
//! multipliers with EfficientNet's rounding (torchvision's `_make_divisible` and
//! `ceil(repeats * depth)`), the per-block plan they give for an architecture of the MBConv
//! space, and the published B0..B7 scaling table (`data/efficientnet/scaling.csv`, compiled in).

use crate::error::{Error, Result};
use crate::nas::space::mbconv::{MbConvArch, STAGES};

/// One stage of EfficientNet-B0: (expansion, kernel, stride, repeats, in channels, out
/// channels), as the paper's Table 1 and torchvision's `_efficientnet_conf` give it.
pub const B0_STAGES: [(usize, usize, usize, usize, usize, usize); STAGES] = [
    (1, 3, 1, 1, 32, 16),
    (6, 3, 2, 2, 16, 24),
    (6, 5, 2, 2, 24, 40),
    (6, 3, 2, 3, 40, 80),
    (6, 5, 1, 3, 80, 112),
    (6, 5, 2, 4, 112, 192),
    (6, 3, 1, 1, 192, 320),
];

/// The stem's output channels before the width multiplier.
pub const STEM_CHANNELS: usize = 32;
/// The head's 1x1 conv widens the last stage's channels this many times (1280 = 4 x 320).
pub const HEAD_EXPANSION: usize = 4;
/// SE squeezes to this fraction of the block's input channels.
pub const SE_RATIO: f64 = 0.25;

/// `v` rounded to the nearest multiple of 8, at least 8 and never below 90% of `v`
/// (torchvision's `_make_divisible(v, 8)`, in the same f64 arithmetic as Python's).
pub fn make_divisible(v: f64) -> usize {
    let divisor = 8.0;
    let mut new_v = (((v + divisor / 2.0) as usize) / 8 * 8).max(8);
    if (new_v as f64) < 0.9 * v {
        new_v += 8;
    }
    new_v
}

/// Channels under the width multiplier.
pub fn scale_channels(channels: usize, width: f64) -> usize {
    make_divisible(channels as f64 * width)
}

/// Repeats under the depth multiplier: `ceil(repeats * depth)`.
pub fn scale_repeats(repeats: usize, depth: f64) -> usize {
    (repeats as f64 * depth).ceil() as usize
}

/// One MBConv block as built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockPlan {
    pub stage: usize,
    /// Index within its stage.
    pub index: usize,
    pub in_channels: usize,
    /// Channels after the 1x1 expansion (`in_channels` when the expansion is 1: no conv).
    pub expanded: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// SE's squeezed channels, or None without SE.
    pub se_channels: Option<usize>,
    /// Stochastic depth's share of the network's drop probability: block id / block count.
    pub drop_share: f64,
}

impl BlockPlan {
    /// The identity skip exists (stride 1, same channels in and out).
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// Every block of `arch` under the multipliers, in order, and the stem, last-stage and
/// head channels. Checks the multipliers and the sizes for overflow.
pub fn blocks(arch: &MbConvArch, width: f64, depth: f64) -> Result<(Vec<BlockPlan>, usize, usize)> {
    for (flag, v) in [("--width-mult", width), ("--depth-mult", depth)] {
        if !(v.is_finite() && v > 0.0 && v <= 64.0) {
            return Err(Error::invalid(flag, format!("{v} is not in (0, 64]")));
        }
    }
    let stem = scale_channels(STEM_CHANNELS, width);
    let mut plan = Vec::new();
    let mut c_in = stem;
    for (s, (&(_, _, stride, _, _, out), st)) in B0_STAGES.iter().zip(&arch.stages).enumerate() {
        let c_out = scale_channels(out, width);
        for i in 0..scale_repeats(st.layers, depth) {
            let expanded = if st.expand == 1 {
                c_in
            } else {
                make_divisible((c_in * st.expand) as f64)
            };
            plan.push(BlockPlan {
                stage: s,
                index: i,
                in_channels: c_in,
                expanded,
                out_channels: c_out,
                kernel: st.kernel,
                stride: if i == 0 { stride } else { 1 },
                se_channels: st.se.then(|| ((c_in as f64 * SE_RATIO) as usize).max(1)),
                drop_share: 0.0,
            });
            c_in = c_out;
        }
    }
    let total = plan.len() as f64;
    for (id, b) in plan.iter_mut().enumerate() {
        b.drop_share = id as f64 / total;
    }
    let head = c_in
        .checked_mul(HEAD_EXPANSION)
        .ok_or_else(|| Error::invalid("--width-mult", format!("{width} overflows")))?;
    Ok((plan, stem, head))
}

/// One row of the published EfficientNet scaling table.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingRow {
    /// `b0` .. `b7`.
    pub model: String,
    pub width: f64,
    pub depth: f64,
    pub resolution: usize,
    pub dropout: f64,
}

/// The table as shipped in `data/efficientnet/scaling.csv`.
const SCALING_CSV: &str = include_str!("../../../data/efficientnet/scaling.csv");

impl ScalingRow {
    /// B0..B7 from the shipped table, in order.
    pub fn table() -> Result<Vec<ScalingRow>> {
        parse_scaling(SCALING_CSV)
    }

    /// The row of `name` (`b0`..`b7`, any case).
    pub fn named(name: &str) -> Result<ScalingRow> {
        let want = name.trim().to_ascii_lowercase();
        let table = Self::table()?;
        let names: Vec<String> = table.iter().map(|r| r.model.clone()).collect();
        table.into_iter().find(|r| r.model == want).ok_or_else(|| {
            Error::invalid(
                "EfficientNet",
                format!("'{name}' (expected one of {})", names.join(", ")),
            )
        })
    }
}

/// Parses `model,width,depth,resolution,dropout` rows after a header line.
fn parse_scaling(text: &str) -> Result<Vec<ScalingRow>> {
    let bad = |line: usize, why: String| {
        Error::invalid(
            "data/efficientnet/scaling.csv",
            format!("line {line}: {why}"),
        )
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [model, width, depth, resolution, dropout] = f[..] else {
            return Err(bad(i + 1, format!("{} fields, expected 5", f.len())));
        };
        let num = |s: &str| s.parse::<f64>().map_err(|_| bad(i + 1, format!("'{s}'")));
        rows.push(ScalingRow {
            model: model.to_string(),
            width: num(width)?,
            depth: num(depth)?,
            resolution: resolution
                .parse()
                .map_err(|_| bad(i + 1, format!("'{resolution}'")))?,
            dropout: num(dropout)?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_torchvisions() {
        assert_eq!(make_divisible(32.0 * 1.1), 32);
        assert_eq!(make_divisible(16.0 * 0.25), 8);
        assert_eq!(make_divisible(320.0 * 1.1), 352);
        assert_eq!(make_divisible(40.0 * 1.4), 56);
        assert_eq!(scale_repeats(3, 1.4), 5);
        assert_eq!(scale_repeats(2, 1.1), 3);
    }

    #[test]
    fn the_table_has_b0_to_b7() {
        let t = ScalingRow::table().unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(t[7].model, "b7");
        assert_eq!((t[7].width, t[7].depth, t[7].resolution), (2.0, 3.1, 600));
        assert!(ScalingRow::named("B9").is_err());
    }
}
