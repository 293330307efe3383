//! The MBConv network (`mbconv_model`) as an ONNX inference graph: the eval-mode forward of
//! `MbConvNetwork` written node for node over its `state_dict` (torchvision's names): stem
//! conv + BN + swish, every block of the architecture's plan (1x1 expand conv + BN + swish,
//! depthwise conv + BN + swish, squeeze-and-excitation as global pooling, two 1x1 convs with
//! bias, swish and sigmoid, and the gate's broadcast product, 1x1 project conv + BN, the
//! identity skip), head conv + BN + swish, then pooling and the classifier (dropout and
//! stochastic depth are training-only). Batch norm at the network's own epsilon.

use super::graph::{ConvAttrs, GraphBuilder, Value};
use crate::error::Result;
use crate::nas::mbconv_model::plan::{self, BlockPlan};
use crate::nas::mbconv_model::MbConvConfig;

/// Adds the network's nodes reading `input`; returns the logits.
pub fn build(g: &mut GraphBuilder, cfg: &MbConvConfig, input: &str) -> Result<Value> {
    let (blocks, _, _) = plan::blocks(&cfg.arch, cfg.width_mult, cfg.depth_mult)?;
    let eps = cfg.bn_eps;
    let mut h = conv_bn(g, input, "features.0", ConvAttrs::plain(2, 1), true, eps)?;
    for p in &blocks {
        h = block(g, &h, p, eps)?;
    }
    let head = format!("features.{}", plan::B0_STAGES.len() + 1);
    let h = conv_bn(g, &h, &head, ConvAttrs::plain(1, 0), true, eps)?;
    g.pool_and_classify(&h, "classifier.1", super::OUTPUT)
}

/// A conv at `{scope}.0` and its BN at `{scope}.1` (torchvision's `Conv2dNormActivation`),
/// then swish or not.
fn conv_bn(
    g: &mut GraphBuilder,
    x: &str,
    scope: &str,
    spec: ConvAttrs,
    swish: bool,
    eps: f64,
) -> Result<Value> {
    let h = g.conv(x, &format!("{scope}.0"), spec)?;
    let h = g.batch_norm_eps(&h, &format!("{scope}.1"), eps)?;
    Ok(if swish {
        g.swish(&h, &format!("{scope}.swish"))
    } else {
        h
    })
}

/// One MBConv block; its parts are numbered as the network numbers them (no expand conv
/// shifts the rest down by one).
fn block(g: &mut GraphBuilder, x: &str, p: &BlockPlan, eps: f64) -> Result<Value> {
    let s = format!("features.{}.{}.block", p.stage + 1, p.index);
    let mut part = 0;
    let mut h = x.to_string();
    if p.expanded != p.in_channels {
        h = conv_bn(g, &h, &format!("{s}.0"), ConvAttrs::plain(1, 0), true, eps)?;
        part += 1;
    }
    let depthwise = ConvAttrs {
        stride: p.stride,
        padding: (p.kernel - 1) / 2,
        dilation: 1,
        groups: p.expanded,
    };
    h = conv_bn(g, &h, &format!("{s}.{part}"), depthwise, true, eps)?;
    part += 1;
    if p.se_channels.is_some() {
        let se = format!("{s}.{part}");
        let pooled = g.global_avg_pool(&h, &format!("{se}.pool"));
        let a = g.conv_with_bias(&pooled, &format!("{se}.fc1"), ConvAttrs::plain(1, 0))?;
        let a = g.swish(&a, &format!("{se}.swish"));
        let b = g.conv_with_bias(&a, &format!("{se}.fc2"), ConvAttrs::plain(1, 0))?;
        let gate = g.sigmoid(&b, &format!("{se}.gate"));
        h = g.mul(&h, &gate, &format!("{se}.scale"));
        part += 1;
    }
    h = conv_bn(
        g,
        &h,
        &format!("{s}.{part}"),
        ConvAttrs::plain(1, 0),
        false,
        eps,
    )?;
    Ok(if p.residual() {
        g.add(&h, x, &format!("{s}.out"))
    } else {
        h
    })
}
