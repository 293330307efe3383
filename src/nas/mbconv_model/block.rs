//! One MBConv block (MobileNetV2's inverted residual with EfficientNet's SE and swish):
//! [1x1 expand conv + BN + swish, when the expansion is not 1] -> kxk depthwise conv (the
//! block's stride) + BN + swish -> [squeeze-and-excitation: global average pool -> 1x1 conv
//! with bias to the squeezed channels -> swish -> 1x1 conv with bias back -> sigmoid ->
//! channel scale] -> 1x1 project conv + BN (no activation) -> identity skip, with stochastic
//! depth in training, when the stride is 1 and the channels match.
//!
//! Names are torchvision's `MBConv`: the parts are `block.0`, `block.1`, ... in that order
//! (no expand conv shifts the rest down by one), each conv + BN a `Conv2dNormActivation`
//! (`.0.weight`, `.1.weight` / `.1.bias` / `.1.running_mean` ...), SE's convs `fc1` and `fc2`.

use super::plan::BlockPlan;
use crate::autograd::{ParamId, Var};
use crate::backend::Backend;
use crate::error::Result;
use crate::nas::modules::{BatchNorm, Builder, Conv, Ctx};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Shape};

/// A conv and its batch norm; `swish` after them or not.
pub(super) struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
    swish: bool,
}

impl ConvBn {
    /// The conv at `{scope}.0`, its BN at `{scope}.1` (a `Conv2dNormActivation`).
    pub(super) fn new<B: Backend>(
        b: &mut Builder<B>,
        spec: Conv2dSpec,
        swish: bool,
        bn: (f64, f64),
    ) -> Result<ConvBn> {
        let conv = b.scope(0, |b| b.conv(spec))?;
        let bn = b.scope(1, |b| {
            b.batch_norm_with(spec.out_channels, true, bn.0, bn.1)
        })?;
        Ok(ConvBn { conv, bn, swish })
    }

    pub(super) fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let h = self.conv.forward(cx, x)?;
        let h = self.bn.forward(cx, h)?;
        if self.swish {
            cx.tape.silu(h)
        } else {
            Ok(h)
        }
    }
}

/// Squeeze-and-excitation on `channels` channels through `squeezed`.
struct SqueezeExcite {
    /// `fc1`, `fc2`: 1x1 conv weights `[out, in, 1, 1]` and their biases.
    fc1: (ParamId, ParamId),
    fc2: (ParamId, ParamId),
    channels: usize,
    squeezed: usize,
}

impl SqueezeExcite {
    fn new<B: Backend>(b: &mut Builder<B>, channels: usize, squeezed: usize) -> Result<Self> {
        let fc1 = b.scope("fc1", |b| conv1x1_with_bias(b, channels, squeezed))?;
        let fc2 = b.scope("fc2", |b| conv1x1_with_bias(b, squeezed, channels))?;
        Ok(SqueezeExcite {
            fc1,
            fc2,
            channels,
            squeezed,
        })
    }

    /// The 1x1 convs act on a 1x1 map, so they run as linear layers on the pooled [N, C]
    /// (their weights read as `[out, in]`).
    fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let pooled = cx.tape.global_avg_pool(x)?;
        let (c, s) = (self.channels, self.squeezed);
        let w1 = cx.weight(self.fc1.0);
        let w1 = cx.tape.reshape(w1, &[s, c])?;
        let b1 = cx.weight(self.fc1.1);
        let h = cx.tape.linear(pooled, w1, Some(b1))?;
        let h = cx.tape.silu(h)?;
        let w2 = cx.weight(self.fc2.0);
        let w2 = cx.tape.reshape(w2, &[c, s])?;
        let b2 = cx.weight(self.fc2.1);
        let g = cx.tape.linear(h, w2, Some(b2))?;
        let g = cx.tape.sigmoid(g)?;
        cx.tape.channel_scale(x, g)
    }
}

/// A 1x1 conv with bias under the current scope, PyTorch's `Conv2d` init (kaiming-uniform
/// weight, bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
fn conv1x1_with_bias<B: Backend>(
    b: &mut Builder<B>,
    c_in: usize,
    c_out: usize,
) -> Result<(ParamId, ParamId)> {
    let weight = b.conv(Conv2dSpec::new(c_in, c_out, 1))?.weight;
    let bias = b.uniform_param("bias", Shape::new(&[c_out]), 1.0 / (c_in as f64).sqrt())?;
    Ok((weight, bias))
}

/// One MBConv block, built from its plan.
pub(super) struct MbConvBlock {
    pub(super) plan: BlockPlan,
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: Option<SqueezeExcite>,
    project: ConvBn,
}

impl MbConvBlock {
    /// Parameters under the current scope's `block.{i}`; `bn` is (momentum, eps).
    pub(super) fn new<B: Backend>(
        b: &mut Builder<B>,
        plan: BlockPlan,
        bn: (f64, f64),
    ) -> Result<Self> {
        let p = plan;
        b.scope("block", |b| {
            let mut part = 0;
            let expand = if p.expanded != p.in_channels {
                part += 1;
                Some(b.scope(0, |b| {
                    ConvBn::new(b, Conv2dSpec::new(p.in_channels, p.expanded, 1), true, bn)
                })?)
            } else {
                None
            };
            let dw = Conv2dSpec::new(p.expanded, p.expanded, p.kernel)
                .stride(p.stride)
                .padding((p.kernel - 1) / 2)
                .groups(p.expanded);
            let depthwise = b.scope(part, |b| ConvBn::new(b, dw, true, bn))?;
            part += 1;
            let se = match p.se_channels {
                Some(s) => {
                    let se = b.scope(part, |b| SqueezeExcite::new(b, p.expanded, s))?;
                    part += 1;
                    Some(se)
                }
                None => None,
            };
            let project = b.scope(part, |b| {
                ConvBn::new(b, Conv2dSpec::new(p.expanded, p.out_channels, 1), false, bn)
            })?;
            Ok(MbConvBlock {
                plan,
                expand,
                depthwise,
                se,
                project,
            })
        })
    }

    /// `drop_prob` is the network's stochastic depth probability (this block drops a
    /// sample's residual branch with `drop_prob * drop_share`, training mode only).
    pub(super) fn forward<B: Backend>(
        &self,
        cx: &mut Ctx<B>,
        x: Var,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<Var> {
        let mut h = x;
        if let Some(e) = &self.expand {
            h = e.forward(cx, h)?;
        }
        h = self.depthwise.forward(cx, h)?;
        if let Some(se) = &self.se {
            h = se.forward(cx, h)?;
        }
        h = self.project.forward(cx, h)?;
        if !self.plan.residual() {
            return Ok(h);
        }
        let p = drop_prob * self.plan.drop_share;
        if cx.mode.train && p > 0.0 {
            h = cx.tape.drop_path(h, 1.0 - p, rng)?;
        }
        cx.tape.add(h, x)
    }
}
