//! The DARTS evaluation network (`NetworkCIFAR` of the DARTS code), built from a genotype:
//! a 3x3 stem to 3C channels + affine BN, `L` cells (reduction cells at L/3 and 2L/3, where
//! the channels double), an optional auxiliary head after cell 2L/3, global average pooling
//! and a linear classifier. Each cell edge is the genotype's chosen op (affine BN, pools
//! without BN); node i sums its two ops applied to the states the genotype names, with
//! drop-path on every non-identity op while training.
//!
//! Parameter and buffer names are those of PyTorch DARTS' `state_dict`
//! (`cells.3._ops.2.op.1.weight`, `auxiliary_head.features.2.weight`), so `state_dict` /
//! `load_state_dict` exchange checkpoints with PyTorch, `num_batches_tracked` included.
//!
//! This file owns the configuration and the network (building it, its forward); the other
//! jobs are beside it: `aux_head.rs` the auxiliary head, `genotype_spec.rs` which genotype a
//! `--genotype` spec names and whether a network can be built from it, `state_dict.rs` the
//! exchange of weights with PyTorch and the checks of a file against the network it claims.

mod aux_head;
mod genotype_spec;
mod state_dict;

pub use aux_head::{AUX_MID, AUX_OUT, AUX_PREFIX};
pub use genotype_spec::{resolve_genotype, validate_genotype};
pub use state_dict::{check_against_tensors, infer_config};

use super::genotype::Genotype;
use super::modules::{input_dims, BatchNorm, Builder, CellInputs, Conv, Ctx, EdgeOp, Linear};
use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::Conv2dSpec;
use aux_head::AuxHead;
use serde::{Deserialize, Serialize};

/// The DARTS code's stem width factor (stem = 3C channels).
pub const STEM_MULTIPLIER: usize = 3;

/// Everything that determines the evaluation network's shape (kept in checkpoint metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub genotype: Genotype,
    /// Initial channels C.
    pub channels: usize,
    /// Cells L.
    pub layers: usize,
    pub classes: usize,
    pub in_channels: usize,
    pub auxiliary: bool,
}

impl EvalConfig {
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("--channels", self.channels),
            ("--layers", self.layers),
            ("classes", self.classes),
            ("input channels", self.in_channels),
        ] {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        validate_genotype(&self.genotype)
    }

    /// Reduction cells sit at L/3 and 2L/3 (as in the search network).
    pub fn is_reduction(&self, cell: usize) -> bool {
        super::sizing::reduction_cells(self.layers).contains(&cell)
    }

    /// The cell whose output feeds the auxiliary head.
    pub fn aux_cell(&self) -> usize {
        let r = super::sizing::reduction_cells(self.layers);
        r.last().copied().unwrap_or(0)
    }

    /// Checks that `h x w` images pass every reduction cell and fit the auxiliary head,
    /// which (as in DARTS) assumes 8x8 features there: a 5x5/3 pool to 2x2, then a 2x2 conv
    /// to 1x1.
    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        super::sizing::check_reductions(self.layers, h, w)?;
        if !self.auxiliary {
            return Ok(());
        }
        let (mut fh, mut fw) = (h, w);
        let aux = self.aux_cell();
        for _ in super::sizing::reduction_cells(self.layers)
            .into_iter()
            .filter(|&r| r <= aux)
        {
            (fh, fw) = (fh.div_ceil(2), fw.div_ceil(2));
        }
        let fits = |s: usize| (8..=10).contains(&s);
        if !fits(fh) || !fits(fw) {
            return Err(Error::invalid(
                "--auxiliary",
                format!(
                    "the auxiliary head needs 8x8 features after cell {} (32x32 images), but \
                     {h}x{w} images give {fh}x{fw}; train without --auxiliary",
                    self.aux_cell()
                ),
            ));
        }
        Ok(())
    }
}

struct EvalCell {
    inputs: CellInputs,
    /// ops[k] reads state indices[k]; node i sums ops 2i and 2i+1.
    ops: Vec<EdgeOp>,
    indices: Vec<usize>,
    concat: Vec<usize>,
}

