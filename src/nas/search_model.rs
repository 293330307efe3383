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

use super::genotype::{Genotype, Primitive};
use super::modules::{BatchNorm, Builder, CellInputs, Conv, Ctx, EdgeOp, Linear};
use crate::autograd::{ParamId, ParamStore, Var};
use crate::backend::softmax;
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::io::{HostTensor, HostTensorI64};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The checkpoint names of the alpha tables, as PyTorch DARTS calls its architecture
/// parameters: `[edges, ops]` each, the normal cell's then the reduction cell's.
pub const ALPHA_TABLES: [&str; 2] = ["alphas_normal", "alphas_reduce"];

/// The shape of the search network. Build it with named setters from the DARTS paper's
/// CIFAR-10 search network (C=16, 8 cells, 10 classes, 3 input channels, 4 nodes, all 8 ops):
///
/// ```
/// use nasrs::nas::{Primitive, SearchConfig};
/// let cfg = SearchConfig::default()
///     .channels(4)
///     .layers(5)
///     .classes(10)
///     .in_channels(1)
///     .nodes(2)
///     .ops([Primitive::None, Primitive::SkipConnect, Primitive::SepConv3x3]);
/// assert_eq!((cfg.steps, cfg.multiplier, cfg.edges()), (2, 2, 5));
/// assert_eq!(SearchConfig::default(), SearchConfig::darts(16, 8, 10, 3));
/// ```
///
/// The fields keep PyTorch DARTS' names (`steps`, `multiplier`); the command line's
/// `--nodes N` is [`SearchConfig::nodes`]: `steps = multiplier = N`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Initial channels C (`--channels`).
    pub channels: usize,
    /// Cells L (`--layers`).
    pub layers: usize,
    pub classes: usize,
    pub in_channels: usize,
    /// Intermediate nodes per cell (PyTorch DARTS' `steps`; `--nodes`).
    pub steps: usize,
    /// How many of the last nodes are concatenated into the cell output.
    pub multiplier: usize,
    pub stem_multiplier: usize,
    pub ops: Vec<Primitive>,
}

impl Default for SearchConfig {
    /// The DARTS paper's CIFAR-10 search network: `SearchConfig::darts(16, 8, 10, 3)`.
    fn default() -> Self {
        SearchConfig::darts(16, 8, 10, 3)
    }
}

impl SearchConfig {
    /// The DARTS paper's search network (4 nodes, multiplier 4, stem 3C, all 8 ops) with
    /// `channels` C, `layers` L, `classes` and `in_channels`; the same as
    /// `SearchConfig::default().channels(c).layers(l).classes(k).in_channels(i)`.
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

    /// Sets the initial channels C (`--channels`).
    pub fn channels(mut self, channels: usize) -> Self {
        self.channels = channels;
        self
    }

    /// Sets the number of cells L (`--layers`).
    pub fn layers(mut self, layers: usize) -> Self {
        self.layers = layers;
        self
    }

