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
//! the alphas are stored one row per edge (`alphas_normal.3`) and exposed as 14 x 8 tables.

use super::genotype::{Genotype, Primitive};
use super::modules::{BatchNorm, Builder, CellInputs, Conv, Ctx, EdgeOp, Linear};
use crate::autograd::{ParamId, ParamStore, Var};
use crate::backend::cpu::softmax;
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    pub channels: usize,
    pub layers: usize,
    pub classes: usize,
    pub in_channels: usize,
    /// Intermediate nodes per cell.
    pub steps: usize,
    /// How many of the last nodes are concatenated into the cell output.
    pub multiplier: usize,
    pub stem_multiplier: usize,
    pub ops: Vec<Primitive>,
}

impl SearchConfig {
    /// The DARTS paper's CIFAR-10 search network (C=16, 8 cells, all 8 ops).
    pub fn darts(channels: usize, layers: usize, classes: usize, in_channels: usize) -> Self {
        SearchConfig {
            channels,
            layers,
            classes,
            in_channels,
            steps: 4,
            multiplier: 4,
            stem_multiplier: 3,
            ops: Primitive::ALL.to_vec(),
        }
    }

    pub fn edges(&self) -> usize {
        (0..self.steps).map(|i| i + 2).sum()
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--channels", self.channels),
            ("--layers", self.layers),
            ("classes", self.classes),
            ("input channels", self.in_channels),
            ("--nodes", self.steps),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        if self.multiplier == 0 || self.multiplier > self.steps {
            return Err(Error::invalid(
                "multiplier",
                format!("{} must be in 1..={}", self.multiplier, self.steps),
            ));
        }
        if self.ops.is_empty() {
            return Err(Error::invalid("--ops", "the op set is empty"));
        }
        if self.ops.iter().all(|&op| op == Primitive::None) {
            return Err(Error::invalid(
                "--ops",
                "'none' alone makes every edge zero (nothing to search); add at least one \
                 other op, e.g. --ops none,skip_connect,sep_conv_3x3",
            ));
        }
        Ok(())
    }

    /// Reduction cells sit at L/3 and 2L/3 (for L < 3 those may coincide with cell 0).
    pub fn is_reduction(&self, cell: usize) -> bool {
        cell == self.layers / 3 || cell == 2 * self.layers / 3
    }

    /// Checks that `h x w` images pass every reduction cell.
    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        super::sizing::check_reductions(self.layers, |i| self.is_reduction(i), h, w)
    }
}

struct SearchCell {
    reduction: bool,
    inputs: CellInputs,
    /// edges[e][k]: op k of edge e.
    edges: Vec<Vec<EdgeOp>>,
}

pub struct SearchNetwork<B: Backend> {
    pub config: SearchConfig,
    pub weights: ParamStore<B>,
    pub buffers: ParamStore<B>,
    /// Architecture parameters: `alphas_normal.{e}` then `alphas_reduce.{e}`, each [ops].
    pub arch: ParamStore<B>,
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
        let stem_spec = Conv2dSpec {
            in_channels: config.in_channels,
            out_channels: c_stem,
            kernel: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
            relu_input: false,
        };
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
            stem_conv,
            stem_bn,
            cells,
            classifier,
            alphas_normal,
            alphas_reduce,
        })
    }

    /// Records the forward pass of images `x` on `tape` with this network's own weights and
    /// buffers (or with `weights` instead, for DARTS' unrolled and perturbed copies).
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
        result
    }

    /// Logits [n, classes] for images x [n, in_channels, h, w].
    pub fn forward(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let d = cx.tape.shape(x).nchw("search network input")?;
        if d.c != self.config.in_channels {
            return Err(Error::shape(
                "search network input",
                format!(
                    "images {} have {} channels, the network expects {}",
                    d.shape(),
                    d.c,
                    self.config.in_channels
                ),
            ));
        }
        let h = self.stem_conv.forward(cx, x)?;
        let stem = self.stem_bn.forward(cx, h)?;
        let (mut s0, mut s1) = (stem, stem);
        for cell in &self.cells {
            let alphas = if cell.reduction {
                &self.alphas_reduce
            } else {
                &self.alphas_normal
            };
            let out = self.cell_forward(cx, cell, alphas, s0, s1)?;
            // The next cell reads (s1, out); all older values only backward.
            cx.tape.release_activations(&[s1, out])?;
            s0 = s1;
            s1 = out;
        }
        let pooled = cx.tape.global_avg_pool(s1)?;
        self.classifier.forward(cx, pooled)
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

    /// softmax(alpha) per edge, for the normal (`reduce = false`) or reduction cell.
    pub fn alpha_weights(&self, backend: &B, reduce: bool) -> Result<Vec<Vec<f64>>> {
        let ids = if reduce {
            &self.alphas_reduce
        } else {
            &self.alphas_normal
        };
        ids.iter()
            .map(|&id| Ok(softmax(&self.arch.get(id).to_f64(backend)?)))
            .collect()
    }

    /// The raw alphas as an [edges, ops] table (as PyTorch's `alphas_normal`).
    pub fn alpha_table(&self, backend: &B, reduce: bool) -> Result<Tensor<B>> {
        let ids = if reduce {
            &self.alphas_reduce
        } else {
            &self.alphas_normal
        };
        let mut v = Vec::new();
        for &id in ids {
            v.extend(self.arch.get(id).to_host(backend)?);
        }
        Tensor::from_host(backend, &v, Shape::new(&[ids.len(), self.config.ops.len()]))
    }

    pub fn genotype(&self, backend: &B) -> Result<Genotype> {
        Genotype::from_weights(
            &self.alpha_weights(backend, false)?,
            &self.alpha_weights(backend, true)?,
            &self.config.ops,
            self.config.steps,
            self.config.multiplier,
        )
    }
}
