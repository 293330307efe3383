//! The NAS-Bench-201 network (`nb201_model`) as an ONNX inference graph: the eval-mode
//! forward of `Nb201Network` written node for node over its `state_dict` (NB201's names).
//! A cell node that only `none` edges reach is zero, as in the nasrs forward: it adds
//! nothing to a sum, and a conv that reads it reads zeros (`ConstantOfShape`), whose BN
//! turns them into its shift; a cell whose output node is zero outputs zeros.

use super::darts::relu_conv_bn;
use super::graph::{ConvAttrs, GraphBuilder, Value};
use crate::error::Result;
use crate::nas::nb201_model::Nb201Config;
use crate::nas::space::nb201::{Nb201Op, EDGES};

/// Adds the network's nodes reading `input`; returns the logits.
pub fn build(g: &mut GraphBuilder, cfg: &Nb201Config, input: &str) -> Result<Value> {
    let h = g.conv(input, "stem.0", ConvAttrs::plain(1, 1))?;
    let mut h = g.batch_norm(&h, "stem.1")?;
    let blocks = cfg.res_block_indices();
    for i in 0..3 * cfg.cells_per_stage + 2 {
        h = if blocks.contains(&i) {
            res_block(g, &h, &format!("cells.{i}"))?
        } else {
            cell(g, cfg, &h, &format!("cells.{i}"))?
        };
    }
    let h = g.batch_norm(&h, "lastact.0")?;
    let h = g.relu_of(&h);
    g.pool_and_classify(&h, "classifier", super::OUTPUT)
}

/// One cell: node j sums op_{i->j}(node i) over i < j; node 3 is the output.
fn cell(g: &mut GraphBuilder, cfg: &Nb201Config, x: &str, p: &str) -> Result<Value> {
    // None: a node known to be zero.
    let mut nodes: Vec<Option<Value>> = vec![Some(x.to_string())];
    let mut zeros: Option<Value> = None;
    for to in 1..4 {
        let mut terms = Vec::with_capacity(to);
        for (e, &(_, from)) in EDGES.iter().enumerate().filter(|(_, e)| e.0 == to) {
            let op = cfg.arch.0[e];
            let edge = format!("{p}.edges.{to}<-{from}");
            let y = match (op, nodes[from].clone()) {
                (Nb201Op::None, _) | (Nb201Op::SkipConnect | Nb201Op::AvgPool3x3, None) => continue,
                (Nb201Op::SkipConnect, Some(v)) => v,
                (Nb201Op::AvgPool3x3, Some(v)) => {
                    g.pool(&v, false, 3, 1, 1, &format!("{edge}.avg_pool"))
                }
                (Nb201Op::NorConv1x1 | Nb201Op::NorConv3x3, v) => {
                    let v = match v {
                        Some(v) => v,
                        None => zeros_of(g, x, p, &mut zeros),
                    };
                    relu_conv_bn(g, &v, &edge, 1)?
                }
            };
            terms.push(y);
        }
        nodes.push((!terms.is_empty()).then(|| g.sum(&terms, &format!("{p}.node{to}"))));
    }
    Ok(match nodes.pop().flatten() {
        Some(out) => out,
        None => zeros_of(g, x, p, &mut zeros),
    })
}

/// Zeros of `x`'s shape, made once per cell.
fn zeros_of(g: &mut GraphBuilder, x: &str, p: &str, cache: &mut Option<Value>) -> Value {
    cache
        .get_or_insert_with(|| g.zeros_like(x, &format!("{p}.zeros")))
        .clone()
}

/// NB201's `ResNetBasicblock` at stride 2: ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN, plus
/// the shortcut: 2x2 average pool then a 1x1 conv of `x` itself (no ReLU).
fn res_block(g: &mut GraphBuilder, x: &str, p: &str) -> Result<Value> {
    let a = relu_conv_bn(g, x, &format!("{p}.conv_a"), 2)?;
    let main = relu_conv_bn(g, &a, &format!("{p}.conv_b"), 1)?;
    let pooled = g.pool(x, false, 2, 2, 0, &format!("{p}.downsample.0"));
    let shortcut = g.conv(
        &pooled,
        &format!("{p}.downsample.1"),
        ConvAttrs::plain(1, 0),
    )?;
    Ok(g.add(&shortcut, &main, &format!("{p}.out")))
}
