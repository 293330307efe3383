//! The NB201 cell and the residual block between stages.
//!
//! The cell: node 0 is the cell's input, node j sums op_{i->j}(node i) over i < j, node 3 is
//! the output; every op keeps the channels and the resolution. A `none` edge contributes
//! nothing, and a node whose edges are all `none` is zero: it is not materialised for
//! `skip_connect` or `avg_pool_3x3` (whose output would be zero too) but is for a conv, whose
//! BN turns zeros into its shift, as in PyTorch.

use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nas::modules::{Builder, Conv, Ctx, ReluConvBn};
use crate::nas::space::nb201::{Nb201Arch, Nb201Op, EDGES};
use crate::shape::{Conv2dSpec, Pool2dSpec};
use crate::tensor::Tensor;

/// `avg_pool_3x3`: stride 1, padding 1, padding not counted.
const CELL_POOL: Pool2dSpec = Pool2dSpec {
    kernel: 3,
    stride: 1,
    padding: 1,
};

/// The residual block's shortcut pool: 2x2, stride 2.
const SHORTCUT_POOL: Pool2dSpec = Pool2dSpec {
    kernel: 2,
    stride: 2,
    padding: 0,
};

/// One edge's operation.
enum EdgeOp {
    None,
    Skip,
    AvgPool,
    /// `nor_conv_1x1` / `nor_conv_3x3`: ReLU, conv, affine BN (`op.1`, `op.2`).
    Conv(ReluConvBn),
}

/// Which operations the edges of a cell hold.
#[derive(Clone, Copy)]
pub(super) enum CellOps<'a> {
    /// Each edge the one operation of this cell (a network), named `edges.j<-i.…`.
    Fixed(&'a Nb201Arch),
    /// Each edge all five operations (a supernet), named `edges.j<-i.{k}.…` with `k` the
    /// operation's index in [`Nb201Op::ALL`], as NB201's search cells name them.
    All,
}

pub(super) struct Nb201Cell {
    /// Per edge of [`EDGES`], the operations it holds.
    edges: Vec<Vec<(Nb201Op, EdgeOp)>>,
}

