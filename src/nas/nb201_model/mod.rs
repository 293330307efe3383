//! The NAS-Bench-201 network (`TinyNetwork` of NAS-Bench-201), built from an NB201 cell
//! ([`Nb201Arch`]): a 3x3 stem to C channels + BN, three stages of N cells at C, 2C and 4C
//! channels with a ResNet basic block between stages (each halves the feature map), then BN,
//! ReLU, global average pooling and a linear classifier. NB201 trains it with C=16, N=5.
//!
//! Parameter and buffer names are NB201's (`stem.0.weight`, `cells.5.conv_a.op.1.weight`,
//! `cells.0.edges.2<-1.op.1.weight`, `lastact.0.running_mean`, `classifier.bias`), so weights
//! compare with the reference implementation's `state_dict`; `num_weights` is NB201's
//! parameter count (the table's `params_m`).
//!
//! This file owns the configuration and the network (building it, its forward, its
//! `state_dict`); `cell.rs` holds the cell and the residual block between stages.

mod cell;
mod supernet;

pub use supernet::{Nb201Supernet, Nb201SupernetConfig};

use super::classifier::StateDict;
use super::modules::{input_dims, BatchNorm, Builder, Conv, Ctx, Linear, Mode};
use super::space::nb201::Nb201Arch;
use crate::autograd::{load_state_dict_strict, ParamStore, StrictLoad, Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::HostTensor;
use crate::rng::Rng;
use crate::shape::Conv2dSpec;
use cell::{CellOps, Nb201Cell, ResBlock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything that determines the NB201 network's shape (kept in checkpoint metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nb201Config {
    /// The cell, written as its arch string in JSON.
    #[serde(with = "arch_string")]
    pub arch: Nb201Arch,
    /// Channels C of the first stage (2C and 4C in the others).
    pub channels: usize,
    /// Cells per stage N.
    pub cells_per_stage: usize,
    pub classes: usize,
    pub in_channels: usize,
}

/// The arch string form of [`Nb201Arch`] in JSON.
mod arch_string {
    use super::Nb201Arch;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(arch: &Nb201Arch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&arch.to_arch_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Nb201Arch, D::Error> {
        let text = String::deserialize(d)?;
        Nb201Arch::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Nb201Config {
    /// NB201's channels (C=16) and cells per stage (N=5).
    pub const CHANNELS: usize = 16;
    pub const CELLS_PER_STAGE: usize = 5;

    /// The network NB201 trains and tabulates (C=16, N=5) for `classes` classes of images
    /// with `in_channels` channels.
    pub fn new(arch: Nb201Arch, classes: usize, in_channels: usize) -> Self {
        Nb201Config {
            arch,
            channels: Self::CHANNELS,
            cells_per_stage: Self::CELLS_PER_STAGE,
            classes,
            in_channels,
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("--channels", self.channels),
            ("--layers", self.cells_per_stage),
            ("classes", self.classes),
            ("input channels", self.in_channels),
        ] {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        // The last stage has 4C channels; the cells 3N + 2 modules.
        if self.channels.checked_mul(4).is_none() {
            return Err(Error::invalid(
                "--channels",
                format!("{} overflows at 4C channels", self.channels),
            ));
        }
        if self
            .cells_per_stage
            .checked_mul(3)
            .and_then(|n| n.checked_add(2))
            .is_none()
        {
            return Err(Error::invalid(
                "--layers",
                format!("{} cells per stage overflow", self.cells_per_stage),
            ));
        }
        Ok(())
    }

    /// Checks that `h x w` images pass both residual blocks (see
    /// [`check_nb201_image_size`](super::sizing::check_nb201_image_size)).
    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        super::sizing::check_nb201_image_size(h, w)
    }

    /// Channels of each stage: C, 2C, 4C.
    pub fn stage_channels(&self) -> [usize; 3] {
        [self.channels, 2 * self.channels, 4 * self.channels]
    }

    /// Index (in `cells.{i}`) of the residual block opening stage 1 and stage 2: N, 2N + 1.
    pub fn res_block_indices(&self) -> [usize; 2] {
        let n = self.cells_per_stage;
        [n, 2 * n + 1]
    }
}

fn conv3x3(c_in: usize, c_out: usize) -> Conv2dSpec {
    Conv2dSpec {
        in_channels: c_in,
        out_channels: c_out,
        kernel: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        relu_input: false,
    }
}

/// One module of `cells`: a cell, or the residual block between two stages.
enum Stage {
    Cell(Nb201Cell),
    Res(Box<ResBlock>),
}

/// The NB201 network with its weights and BN statistics.
pub struct Nb201Network<B: Backend> {
    pub config: Nb201Config,
    pub weights: ParamStore<B>,
    /// BN running means and variances.
    pub buffers: ParamStore<B>,
    /// Training-mode forwards so far: PyTorch's `num_batches_tracked` (every BN runs in
    /// every forward, so it is the same for all).
    pub bn_batches: u64,
    stem_conv: Conv,
    stem_bn: BatchNorm,
    cells: Vec<Stage>,
    lastact: BatchNorm,
    classifier: Linear,
}

impl<B: Backend> Nb201Network<B> {
    /// Builds the network with PyTorch's default initialisation, drawn from `seed`.
    pub fn new(backend: &B, config: Nb201Config, seed: u64) -> Result<Self> {
        let arch = config.arch;
        Self::build(backend, config, seed, CellOps::Fixed(&arch))
    }

    /// Builds the network with cells holding `ops` (one operation per edge, or all five for
    /// a supernet: then `config.arch` is not what a forward runs, each forward names it).
    fn build(backend: &B, config: Nb201Config, seed: u64, ops: CellOps) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::fork(seed, "weights");
        let (mut weights, mut buffers) = (ParamStore::new(), ParamStore::new());
        let mut b = Builder::new(backend, &mut weights, &mut buffers, &mut rng);
        let [c0, _, c_last] = config.stage_channels();
        let (stem_conv, stem_bn) = b.scope("stem", |b| {
            Ok((
                b.scope(0, |b| b.conv(conv3x3(config.in_channels, c0)))?,
                b.scope(1, |b| b.batch_norm(c0, true))?,
            ))
        })?;
        let mut cells = Vec::with_capacity(3 * config.cells_per_stage + 2);
        b.scope("cells", |b| {
            let mut c_prev = c0;
            for c in config.stage_channels() {
                if c != c_prev {
                    let i = cells.len();
                    cells.push(Stage::Res(Box::new(
                        b.scope(i, |b| ResBlock::new(b, c_prev, c))?,
                    )));
                }
                for _ in 0..config.cells_per_stage {
                    let i = cells.len();
                    cells.push(Stage::Cell(b.scope(i, |b| Nb201Cell::new(b, ops, c))?));
                }
                c_prev = c;
            }
            Ok(())
        })?;
        let lastact = b.scope("lastact", |b| b.scope(0, |b| b.batch_norm(c_last, true)))?;
        let classifier = b.scope("classifier", |b| b.linear(c_last, config.classes))?;
        Ok(Nb201Network {
            config,
            weights,
            buffers,
            bn_batches: 0,
            stem_conv,
            stem_bn,
            cells,
            lastact,
            classifier,
        })
    }

    /// Every trainable parameter, as NB201 counts them (BN running statistics are buffers,
    /// not counted).
    pub fn num_weights(&self) -> usize {
        self.weights.numel()
    }

    /// Records the forward pass of images `x` and returns the logits. A training-mode
    /// forward that updates the running statistics counts one batch in `bn_batches`.
    pub fn run(&mut self, tape: &mut Tape<B>, x: Var, mode: Mode) -> Result<Var> {
        let arch = self.config.arch;
        let result = self.run_arch(tape, x, mode, &arch);
        if result.is_ok() && mode.train && mode.update_running {
            self.bn_batches += 1;
        }
        result
    }

    /// Records the forward of images `x` with every cell running `arch`'s operations.
    fn run_arch(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        arch: &Nb201Arch,
    ) -> Result<Var> {
        // The buffers are taken out for the call so the network can be borrowed immutably.
        let mut buffers = std::mem::take(&mut self.buffers);
        // The network has no architecture parameters.
        let no_alphas = ParamStore::new();
        let result = {
            let mut cx = Ctx {
                tape,
                weights: &self.weights,
                buffers: &mut buffers,
                arch: &no_alphas,
                mode,
            };
            self.forward(&mut cx, x, arch)
        };
        self.buffers = buffers;
        result
    }

    fn forward(&self, cx: &mut Ctx<B>, x: Var, arch: &Nb201Arch) -> Result<Var> {
        let d = input_dims(cx.tape, x, self.config.in_channels, "network input")?;
        self.config.check_image_size(d.h, d.w)?;
        cx.tape.backend().annotate("stem");
        let h = self.stem_conv.forward(cx, x)?;
        let mut h = self.stem_bn.forward(cx, h)?;
        for (i, stage) in self.cells.iter().enumerate() {
            cx.tape.backend().annotate(&format!("cells.{i}"));
            h = match stage {
                Stage::Cell(cell) => cell.forward(cx, h, arch)?,
                Stage::Res(block) => block.forward(cx, h)?,
            };
        }
        cx.tape.backend().annotate("lastact");
        let h = self.lastact.forward(cx, h)?;
        let h = cx.tape.relu(h)?;
        cx.tape.backend().annotate("classifier");
        let pooled = cx.tape.global_avg_pool(h)?;
        self.classifier.forward(cx, pooled)
    }

    /// The PyTorch `state_dict`: weights and running statistics as f32, and each BN's
    /// `num_batches_tracked` as an i64 scalar.
    pub fn state_dict(&self, backend: &B) -> Result<StateDict> {
        let mut floats = BTreeMap::new();
        self.weights.export(backend, "", &mut floats)?;
        self.buffers.export(backend, "", &mut floats)?;
        Ok((floats, self.buffers.bn_counters(self.bn_batches)))
    }

    /// Loads a `state_dict` strictly (the rules of `autograd::load_state_dict_strict`):
    /// every weight and running statistic with its shape, nothing else but the BN counters
    /// and names starting with one of `ignore_prefixes` (a checkpoint's optimizer state).
    pub fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        let how = StrictLoad {
            prefix: "",
            ignore_prefixes,
            also_known: &[],
            network: "NB201 network",
            hint: "is it the same --arch, --channels and --layers?",
            path,
        };
        let stores = &mut [&mut self.weights, &mut self.buffers];
        self.bn_batches = load_state_dict_strict(backend, stores, tensors, &how)?;
        Ok(())
    }
}

/// Checks the network `cfg` describes against the tensors of the file it came from, before
/// anything is built: the residual blocks at `cells.N` and `cells.2N+1` and no cell past
/// `cells.3N+1` (cells of `none`, `skip_connect` and `avg_pool_3x3` edges hold no tensors,
/// the blocks always do), the stem's C outputs and input channels, the classifier's 4C
/// inputs and classes. A file whose metadata claims N = 1e9 or C = 1e9 is refused here.
pub fn check_against_tensors(
    cfg: &Nb201Config,
    tensors: &BTreeMap<String, HostTensor>,
    path: &Path,
) -> Result<()> {
    let last = cfg.cells_per_stage.saturating_mul(3).saturating_add(1);
    let beyond = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("cells."))
        .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
        .find(|&i| i > last);
    if let Some(i) = beyond {
        return Err(Error::bad_file(
            path,
            format!(
                "describes {} cells per stage (cells 0..={last}) but holds tensors for cell {i}",
                cfg.cells_per_stage
            ),
        ));
    }
    for block in cfg.res_block_indices() {
        let name = format!("cells.{block}.conv_a.op.1.weight");
        if !tensors.contains_key(&name) {
            return Err(Error::bad_file(
                path,
                format!(
                    "describes {} cells per stage but has no {name} (the residual block there)",
                    cfg.cells_per_stage
                ),
            ));
        }
    }
    let expect = [
        ("stem.0.weight", 0, Some(cfg.channels), "channels"),
        ("stem.0.weight", 1, Some(cfg.in_channels), "input channels"),
        ("classifier.weight", 0, Some(cfg.classes), "classes"),
        (
            "classifier.weight",
            1,
            cfg.channels.checked_mul(4),
            "4 x channels",
        ),
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
