//! The scaled network (`nasrs scale apply`): a base MBConv network under coefficients at a
//! compound coefficient phi, with EfficientNet's rounding: depth multiplier
//! `base depth * alpha^phi` (each stage's blocks `ceil(n * depth)`), width multiplier `base
//! width * beta^phi` (channels to multiples of 8, `make_divisible`), resolution
//! `round(base resolution * gamma^phi)`. The JSON it is written as (per-stage channels and
//! blocks, parameter count, forward FLOPs) is what `nasrs train --space mbconv --scaled FILE` trains.

use super::base::ScalingBase;
use super::Coefficients;
use crate::autograd::Tape;
use crate::backend::counting::Counting;
use crate::data::check_resolution;
use crate::error::{Error, Result};
use crate::nas::mbconv_model::plan::blocks;
use crate::nas::mbconv_model::{MbConvConfig, MbConvNetwork};
use crate::nas::space::mbconv::MbConvArch;
use crate::nas::Mode;
use crate::rng::Rng;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The largest phi accepted (2^16 times the FLOPs is far past any machine).
pub const MAX_PHI: f64 = 16.0;

/// One stage of the scaled network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSize {
    /// 1-based, as the paper's table (stage 0 is the stem).
    pub stage: usize,
    pub channels: usize,
    pub layers: usize,
}

/// The scaled network, as `nasrs scale apply` writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaledNetwork {
    /// Always "mbconv".
    pub space: String,
    pub arch: String,
    pub width_mult: f64,
    pub depth_mult: f64,
    /// The image side it trains at.
    pub resolution: usize,
    pub coefficients: Coefficients,
    pub phi: f64,
    pub base: ScalingBase,
    pub base_resolution: usize,
    pub stem_channels: usize,
    pub head_channels: usize,
    pub stages: Vec<StageSize>,
    /// The parameter count counts the classifier at these classes and input channels.
    pub classes: usize,
    pub in_channels: usize,
    pub params: usize,
    /// Multiply-adds counted as FLOPs of one image's eval-mode forward at `resolution` (the
    /// counting backend's count).
    #[serde(default)]
    pub flops: u64,
}

/// A multiplier rounded to 9 decimals, so that `1.1^2` is 1.21 and `ceil(100 * 1.21)` 121.
fn tidy(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

/// Scales `base` (training at `base_resolution`) by `c` at `phi`; counts the parameters at
/// `classes` and `in_channels`.
pub fn apply(
    base: &ScalingBase,
    base_resolution: usize,
    c: Coefficients,
    phi: f64,
    classes: usize,
    in_channels: usize,
) -> Result<ScaledNetwork> {
    c.validate()?;
    if !(phi.is_finite() && (0.0..=MAX_PHI).contains(&phi)) {
        return Err(Error::invalid(
            "--phi",
            format!("{phi} is not in [0, {MAX_PHI}]"),
        ));
    }
    check_resolution(base_resolution)
        .map_err(|e| Error::invalid("--base-resolution", e.to_string()))?;
    let arch =
        MbConvArch::parse(&base.arch).map_err(|e| Error::invalid("--base", e.to_string()))?;
    let width_mult = tidy(base.width_mult * c.beta.powf(phi));
    let depth_mult = tidy(base.depth_mult * c.alpha.powf(phi));
    let side = (base_resolution as f64 * c.gamma.powf(phi)).round();
    if side > usize::MAX as f64 {
        return Err(Error::invalid(
            "--phi",
            format!("{phi} overflows the resolution"),
        ));
    }
    let resolution = side as usize;
    check_resolution(resolution)
        .map_err(|e| Error::invalid("--phi", format!("the scaled resolution {resolution}: {e}")))?;
    let (plan, stem_channels, head_channels) = blocks(&arch, width_mult, depth_mult)?;
    let mut stages: Vec<StageSize> = Vec::new();
    for b in &plan {
        match stages.last_mut() {
            Some(s) if s.stage == b.stage + 1 => s.layers += 1,
            _ => stages.push(StageSize {
                stage: b.stage + 1,
                channels: b.out_channels,
                layers: 1,
            }),
        }
    }
    let config = MbConvConfig {
        width_mult,
        depth_mult,
        ..MbConvConfig::new(arch, classes, in_channels)
    };
    let (params, flops) = count(config, resolution)?;
    Ok(ScaledNetwork {
        space: "mbconv".to_string(),
        arch: arch.to_arch_string(),
        width_mult,
        depth_mult,
        resolution,
        coefficients: c,
        phi,
        base: base.clone(),
        base_resolution,
        stem_channels,
        head_channels,
        stages,
        classes,
        in_channels,
        params,
        flops,
    })
}

/// The network's parameters and one image's forward FLOPs at `side`, on the counting
/// backend (shapes only: it allocates and computes nothing).
fn count(config: MbConvConfig, side: usize) -> Result<(usize, u64)> {
    let be = Counting::new();
    let in_channels = config.in_channels;
    let mut net = MbConvNetwork::new(&be, config, 0)?;
    be.reset()?;
    let mut tape = Tape::new(be.clone());
    tape.set_grad_enabled(false);
    let x = tape.constant(Tensor::zeros(
        &be,
        Shape::new(&[1, in_channels, side, side]),
    )?);
    net.run(&mut tape, x, Mode::EVAL, 0.0, &mut Rng::new(0))?;
    drop(tape);
    Ok((net.num_weights(), be.snapshot()?.total.flops))
}

impl ScaledNetwork {
    /// Reads a scaled network's JSON (`--scaled`), checking what training needs: the space,
    /// the architecture, the multipliers and the resolution; errors name the file.
    pub fn read(path: &Path) -> Result<ScaledNetwork> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let net: ScaledNetwork = serde_json::from_str(&text).map_err(|e| {
            Error::bad_file(
                path,
                format!("not a scaled network of `nasrs scale apply`: {e}"),
            )
        })?;
        let bad = |e: Error| Error::bad_file(path, e.to_string());
        if net.space != "mbconv" {
            return Err(Error::bad_file(
                path,
                format!("space '{}' (expected mbconv)", net.space),
            ));
        }
        let arch = MbConvArch::parse(&net.arch).map_err(bad)?;
        blocks(&arch, net.width_mult, net.depth_mult).map_err(bad)?;
        check_resolution(net.resolution).map_err(bad)?;
        Ok(net)
    }

    /// The parsed architecture (checked by [`read`](Self::read) and [`apply`]).
    pub fn mbconv_arch(&self) -> Result<MbConvArch> {
        MbConvArch::parse(&self.arch)
    }
}
