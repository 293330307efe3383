//! The DARTS one-shot supernet (the search network of the DARTS paper): a 3x3 stem to
//! `stem_multiplier * C` channels + BN, `L` cells with reduction cells at L/3 and 2L/3
//! (channels double), global average pooling and a linear classifier. Every cell edge is a
//! MixedOp over the op set, weighted by `softmax(alpha)` through the fused `mixed_op`.
//!
//! With bf16 activations the forward releases what it no longer reads as it goes (after each
//! intermediate node and each cell: `Tape::release_activations`), so at most one cell's
//! working set is f32 at any time and everything older is kept in bf16 for backward.
//!
//! Parameter names follow PyTorch DARTS' `state_dict` (`cells.0._ops.3._ops.4.op.1.weight`);
//! the alphas are stored one row per edge (`alphas_normal.3`, what the optimizer and the tape
//! see) and exposed in PyTorch's view as `[edges, ops]` tables (`alphas_normal`,
//! `alphas_reduce`: [14, 8] for DARTS), to read and to set, with their gradients in the same
//! view ([`SearchNetwork::alpha_grad_table`]). [`SearchNetwork::state_dict`] /
//! [`SearchNetwork::load_state_dict`] exchange the weights, the BN running statistics, each
//! BN's `num_batches_tracked` and the two alpha tables with PyTorch.
//!
//! This file owns the network (building it, its forward); `config.rs` its shape
//! ([`SearchConfig`]), `alphas.rs` the alphas' views (tables, rows, gradients, the genotype
//! they derive), `state_dict.rs` the exchange with PyTorch.

mod alphas;
mod config;
mod path;
mod state_dict;

pub use alphas::ALPHA_TABLES;
pub use config::SearchConfig;

use super::modules::{input_dims, BatchNorm, Builder, CellInputs, Conv, Ctx, EdgeOp, Linear};
use crate::autograd::{ParamId, ParamStore, Var};
use crate::backend::{Backend, Element};
use crate::error::Result;
use crate::rng::Rng;
use crate::shape::Conv2dSpec;
use crate::tensor::Tensor;

/// How one cell is run: `(network, context, cell, s0, s1) -> output`.
type CellFn<'a, B> =
    dyn FnMut(&SearchNetwork<B>, &mut Ctx<B>, &SearchCell, Var, Var) -> Result<Var> + 'a;

struct SearchCell {
    reduction: bool,
    inputs: CellInputs,
    /// edges[e][k]: op k of edge e.
    edges: Vec<Vec<EdgeOp>>,
}

/// The DARTS supernet with its weights, BN statistics and alphas (see the module docs).
pub struct SearchNetwork<B: Backend> {
    pub config: SearchConfig,
    pub weights: ParamStore<B>,
    /// BN running means and variances.
    pub buffers: ParamStore<B>,
    /// Architecture parameters: `alphas_normal.{e}` then `alphas_reduce.{e}`, each `[ops]`.
    pub arch: ParamStore<B>,
    /// Forwards that updated the running statistics so far: PyTorch's `num_batches_tracked`,
    /// the same for every BN (every op of every edge runs in each forward). [`Self::run`]
    /// counts them; `Darts` counts its captured steps' too (one per weight step, plus the
    /// architecture step's forwards with `DartsHyper::arch_step_updates_bn`).
    pub bn_batches: u64,
    stem_conv: Conv,
    stem_bn: BatchNorm,
    cells: Vec<SearchCell>,
    classifier: Linear,
    alphas_normal: Vec<ParamId>,
    alphas_reduce: Vec<ParamId>,
}

impl<B: Backend> SearchNetwork<B> {
    /// Builds the supernet with PyTorch's default initialisation, drawn from `seed`.
    pub fn new(backend: &B, config: SearchConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::fork(seed, "weights");
        let (mut weights, mut buffers) = (ParamStore::new(), ParamStore::new());
        let c = config.channels;
        let mut b = Builder::new(backend, &mut weights, &mut buffers, &mut rng);
        let c_stem = config.stem_multiplier * c;
        let stem_spec = Conv2dSpec::new(config.in_channels, c_stem, 3).padding(1);
        let (stem_conv, stem_bn) = b.scope("stem", |b| {
            Ok((
                b.scope(0, |b| b.conv(stem_spec))?,
                b.scope(1, |b| b.batch_norm(c_stem, true))?,
            ))
        })?;
        let (mut c_pp, mut c_p, mut c_cur) = (c_stem, c_stem, c);
        let mut reduction_prev = false;
        let mut cells = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let reduction = config.is_reduction(i);
            if reduction {
                c_cur *= 2;
            }
            let cell = b.scope("cells", |b| {
                b.scope(i, |b| {
                    let inputs = CellInputs::new(b, c_pp, c_p, c_cur, reduction_prev, false)?;
                    let mut edges = Vec::new();
                    b.scope("_ops", |b| {
                        for node in 0..config.steps {
                            for j in 0..node + 2 {
                                let stride = if reduction && j < 2 { 2 } else { 1 };
                                let e = edges.len();
                                let ops = b.scope(e, |b| {
                                    b.scope("_ops", |b| {
                                        config
                                            .ops
                                            .iter()
                                            .enumerate()
                                            .map(|(k, &p)| {
                                                b.scope(k, |b| {
                                                    EdgeOp::new(b, p, c_cur, stride, false, true)
                                                })
                                            })
                                            .collect::<Result<Vec<_>>>()
                                    })
                                })?;
                                edges.push(ops);
                            }
                        }
                        Ok(())
                    })?;
                    Ok(SearchCell {
                        reduction,
                        inputs,
                        edges,
                    })
                })
            })?;
            cells.push(cell);
            reduction_prev = reduction;
            c_pp = c_p;
            c_p = config.multiplier * c_cur;
        }
        let classifier = b.scope("classifier", |b| b.linear(c_p, config.classes))?;

