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

use super::genotype::{Genotype, Primitive, PyGenotypes};
use super::genotypes_builtin;
use super::modules::{BatchNorm, Builder, CellInputs, Conv, Ctx, EdgeOp, Linear};
use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::io::{HostTensor, HostTensorI64};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Pool2dSpec};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The DARTS code's stem width factor (stem = 3C channels).
pub const STEM_MULTIPLIER: usize = 3;
/// Channels of the auxiliary head's 1x1 and 2x2 convolutions (fixed in `AuxiliaryHeadCIFAR`).
pub const AUX_MID: usize = 128;
pub const AUX_OUT: usize = 768;
/// Name prefix of the auxiliary head (not counted in the paper's parameter count).
pub const AUX_PREFIX: &str = "auxiliary_head.";

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

/// A genotype a network can be built from: pairs of ops per node, inputs that exist.
pub fn validate_genotype(g: &Genotype) -> Result<()> {
    for (cell, ops, concat) in [
        ("normal", &g.normal, &g.normal_concat),
        ("reduce", &g.reduce, &g.reduce_concat),
    ] {
        if ops.is_empty() || ops.len() % 2 != 0 {
            return Err(Error::invalid(
                "genotype",
                format!(
                    "the {cell} cell has {} ops; it needs two per node",
                    ops.len()
                ),
            ));
        }
        for (k, &(_, input)) in ops.iter().enumerate() {
            let node = k / 2;
            if k % 2 == 1 && ops[k - 1].0 == Primitive::None && ops[k].0 == Primitive::None {
                // Its state would be all zero, a tensor the network never materialises.
                return Err(Error::invalid(
                    "genotype",
                    format!("{cell} node {node} has two none ops"),
                ));
            }
            if input >= node + 2 {
                return Err(Error::invalid(
                    "genotype",
                    format!(
                        "{cell} op {k} reads state {input}, but node {node} can only read states 0..{}",
                        node + 1
                    ),
                ));
            }
        }
        let states = ops.len() / 2 + 2;
        if concat.is_empty() {
            return Err(Error::invalid(
                "genotype",
                format!("{cell}_concat is empty"),
            ));
        }
        if let Some(&c) = concat.iter().find(|&&c| c >= states) {
            return Err(Error::invalid(
                "genotype",
                format!(
                    "{cell}_concat names state {c}, but the cell has states 0..{}",
                    states - 1
                ),
            ));
        }
    }
    Ok(())
}

/// The genotype `--genotype SPEC` names, checked with `validate_genotype`. SPEC is one of:
/// - a built-in name, case-insensitive, `-` or `_`: `DARTS_V1`, `DARTS_V2` (alias `DARTS`),
///   `PC_DARTS` (`PC_DARTS_cifar`, `PCDARTS`), `PC_DARTS_IMAGE`, `PDARTS` (`P-DARTS`);
///   `NASNet` and `AmoebaNet` are refused with the op nasrs lacks;
/// - an inline Python form, `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2,
///   6), reduce=[...], reduce_concat=[2, 3, 4, 5])`, optionally as `NAME = Genotype(...)`;
/// - a file: JSON as `nasrs search` writes it (`.json`, or content starting with `{`), else
///   the Python form, alone or in a `genotypes.py`-like file that holds exactly one genotype;
/// - `FILE:NAME`: the genotype `NAME = Genotype(...)` (or alias `NAME = OTHER`) of such a file.
pub fn resolve_genotype(spec: &str) -> Result<Genotype> {
    if let Some(g) = Genotype::builtin(spec) {
        return Ok(g);
    }
    if let Some(why) = genotypes_builtin::unavailable(spec) {
        return Err(Error::invalid("--genotype", why));
    }
    let path = Path::new(spec);
    if path.is_file() {
        return genotype_file(path, None);
    }
    if is_inline_python(spec) {
        let g = Genotype::from_python(spec).map_err(|e| {
            let at = match e.at {
                Some((1, col)) if !spec.contains('\n') => format!("column {col}: "),
                Some((line, col)) => format!("line {line}, column {col}: "),
                None => String::new(),
            };
            Error::invalid(
                "--genotype",
                format!("{at}{} (in '{}')", e.message, clip(spec)),
            )
        })?;
        validate_genotype(&g).map_err(|e| Error::invalid("--genotype", detail(e)))?;
        return Ok(g);
    }
    if let Some((file, name)) = spec.rsplit_once(':') {
        if Path::new(file).is_file() && !name.is_empty() {
            return genotype_file(Path::new(file), Some(name));
        }
    }
    Err(Error::invalid(
        "--genotype",
        format!(
            "'{}' is neither a built-in genotype ({}), an inline Genotype(...), a file nor \
             FILE:NAME",
            clip(spec),
            genotypes_builtin::names().join(", ")
        ),
    ))
}