fn conv_spec(c_in: usize, c_out: usize, kernel: usize, padding: usize) -> Conv2dSpec {
    Conv2dSpec::new(c_in, c_out, kernel).padding(padding)
}

/// The evaluation network with its weights and BN statistics.
pub struct EvalNetwork<B: Backend> {
    pub config: EvalConfig,
    pub weights: ParamStore<B>,
    /// BN running means and variances.
    pub buffers: ParamStore<B>,
    /// Training-mode forwards so far: PyTorch's `num_batches_tracked`, the same for every BN
    /// because every BN (auxiliary head included) runs in each training forward.
    pub bn_batches: u64,
    stem_conv: Conv,
    stem_bn: BatchNorm,
    cells: Vec<EvalCell>,
    aux: Option<AuxHead>,
    classifier: Linear,
}

impl<B: Backend> EvalNetwork<B> {
    /// Builds the network with PyTorch's default initialisation, drawn from `seed`.
    pub fn new(backend: &B, config: EvalConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::fork(seed, "weights");
        let (mut weights, mut buffers) = (ParamStore::new(), ParamStore::new());
        let mut b = Builder::new(backend, &mut weights, &mut buffers, &mut rng);
        let c = config.channels;
        let c_stem = STEM_MULTIPLIER * c;
        let (stem_conv, stem_bn) = b.scope("stem", |b| {
            Ok((
                b.scope(0, |b| b.conv(conv_spec(config.in_channels, c_stem, 3, 1)))?,
                b.scope(1, |b| b.batch_norm(c_stem, true))?,
            ))
        })?;
        let (mut c_pp, mut c_p, mut c_cur) = (c_stem, c_stem, c);
        let mut reduction_prev = false;
        let mut cells = Vec::with_capacity(config.layers);
        let mut c_aux = c_p;
        for i in 0..config.layers {
            let reduction = config.is_reduction(i);
            if reduction {
                c_cur *= 2;
            }
            let (gene, concat) = if reduction {
                (&config.genotype.reduce, &config.genotype.reduce_concat)
            } else {
                (&config.genotype.normal, &config.genotype.normal_concat)
            };
            let cell = b.scope("cells", |b| {
                b.scope(i, |b| {
                    let inputs = CellInputs::new(b, c_pp, c_p, c_cur, reduction_prev, true)?;
                    let ops = b.scope("_ops", |b| {
                        gene.iter()
                            .enumerate()
                            .map(|(k, &(p, input))| {
                                let stride = if reduction && input < 2 { 2 } else { 1 };
                                b.scope(k, |b| EdgeOp::new(b, p, c_cur, stride, true, false))
                            })
                            .collect::<Result<Vec<_>>>()
                    })?;
                    Ok(EvalCell {
                        inputs,
                        ops,
                        indices: gene.iter().map(|&(_, j)| j).collect(),
                        concat: concat.clone(),
                    })
                })
            })?;
            c_pp = c_p;
            c_p = cell.concat.len() * c_cur;
            cells.push(cell);
            reduction_prev = reduction;
            if i == config.aux_cell() {
                c_aux = c_p;
            }
        }
        let aux = if config.auxiliary {
            Some(AuxHead::new(&mut b, c_aux, config.classes)?)
        } else {
            None
        };
        let classifier = b.scope("classifier", |b| b.linear(c_p, config.classes))?;
        Ok(EvalNetwork {
            config,
            weights,
            buffers,
            bn_batches: 0,
            stem_conv,
            stem_bn,
            cells,
            aux,
            classifier,
        })
    }

    /// Weights as the DARTS paper counts them: every trainable parameter but the auxiliary
    /// head's (BN running statistics are buffers, not counted).
    pub fn num_weights(&self) -> usize {
        self.weights
            .shapes()
            .filter(|(n, _)| !n.starts_with(AUX_PREFIX))
            .map(|(_, s)| s.numel())
            .sum()
    }