impl Nb201Cell {
    /// Builds the cell at `c` channels; edge `j<-i` is scoped `edges.j<-i` as in NB201.
    pub(super) fn new<B: Backend>(b: &mut Builder<B>, ops: CellOps, c: usize) -> Result<Self> {
        let edges = b.scope("edges", |b| {
            EDGES
                .iter()
                .enumerate()
                .map(|(e, &(to, from))| {
                    b.scope(format!("{to}<-{from}"), |b| match ops {
                        CellOps::Fixed(arch) => Ok(vec![(arch.0[e], edge_op(b, arch.0[e], c)?)]),
                        CellOps::All => Nb201Op::ALL
                            .iter()
                            .enumerate()
                            .map(|(k, &op)| Ok((op, b.scope(k, |b| edge_op(b, op, c))?)))
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Nb201Cell { edges })
    }

    /// The forward of the cell with the operations of `arch` (each must be one the cell
    /// holds on its edge).
    pub(super) fn forward<B: Backend>(
        &self,
        cx: &mut Ctx<B>,
        x: Var,
        arch: &Nb201Arch,
    ) -> Result<Var> {
        // The op each edge runs, found among those it holds.
        let mut ops = Vec::with_capacity(EDGES.len());
        for (e, held) in self.edges.iter().enumerate() {
            let want = arch.0[e];
            let op = held.iter().find(|(op, _)| *op == want).ok_or_else(|| {
                Error::invalid(
                    "architecture",
                    format!(
                        "edge {}<-{} runs {}, which this cell does not hold",
                        EDGES[e].0,
                        EDGES[e].1,
                        want.name()
                    ),
                )
            })?;
            ops.push(&op.1);
        }
        // None: a node known to be zero.
        let mut nodes: Vec<Option<Var>> = vec![Some(x)];
        let mut zeros: Option<Var> = None;
        for to in 1..4 {
            let mut terms = Vec::with_capacity(to);
            for (&op, &(_, from)) in ops.iter().zip(&EDGES).filter(|(_, e)| e.0 == to) {
                let input = nodes[from];
                let y = match (op, input) {
                    (EdgeOp::None, _) | (EdgeOp::Skip | EdgeOp::AvgPool, None) => continue,
                    (EdgeOp::Skip, Some(v)) => v,
                    (EdgeOp::AvgPool, Some(v)) => cx.tape.avg_pool2d(v, CELL_POOL)?,
                    (EdgeOp::Conv(m), Some(v)) => m.forward(cx, v)?,
                    (EdgeOp::Conv(m), None) => {
                        let z = Self::zeros_like(cx, x, &mut zeros)?;
                        m.forward(cx, z)?
                    }
                };
                terms.push(y);
            }
            nodes.push(match terms.len() {
                0 => None,
                _ => Some(cx.tape.sum(&terms)?),
            });
        }
        match nodes[3] {
            Some(out) => Ok(out),
            None => Self::zeros_like(cx, x, &mut zeros),
        }
    }

    /// A zero tensor of `x`'s shape on the tape, made once per forward of the cell.
    fn zeros_like<B: Backend>(cx: &mut Ctx<B>, x: Var, cache: &mut Option<Var>) -> Result<Var> {
        if let Some(z) = *cache {
            return Ok(z);
        }
        let shape = cx.tape.shape(x).clone();
        let t = Tensor::zeros(cx.tape.backend(), shape)?;
        let z = cx.tape.constant(t);
        *cache = Some(z);
        Ok(z)
    }
}

/// Builds one operation of an edge at `c` channels.
fn edge_op<B: Backend>(b: &mut Builder<B>, op: Nb201Op, c: usize) -> Result<EdgeOp> {
    Ok(match op {
        Nb201Op::None => EdgeOp::None,
        Nb201Op::SkipConnect => EdgeOp::Skip,
        Nb201Op::AvgPool3x3 => EdgeOp::AvgPool,
        Nb201Op::NorConv1x1 => EdgeOp::Conv(ReluConvBn::new(b, c, c, 1, 1, 0, true)?),
        Nb201Op::NorConv3x3 => EdgeOp::Conv(ReluConvBn::new(b, c, c, 3, 1, 1, true)?),
    })
}

/// NB201's `ResNetBasicblock` at stride 2: `conv_a` = ReLU-Conv3x3(stride 2)-BN, `conv_b` =
/// ReLU-Conv3x3-BN, shortcut `downsample` = AvgPool 2x2 then a 1x1 conv (no BN); the output
/// is the shortcut plus `conv_b(conv_a(x))`.
pub(super) struct ResBlock {
    conv_a: ReluConvBn,
    conv_b: ReluConvBn,
    downsample: Conv,
}

impl ResBlock {
    pub(super) fn new<B: Backend>(b: &mut Builder<B>, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(ResBlock {
            conv_a: b.scope("conv_a", |b| ReluConvBn::new(b, c_in, c_out, 3, 2, 1, true))?,
            conv_b: b.scope("conv_b", |b| {
                ReluConvBn::new(b, c_out, c_out, 3, 1, 1, true)
            })?,
            downsample: b.scope("downsample", |b| {
                b.scope(1, |b| {
                    b.conv(Conv2dSpec {
                        in_channels: c_in,
                        out_channels: c_out,
                        kernel: 1,
                        stride: 1,
                        padding: 0,
                        dilation: 1,
                        groups: 1,
                        relu_input: false,
                    })
                })
            })?,
        })
    }

    pub(super) fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let a = self.conv_a.forward(cx, x)?;
        let main = self.conv_b.forward(cx, a)?;
        let pooled = cx.tape.avg_pool2d(x, SHORTCUT_POOL)?;
        let shortcut = self.downsample.forward(cx, pooled)?;
        cx.tape.add(shortcut, main)
    }
}
