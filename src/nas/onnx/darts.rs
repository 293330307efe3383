//! The DARTS evaluation network (`eval_model`) as an ONNX inference graph: the eval-mode
//! forward of `EvalNetwork` written node for node over its `state_dict` (PyTorch DARTS'
//! names). No auxiliary head and no drop-path (both exist only in training); every batch norm
//! reads its running statistics. The ReLU nasrs fuses into a conv (`relu_input`) is a Relu
//! node here, shared by every op that reads the same state.

use super::graph::{ConvAttrs, GraphBuilder, Value};
use crate::error::Result;
use crate::nas::eval_model::EvalConfig;
use crate::nas::genotype::Primitive;

/// Adds the network's nodes reading `input`; returns the logits.
pub fn build(g: &mut GraphBuilder, cfg: &EvalConfig, input: &str) -> Result<Value> {
    let h = g.conv(input, "stem.0", ConvAttrs::plain(1, 1))?;
    let stem = g.batch_norm(&h, "stem.1")?;
    let (mut s0, mut s1) = (stem.clone(), stem);
    // Channels are the weights' own; only the cell kinds matter here.
    let mut reduction_prev = false;
    for i in 0..cfg.layers {
        let reduction = cfg.is_reduction(i);
        let out = cell(g, cfg, i, reduction, reduction_prev, &s0, &s1)?;
        (s0, s1) = (s1, out);
        reduction_prev = reduction;
    }
    g.pool_and_classify(&s1, "classifier", super::OUTPUT)
}

/// Cell `i`: its two preprocessed inputs, each node the sum of its (one or two) non-`none`
/// ops, the concatenation of the states its genotype names.
fn cell(
    g: &mut GraphBuilder,
    cfg: &EvalConfig,
    i: usize,
    reduction: bool,
    reduction_prev: bool,
    s0: &str,
    s1: &str,
) -> Result<Value> {
    let p = format!("cells.{i}");
    let h0 = if reduction_prev {
        factorized_reduce(g, s0, &format!("{p}.preprocess0"))?
    } else {
        relu_conv_bn(g, s0, &format!("{p}.preprocess0"), 1)?
    };
    let h1 = relu_conv_bn(g, s1, &format!("{p}.preprocess1"), 1)?;
    let (gene, concat) = if reduction {
        (&cfg.genotype.reduce, &cfg.genotype.reduce_concat)
    } else {
        (&cfg.genotype.normal, &cfg.genotype.normal_concat)
    };
    let mut states = vec![h0, h1];
    for node in 0..gene.len() / 2 {
        let mut terms = Vec::with_capacity(2);
        for k in [2 * node, 2 * node + 1] {
            let (op, input) = gene[k];
            let stride = if reduction && input < 2 { 2 } else { 1 };
            let x = states[input].clone();
            if let Some(y) = edge(g, op, &x, stride, &format!("{p}._ops.{k}"))? {
                terms.push(y);
            }
        }
        // validate_genotype (run when the network was loaded) refuses two `none` ops.
        states.push(g.sum(&terms, &format!("{p}.node{}", node + 2)));
    }
    let outs: Vec<Value> = concat.iter().map(|&j| states[j].clone()).collect();
    Ok(g.concat(&outs, &format!("{p}.out")))
}

/// One edge op (`modules::EdgeOp` in eval mode); None for `none`, which adds nothing.
fn edge(
    g: &mut GraphBuilder,
    op: Primitive,
    x: &str,
    stride: usize,
    p: &str,
) -> Result<Option<Value>> {
    Ok(Some(match op {
        Primitive::None => return Ok(None),
        Primitive::MaxPool3x3 => g.pool(x, true, 3, stride, 1, &format!("{p}.max_pool")),
        Primitive::AvgPool3x3 => g.pool(x, false, 3, stride, 1, &format!("{p}.avg_pool")),
        Primitive::SkipConnect if stride == 1 => x.to_string(),
        Primitive::SkipConnect => factorized_reduce(g, x, p)?,
        Primitive::SepConv3x3 | Primitive::SepConv5x5 => {
            let k = if op == Primitive::SepConv3x3 { 3 } else { 5 };
            let h = dil_conv(g, x, &format!("{p}.op"), 1, stride, k / 2, 1)?;
            dil_conv(g, &h, &format!("{p}.op"), 5, 1, k / 2, 1)?
        }
        Primitive::DilConv3x3 | Primitive::DilConv5x5 => {
            let k = if op == Primitive::DilConv3x3 { 3 } else { 5 };
            dil_conv(g, x, &format!("{p}.op"), 1, stride, k - 1, 2)?
        }
    }))
}

/// `ReLUConvBN` (`{p}.op.1` the conv, `{p}.op.2` the BN); the kernel is the weight's.
pub fn relu_conv_bn(g: &mut GraphBuilder, x: &str, p: &str, stride: usize) -> Result<Value> {
    let r = g.relu_of(x);
    let k = g.kernel_of(&format!("{p}.op.1.weight"))?;
    let h = g.conv(&r, &format!("{p}.op.1"), ConvAttrs::plain(stride, k / 2))?;
    g.batch_norm(&h, &format!("{p}.op.2"))
}

/// ReLU, then 1x1 stride-2 convs of x and of `x[:, :, 1:, 1:]`, concatenated, then BN.
fn factorized_reduce(g: &mut GraphBuilder, x: &str, p: &str) -> Result<Value> {
    let r = g.relu_of(x);
    let a = g.conv(&r, &format!("{p}.conv_1"), ConvAttrs::plain(2, 0))?;
    let shifted = g.shift_crop(&r, &format!("{p}.shifted"));
    let b = g.conv(&shifted, &format!("{p}.conv_2"), ConvAttrs::plain(2, 0))?;
    let cat = g.concat(&[a, b], &format!("{p}.cat"));
    g.batch_norm(&cat, &format!("{p}.bn"))
}

/// DARTS' `DilConv` at `{p}.{first}`..: ReLU, depthwise k x k (stride, padding, dilation),
/// pointwise 1x1, BN (a SepConv is two of these, at 1 and 5).
fn dil_conv(
    g: &mut GraphBuilder,
    x: &str,
    p: &str,
    first: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Value> {
    let r = g.relu_of(x);
    let dw = format!("{p}.{first}");
    let groups = g.out_channels_of(&format!("{dw}.weight"))?;
    let attrs = ConvAttrs {
        stride,
        padding,
        dilation,
        groups,
    };
    let h = g.conv(&r, &dw, attrs)?;
    let h = g.conv(&h, &format!("{p}.{}", first + 1), ConvAttrs::plain(1, 0))?;
    g.batch_norm(&h, &format!("{p}.{}", first + 2))
}