/// `Genotype(...)` or `NAME = Genotype(...)`.
fn is_inline_python(spec: &str) -> bool {
    let s = spec.trim_start();
    let after_name = s
        .split_once('=')
        .filter(|(name, _)| {
            let name = name.trim();
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map_or(s, |(_, rest)| rest.trim_start());
    s.starts_with("Genotype") || after_name.starts_with("Genotype")
}

/// A genotype file: JSON or the Python form; `name` picks one from a `genotypes.py`.
fn genotype_file(path: &Path, name: Option<&str>) -> Result<Genotype> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let g: Genotype = if json {
        if let Some(name) = name {
            return Err(Error::bad_file(
                path,
                format!(
                    "a JSON file holds one genotype; ':{name}' picks one from a Python \
                     genotypes.py-style file"
                ),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not a genotype: {e}")))?
    } else {
        PyGenotypes::parse(&text)
            .pick(name)
            .map_err(|e| match name {
                // A definition that does not parse; other errors name `n` already.
                Some(n) if e.at.is_some() => Error::bad_file(path, format!("genotype {n}: {e}")),
                _ => Error::bad_file(path, e.to_string()),
            })?
    };
    validate_genotype(&g).map_err(|e| match name {
        Some(n) => Error::bad_file(path, format!("genotype {n}: {}", detail(e))),
        None => Error::bad_file(path, detail(e)),
    })?;
    Ok(g)
}

/// The message of an `Invalid` error without its "invalid genotype:" prefix.
fn detail(e: Error) -> String {
    match e {
        Error::Invalid { detail, .. } => detail,
        e => e.to_string(),
    }
}

/// A spec shortened for an error message (an inline genotype is a long line).
fn clip(spec: &str) -> String {
    let s: String = spec.chars().take(60).collect();
    if s.len() < spec.len() {
        format!("{s}...")
    } else {
        s
    }
}

struct EvalCell {
    inputs: CellInputs,
    /// ops[k] reads state indices[k]; node i sums ops 2i and 2i+1.
    ops: Vec<EdgeOp>,
    indices: Vec<usize>,
    concat: Vec<usize>,
}

/// `AuxiliaryHeadCIFAR`: ReLU, AvgPool 5x5/3 (count_include_pad=False), conv 1x1 C->128,
/// BN, ReLU, conv 2x2 128->768, BN, ReLU, linear 768->classes.
struct AuxHead {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    classifier: Linear,
}

const AUX_POOL: Pool2dSpec = Pool2dSpec {
    kernel: 5,
    stride: 3,
    padding: 0,
};

impl AuxHead {
    fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let h = cx.tape.relu(x)?;
        let h = cx.tape.avg_pool2d(h, AUX_POOL)?;
        let h = self.conv1.forward(cx, h)?;
        let h = self.bn1.forward(cx, h)?;
        let h = self.conv2.forward(cx, h)?;
        let h = self.bn2.forward(cx, h)?;
        let h = cx.tape.relu(h)?;
        let d = cx.tape.shape(h).nchw("auxiliary head")?;
        if d.h != 1 || d.w != 1 {
            return Err(Error::shape(
                "auxiliary head",
                format!(
                    "features end at {}x{} instead of 1x1 (the head expects 8x8 inputs, i.e. 32x32 images)",
                    d.h, d.w
                ),
            ));
        }
        // Averaging a 1x1 plane is exactly the flatten `x.view(n, -1)`.
        let flat = cx.tape.global_avg_pool(h)?;
        self.classifier.forward(cx, flat)
    }
}

fn conv_spec(c_in: usize, c_out: usize, kernel: usize, padding: usize) -> Conv2dSpec {
    Conv2dSpec {
        in_channels: c_in,
        out_channels: c_out,
        kernel,
        stride: 1,
        padding,
        dilation: 1,
        groups: 1,
        relu_input: false,
    }
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
            Some(b.scope("auxiliary_head", |b| {
                let (conv1, bn1, conv2, bn2) = b.scope("features", |b| {
                    Ok((
                        b.scope(2, |b| b.conv(conv_spec(c_aux, AUX_MID, 1, 0)))?,
                        b.scope(3, |b| b.batch_norm(AUX_MID, true))?,
                        // The ReLU between bn1 and conv2 is fused into conv2.
                        b.scope(5, |b| {
                            b.conv(Conv2dSpec {
                                relu_input: true,
                                ..conv_spec(AUX_MID, AUX_OUT, 2, 0)
                            })
                        })?,
                        b.scope(6, |b| b.batch_norm(AUX_OUT, true))?,
                    ))
                })?;
                let classifier = b.scope("classifier", |b| b.linear(AUX_OUT, config.classes))?;
                Ok(AuxHead {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    classifier,
                })
            })?)
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
        let d = cx.tape.shape(x).nchw("network input")?;
        if d.c != self.config.in_channels {
            return Err(Error::shape(
                "network input",
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
        let drop = if cx.mode.train && drop_prob > 0.0 {
            Some(1.0 - drop_prob)
        } else {
            None
        };
        let mut aux_logits = None;
        for (i, cell) in self.cells.iter().enumerate() {
            let out = Self::cell_forward(cx, cell, s0, s1, drop, rng)?;
            s0 = s1;
            s1 = out;
            if i == self.config.aux_cell() && cx.mode.train {
                if let Some(aux) = &self.aux {
                    aux_logits = Some(aux.forward(cx, s1)?);
                    // PyTorch's head starts with ReLU(inplace=True), which rectifies s1 for
                    // everything after it too. Later cells start with a ReLU anyway; only
                    // the global pooling (when this is the last cell) sees the difference.
                    s1 = cx.tape.relu(s1)?;
                }
            }
        }
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

    /// The PyTorch `state_dict`: weights and running statistics as f32, and each BN's
    /// `num_batches_tracked` as an i64 scalar.
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
        let ints = self.buffers.bn_counters(self.bn_batches);
        Ok((floats, ints))
    }

    /// Loads a `state_dict` strictly: every weight and running statistic must be present
    /// with its shape, and nothing else may be (except `num_batches_tracked`, which may be
    /// missing as in checkpoints of older PyTorch, and names starting with one of
    /// `ignore_prefixes`, such as a checkpoint's optimizer state).
    pub fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        let expected: std::collections::BTreeSet<String> = self
            .weights
            .names()
            .iter()
            .chain(self.buffers.names())
            .cloned()
            .collect();
        let bn_counters: Vec<String> = self
            .buffers
            .names()
            .iter()
            .filter_map(|n| n.strip_suffix(".running_mean"))
            .map(|p| format!("{p}.num_batches_tracked"))
            .collect();
        let unexpected: Vec<&str> = tensors
            .keys()
            .map(|k| k.as_str())
            .filter(|k| {
                !expected.contains(*k)
                    && !bn_counters.iter().any(|c| c == k)
                    && !ignore_prefixes.iter().any(|p| k.starts_with(p))
            })
            .collect();
        if !unexpected.is_empty() {
            return Err(Error::bad_file(
                path,
                format!(
                    "{} tensors the network does not have (e.g. {}); is it the same genotype, \
                     --channels, --layers and --auxiliary?",
                    unexpected.len(),
                    unexpected[..unexpected.len().min(3)].join(", ")
                ),
            ));
        }
        for store in [&mut self.weights, &mut self.buffers] {
            for id in store.ids().collect::<Vec<_>>() {
                let name = store.name(id).to_string();
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| Error::bad_file(path, format!("missing tensor {name}")))?;
                let v: Vec<B::Elem> = t
                    .data
                    .iter()
                    .map(|&x| B::Elem::from_f64(x as f64))
                    .collect();
                let value = Tensor::from_host(backend, &v, t.shape.as_slice())
                    .map_err(|e| Error::bad_file(path, format!("{name}: {e}")))?;
                store
                    .set(id, value)
                    .map_err(|e| Error::bad_file(path, e.to_string()))?;
            }
        }
        self.bn_batches = bn_counters
            .iter()
            .filter_map(|c| tensors.get(c))
            .filter_map(|t| t.data.first())
            .map(|&v| v.max(0.0) as u64)
            .max()
            .unwrap_or(0);
        Ok(())
    }
}

/// Reconstructs the shape of an evaluation network from a bare PyTorch `state_dict` (no
/// nasrs metadata): C from the stem (3C outputs), L from the highest cell index, classes and
/// input channels from the classifier and stem weights, the auxiliary head from its keys.
/// The genotype cannot be read off the weights and must be given.
pub fn infer_config(
    tensors: &BTreeMap<String, HostTensor>,
    genotype: Genotype,
    path: &Path,
) -> Result<EvalConfig> {
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| {
            Error::bad_file(
                path,
                format!("no {name}: not a DARTS evaluation network state_dict"),
            )
        })
    };
    let stem = get("stem.0.weight")?;
    let cls = get("classifier.weight")?;
    if stem.shape.len() != 4 || stem.shape[0] % STEM_MULTIPLIER != 0 || cls.shape.len() != 2 {
        return Err(Error::bad_file(
            path,
            format!(
                "stem.0.weight {:?} / classifier.weight {:?} are not a DARTS network's",
                stem.shape, cls.shape
            ),
        ));
    }
    let layers = cell_indices(tensors)
        .last()
        .map(|m| m + 1)
        .ok_or_else(|| Error::bad_file(path, "no cells.* tensors"))?;
    Ok(EvalConfig {
        genotype,
        channels: stem.shape[0] / STEM_MULTIPLIER,
        layers,
        classes: cls.shape[0],
        in_channels: stem.shape[1],
        auxiliary: tensors.keys().any(|k| k.starts_with(AUX_PREFIX)),
    })
}

/// The distinct `N` of the `cells.N.*` tensor names, ascending.
fn cell_indices(tensors: &BTreeMap<String, HostTensor>) -> Vec<usize> {
    let set: std::collections::BTreeSet<usize> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("cells."))
        .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
        .collect();
    set.into_iter().collect()
}