        // alphas = 1e-3 * N(0, 1), from their own stream so op-set changes don't shift weights.
        let mut arng = Rng::fork(seed, "alphas");
        let mut arch = ParamStore::new();
        let k = config.ops.len();
        let mut alpha_rows = |kind: &str, arch: &mut ParamStore<B>| -> Result<Vec<ParamId>> {
            (0..config.edges())
                .map(|e| {
                    let v: Vec<B::Elem> = (0..k)
                        .map(|_| B::Elem::from_f64(1e-3 * arng.normal()))
                        .collect();
                    Ok(arch.add(format!("{kind}.{e}"), Tensor::from_host(backend, &v, [k])?))
                })
                .collect()
        };
        let alphas_normal = alpha_rows("alphas_normal", &mut arch)?;
        let alphas_reduce = alpha_rows("alphas_reduce", &mut arch)?;
        Ok(SearchNetwork {
            config,
            weights,
            buffers,
            arch,
            bn_batches: 0,
            stem_conv,
            stem_bn,
            cells,
            classifier,
            alphas_normal,
            alphas_reduce,
        })
    }

    /// Records the forward pass of images `x` on `tape` with this network's own weights and
    /// buffers (or with `weights` instead, for DARTS' unrolled and perturbed copies). A
    /// training-mode forward that updates the running statistics counts one batch in
    /// `bn_batches`.
    pub fn run(
        &mut self,
        tape: &mut crate::autograd::Tape<B>,
        x: Var,
        mode: super::Mode,
        weights: Option<&ParamStore<B>>,
    ) -> Result<Var> {
        // The buffers are taken out for the call so the network can be borrowed immutably.
        let mut buffers = std::mem::take(&mut self.buffers);
        let result = {
            let mut cx = Ctx {
                tape,
                weights: weights.unwrap_or(&self.weights),
                buffers: &mut buffers,
                arch: &self.arch,
                mode,
            };
            self.forward(&mut cx, x)
        };
        self.buffers = buffers;
        if result.is_ok() && mode.train && mode.update_running {
            self.bn_batches += 1;
        }
        result
    }

    /// Logits [n, classes] for images x [n, in_channels, h, w].
    pub fn forward(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        self.forward_with(cx, x, &mut |net, cx, cell, s0, s1| {
            let alphas = if cell.reduction {
                &net.alphas_reduce
            } else {
                &net.alphas_normal
            };
            net.cell_forward(cx, cell, alphas, s0, s1)
        })
    }

    /// The network around its cells: stem, each cell through `cell_fn` (the MixedOp cell of
    /// the supernet, or one path's), global pooling and the classifier.
    fn forward_with(&self, cx: &mut Ctx<B>, x: Var, cell_fn: &mut CellFn<'_, B>) -> Result<Var> {
        self.check_input(cx, x)?;
        cx.tape.backend().annotate("stem");
        let h = self.stem_conv.forward(cx, x)?;
        let stem = self.stem_bn.forward(cx, h)?;
        let (mut s0, mut s1) = (stem, stem);
        for (i, cell) in self.cells.iter().enumerate() {
            cx.tape.backend().annotate(&format!("cells.{i}"));
            let out = cell_fn(self, cx, cell, s0, s1)?;
            // The next cell reads (s1, out); all older values only backward.
            cx.tape.release_activations(&[s1, out])?;
            s0 = s1;
            s1 = out;
        }
        cx.tape.backend().annotate("classifier");
        let pooled = cx.tape.global_avg_pool(s1)?;
        self.classifier.forward(cx, pooled)
    }

    /// Images must be NCHW with the network's input channels.
    fn check_input(&self, cx: &mut Ctx<B>, x: Var) -> Result<()> {
        input_dims(cx.tape, x, self.config.in_channels, "search network input")?;
        Ok(())
    }

    fn cell_forward(
        &self,
        cx: &mut Ctx<B>,
        cell: &SearchCell,
        alphas: &[ParamId],
        s0: Var,
        s1: Var,
    ) -> Result<Var> {
        let (h0, h1) = cell.inputs.forward(cx, s0, s1)?;
        let mut states = vec![h0, h1];
        let mut e = 0;
        for _ in 0..self.config.steps {
            let mut incoming = Vec::with_capacity(states.len());
            for &h in states.clone().iter() {
                let outs = cell.edges[e]
                    .iter()
                    .map(|op| op.forward(cx, h))
                    .collect::<Result<Vec<_>>>()?;
                let alpha = cx.alpha(alphas[e]);
                incoming.push(cx.tape.mixed_op(&outs, alpha)?);
                e += 1;
            }
            states.push(cx.tape.sum(&incoming)?);
            // The edges' op outputs are read again only by backward; the states by the next
            // nodes, and s1 by the next cell (as its s0).
            let mut keep = states.clone();
            keep.push(s1);
            cx.tape.release_activations(&keep)?;
        }
        cx.tape
            .concat_channels(&states[states.len() - self.config.multiplier..])
    }

    /// Number of weights (alphas and BN running statistics not counted), as DARTS prints it.
    pub fn num_weights(&self) -> usize {
        self.weights.numel()
    }
}