    /// Records the forward pass of images `x`: the logits and, in training mode with an
    /// auxiliary head, the auxiliary logits. Drop-path (probability `drop_prob`, masks from
    /// `rng`) applies in training mode only. A training-mode forward that updates the running
    /// statistics counts one batch in `bn_batches`.
    pub fn run(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: super::Mode,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<(Var, Option<Var>)> {
        if !(0.0..1.0).contains(&drop_prob) {
            return Err(Error::invalid(
                "--drop-path",
                format!("{drop_prob} is not in [0, 1)"),
            ));
        }
        // The buffers are taken out for the call so the network can be borrowed immutably.
        let mut buffers = std::mem::take(&mut self.buffers);
        let arch = ParamStore::new();
        let result = {
            let mut cx = Ctx {
                tape,
                weights: &self.weights,
                buffers: &mut buffers,
                arch: &arch,
                mode,
            };
            self.forward(&mut cx, x, drop_prob, rng)
        };
        self.buffers = buffers;
        if result.is_ok() && mode.train && mode.update_running {
            self.bn_batches += 1;
        }
        result
    }

    fn forward(
        &self,
        cx: &mut Ctx<B>,
        x: Var,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<(Var, Option<Var>)> {
        input_dims(cx.tape, x, self.config.in_channels, "network input")?;
        cx.tape.backend().annotate("stem");
        let h = self.stem_conv.forward(cx, x)?;
        let stem = self.stem_bn.forward(cx, h)?;
        let (mut s0, mut s1) = (stem, stem);
        let drop = if cx.mode.train && drop_prob > 0.0 {
            Some(1.0 - drop_prob)
        } else {
            None
        };
        let mut aux_logits = None;
        for (i, cell) in self.cells.iter().enumerate() {
            cx.tape.backend().annotate(&format!("cells.{i}"));
            let out = Self::cell_forward(cx, cell, s0, s1, drop, rng)?;
            s0 = s1;
            s1 = out;
            if i == self.config.aux_cell() && cx.mode.train {
                if let Some(aux) = &self.aux {
                    cx.tape.backend().annotate("auxiliary_head");
                    aux_logits = Some(aux.forward(cx, s1)?);
                    // PyTorch's head starts with ReLU(inplace=True), which rectifies s1 for
                    // everything after it too. Later cells start with a ReLU anyway; only
                    // the global pooling (when this is the last cell) sees the difference.
                    s1 = cx.tape.relu(s1)?;
                }
            }
        }
        cx.tape.backend().annotate("classifier");
        let pooled = cx.tape.global_avg_pool(s1)?;
        Ok((self.classifier.forward(cx, pooled)?, aux_logits))
    }

    fn cell_forward(
        cx: &mut Ctx<B>,
        cell: &EvalCell,
        s0: Var,
        s1: Var,
        keep_prob: Option<f64>,
        rng: &mut Rng,
    ) -> Result<Var> {
        let (h0, h1) = cell.inputs.forward(cx, s0, s1)?;
        let mut states = vec![h0, h1];
        for node in 0..cell.ops.len() / 2 {
            // A `none` op adds zero (drop-path of zero is zero): the node is the other op.
            let mut pair = Vec::with_capacity(2);
            for k in [2 * node, 2 * node + 1] {
                let op = &cell.ops[k];
                let Some(mut h) = op.forward(cx, states[cell.indices[k]])? else {
                    continue;
                };
                if let Some(keep) = keep_prob {
                    if !matches!(op, EdgeOp::Identity) {
                        h = cx.tape.drop_path(h, keep, rng)?;
                    }
                }
                pair.push(h);
            }
            states.push(match pair[..] {
                [a, b] => cx.tape.add(a, b)?,
                [a] => a,
                // validate_genotype rejects a node of two `none` ops.
                _ => {
                    return Err(Error::invalid(
                        "genotype",
                        format!("node {node} of a cell has two none ops"),
                    ))
                }
            });
        }
        let outs: Vec<Var> = cell.concat.iter().map(|&j| states[j]).collect();
        cx.tape.concat_channels(&outs)
    }
}