    /// Sets the number of classes (the classifier's outputs).
    pub fn classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }

    /// Sets the image channels the stem reads.
    pub fn in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }

    /// Sets the intermediate nodes per cell as `--nodes` does: `steps = multiplier = nodes`
    /// (every node is concatenated into the cell output, as in DARTS with 4 and 4).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.steps = nodes;
        self.multiplier = nodes;
        self
    }

    /// Intermediate nodes per cell (`steps`; `--nodes`).
    pub fn num_nodes(&self) -> usize {
        self.steps
    }

    /// Sets how many of the last nodes are concatenated into the cell output (after
    /// [`SearchConfig::nodes`], which sets it to all of them).
    pub fn multiplier(mut self, multiplier: usize) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the stem width factor (the stem has `stem_multiplier * C` channels).
    pub fn stem_multiplier(mut self, stem_multiplier: usize) -> Self {
        self.stem_multiplier = stem_multiplier;
        self
    }

    /// Sets the op set every edge mixes (`--ops`), in alpha column order.
    pub fn ops(mut self, ops: impl Into<Vec<Primitive>>) -> Self {
        self.ops = ops.into();
        self
    }

    /// Edges per cell (rows of an alpha table): 2 + 3 + ... + (steps + 1), 14 for 4 nodes.
    /// Edges per cell: node i has i + 2 inputs, so n(n + 3)/2 for n nodes (saturating: an
    /// absurd `--nodes` is refused by the sizing check, not looped over).
    pub fn edges(&self) -> usize {
        let n = self.steps;
        n.checked_mul(n.saturating_add(3))
            .map_or(usize::MAX, |v| v / 2)
    }

    /// Checks the configuration can build a network; the error names the flag at fault.
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
        super::sizing::reduction_cells(self.layers).contains(&cell)
    }

    /// Checks that `h x w` images pass every reduction cell.
    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        super::sizing::check_reductions(self.layers, h, w)
    }
}

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

    /// The ids in `arch` of the per-edge alpha rows of the normal (`reduce = false`) or
    /// reduction cell, in edge order (row e of the table is `arch.get(alpha_row_ids(r)[e])`).
    pub fn alpha_row_ids(&self, reduce: bool) -> &[ParamId] {
        if reduce {
            &self.alphas_reduce
        } else {
            &self.alphas_normal
        }
    }

    /// softmax(alpha) per edge, for the normal (`reduce = false`) or reduction cell.
    pub fn alpha_weights(&self, backend: &B, reduce: bool) -> Result<Vec<Vec<f64>>> {
        self.alpha_row_ids(reduce)
            .iter()
            .map(|&id| Ok(softmax(&self.arch.get(id).to_f64(backend)?)))
            .collect()
    }

    /// The raw alphas as an [edges, ops] table (as PyTorch's `alphas_normal`).
    pub fn alpha_table(&self, backend: &B, reduce: bool) -> Result<Tensor<B>> {
        let rows: Vec<&Tensor<B>> = self
            .alpha_row_ids(reduce)
            .iter()
            .map(|&id| self.arch.get(id))
            .collect();
        self.table_of(backend, &rows)
    }

    /// PyTorch's `model.alphas_normal`: the normal cell's raw alphas, [edges, ops].
    pub fn alphas_normal(&self, backend: &B) -> Result<Tensor<B>> {
        self.alpha_table(backend, false)
    }

    /// PyTorch's `model.alphas_reduce`: the reduction cell's raw alphas, [edges, ops].
    pub fn alphas_reduce(&self, backend: &B) -> Result<Tensor<B>> {
        self.alpha_table(backend, true)
    }

    /// Sets the normal (`reduce = false`) or reduction cell's alphas from an [edges, ops]
    /// table (PyTorch's view); a table of another shape is an error naming both shapes.
    /// The rows get new buffers (a captured DARTS step notices and captures again).
    pub fn set_alpha_table(&mut self, backend: &B, reduce: bool, table: &Tensor<B>) -> Result<()> {
        self.check_table(reduce, table.shape.dims())?;
        let exact = table.to_host(backend)?;
        let k = self.config.ops.len();
        for (e, id) in self.alpha_row_ids(reduce).to_vec().into_iter().enumerate() {
            let row = Tensor::from_host(backend, &exact[e * k..(e + 1) * k], [k])?;
            self.arch.set(id, row)?;
        }
        Ok(())
    }

    /// Sets `model.alphas_normal` from an [edges, ops] table (see [`Self::set_alpha_table`]).
    pub fn set_alphas_normal(&mut self, backend: &B, table: &Tensor<B>) -> Result<()> {
        self.set_alpha_table(backend, false, table)
    }

    /// Sets `model.alphas_reduce` from an [edges, ops] table (see [`Self::set_alpha_table`]).
    pub fn set_alphas_reduce(&mut self, backend: &B, table: &Tensor<B>) -> Result<()> {
        self.set_alpha_table(backend, true, table)
    }

    /// A gradient of the alphas (one tensor per `arch` row, in `arch` order, as
    /// `Darts::arch_gradient` and `Tape` gradients of `arch` give it) in PyTorch's view: the
    /// [edges, ops] table of the normal (`reduce = false`) or reduction cell, what
    /// `model.alphas_normal.grad` holds after PyTorch's backward.
    pub fn alpha_grad_table(
        &self,
        backend: &B,
        grads: &[Tensor<B>],
        reduce: bool,
    ) -> Result<Tensor<B>> {
        if grads.len() != self.arch.len() {
            return Err(Error::invalid(
                "alpha gradient",
                format!("{} tensors for {} alpha rows", grads.len(), self.arch.len()),
            ));
        }
        let rows: Vec<&Tensor<B>> = self
            .alpha_row_ids(reduce)
            .iter()
            .map(|&id| &grads[id.0])
            .collect();
        self.table_of(backend, &rows)
    }

    /// Per-edge rows stacked into an [edges, ops] table.
    fn table_of(&self, backend: &B, rows: &[&Tensor<B>]) -> Result<Tensor<B>> {
        let k = self.config.ops.len();
        let mut v = Vec::with_capacity(rows.len() * k);
        for row in rows {
            if row.shape.dims() != [k] {
                return Err(Error::shape(
                    "alpha table",
                    format!("a row of shape {} (expected [{k}])", row.shape),
                ));
            }
            v.extend(row.to_host(backend)?);
        }
        Tensor::from_host(backend, &v, Shape::new(&[rows.len(), k]))
    }

    fn check_table(&self, reduce: bool, shape: &[usize]) -> Result<()> {
        let want = [self.config.edges(), self.config.ops.len()];
        if shape != want {
            return Err(Error::shape(
                "alpha table",
                format!(
                    "{} is {shape:?}; this network's is {want:?} (edges, ops)",
                    ALPHA_TABLES[reduce as usize]
                ),
            ));
        }
        Ok(())
    }

    /// The PyTorch `state_dict`: weights and running statistics as f32 under PyTorch DARTS'
    /// names, the alphas as the two [edges, ops] tables `alphas_normal` and `alphas_reduce`
    /// (PyTorch's `arch_parameters()`; not the per-edge rows), and each BN's
    /// `num_batches_tracked` (= `bn_batches`) as an i64 scalar.
    pub fn state_dict(
        &self,
        backend: &B,
    ) -> Result<(
        BTreeMap<String, HostTensor>,
        BTreeMap<String, HostTensorI64>,
    )> {
        let mut floats = BTreeMap::new();
        self.weights.export(backend, "", &mut floats)?;
        self.buffers.export(backend, "", &mut floats)?;
        for (reduce, name) in [false, true].into_iter().zip(ALPHA_TABLES) {
            let table = self.alpha_table(backend, reduce)?;
            floats.insert(
                name.to_string(),
                HostTensor {
                    shape: table.shape.dims().to_vec(),
                    data: table.to_f32(backend)?,
                },
            );
        }
        let ints = self.buffers.bn_counters(self.bn_batches);
        Ok((floats, ints))
    }

    /// Loads a `state_dict` (as [`Self::state_dict`] writes it, a PyTorch DARTS search
    /// network's, or a `nasrs search` checkpoint) with `EvalNetwork::load_state_dict`'s
    /// rules: every weight and running statistic must be present with its shape, and
    /// nothing unknown may be, except `num_batches_tracked` (optional: older PyTorch has
    /// none; `bn_batches` becomes the largest found, else 0) and names starting with one of
    /// `ignore_prefixes` (a checkpoint's optimizer state: `optimizer.`, `arch_optimizer.`).
    ///
    /// The alphas are read from the tables `alphas_normal` / `alphas_reduce` ([edges, ops])
    /// or, for a cell without its table, from the per-edge rows `alphas_normal.{e}` (both
    /// are in search checkpoints; the table wins). A cell with neither keeps its alphas:
    /// PyTorch DARTS keeps them out of `model.state_dict()` (they are not registered
    /// parameters), so add them to the file or set them with [`Self::set_alpha_table`].
    /// Errors name `path`, the file the tensors came from.
    pub fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        let counters: Vec<String> = self.buffers.bn_counters(0).into_keys().collect();
        let known: BTreeSet<&str> = self
            .weights
            .names()
            .iter()
            .chain(self.buffers.names())
            .chain(self.arch.names())
            .chain(&counters)
            .map(|s| s.as_str())
            .chain(ALPHA_TABLES)
            .collect();
        let unexpected: Vec<&str> = tensors
            .keys()
            .map(|k| k.as_str())
            .filter(|k| !known.contains(k) && !ignore_prefixes.iter().any(|p| k.starts_with(p)))
            .collect();
        if !unexpected.is_empty() {
            return Err(Error::bad_file(
                path,
                format!(
                    "{} tensors the search network does not have (e.g. {}); is it the same \
                     --channels, --layers, --nodes and --ops?",
                    unexpected.len(),
                    unexpected[..unexpected.len().min(3)].join(", ")
                ),
            ));
        }
        let bad = |e: Error| Error::bad_file(path, e.to_string());
        for store in [&mut self.weights, &mut self.buffers] {
            store.import(backend, "", tensors, path)?;
        }
        let k = self.config.ops.len();
        for (reduce, name) in [false, true].into_iter().zip(ALPHA_TABLES) {
            let ids = self.alpha_row_ids(reduce).to_vec();
            if let Some(table) = tensors.get(name) {
                self.check_table(reduce, &table.shape).map_err(bad)?;
                if table.data.len() != ids.len() * k {
                    return Err(Error::bad_file(
                        path,
                        format!("{name} holds {} values for its shape", table.data.len()),
                    ));
                }
                for (e, id) in ids.into_iter().enumerate() {
                    let row = HostTensor {
                        shape: vec![k],
                        data: table.data[e * k..(e + 1) * k].to_vec(),
                    };
                    self.arch.set_host(backend, id, &row).map_err(bad)?;
                }
                continue;
            }
            let rows: Vec<Option<&HostTensor>> = ids
                .iter()
                .map(|&id| tensors.get(self.arch.name(id)))
                .collect();
            match rows.iter().position(|r| r.is_none()) {
                // Neither the table nor any row: the alphas stay as they are.
                Some(_) if rows.iter().all(|r| r.is_none()) => {}
                Some(e) => {
                    return Err(Error::bad_file(
                        path,
                        format!(
                            "missing tensor {} (and no {name} table)",
                            self.arch.name(ids[e])
                        ),
                    ))
                }
                None => {
                    for (id, row) in ids.into_iter().zip(rows.into_iter().flatten()) {
                        self.arch.set_host(backend, id, row).map_err(bad)?;
                    }
                }
            }
        }
        self.bn_batches = counters
            .iter()
            .filter_map(|c| tensors.get(c))
            .filter_map(|t| t.data.first())
            .map(|&v| v.max(0.0) as u64)
            .max()
            .unwrap_or(0);
        Ok(())
    }

    /// The genotype the current alphas derive (DARTS' `genotype()`: each node keeps its two
    /// strongest incoming edges, each edge its strongest op other than `none`).
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