/// Checks the network `cfg` describes against the tensors of the file it came from, before
/// anything is allocated for it: cells `0..L` and nothing past them, the stem's `3C` outputs
/// and input channels, the classifier's classes. A file whose metadata or names claim a
/// network its tensors do not hold (`cells.99999999.*`, C = 1e9) is refused here, naming it.
pub fn check_against_tensors(
    cfg: &EvalConfig,
    tensors: &BTreeMap<String, HostTensor>,
    path: &Path,
) -> Result<()> {
    let cells = cell_indices(tensors);
    if cells.len() != cfg.layers || cells.iter().enumerate().any(|(i, &c)| i != c) {
        let shown: Vec<String> = cells.iter().take(8).map(|c| c.to_string()).collect();
        return Err(Error::bad_file(
            path,
            format!(
                "describes {} cells but holds tensors for cells {}{} ({} in all)",
                cfg.layers,
                shown.join(", "),
                if cells.len() > 8 { ", ..." } else { "" },
                cells.len()
            ),
        ));
    }
    let stem_out = cfg.channels.checked_mul(STEM_MULTIPLIER);
    let expect = [
        ("stem.0.weight", 0, stem_out, "3 x channels"),
        ("stem.0.weight", 1, Some(cfg.in_channels), "input channels"),
        ("classifier.weight", 0, Some(cfg.classes), "classes"),
    ];
    for (name, axis, want, what) in expect {
        let got = tensors.get(name).and_then(|t| t.shape.get(axis).copied());
        if got.is_none() || got != want {
            return Err(Error::bad_file(
                path,
                format!(
                    "{name} {} does not match the {what} the file describes (C={}, {} input \
                     channels, {} classes)",
                    tensors
                        .get(name)
                        .map_or("is missing".to_string(), |t| format!(
                            "has shape {:?}",
                            t.shape
                        )),
                    cfg.channels,
                    cfg.in_channels,
                    cfg.classes
                ),
            ));
        }
    }
    Ok(())
}
