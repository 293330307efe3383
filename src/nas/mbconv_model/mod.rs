//! The MBConv network (EfficientNet's, built from an architecture of the MBConv space
//! [`MbConvArch`]): a 3x3 stride-2 stem conv + BN + swish, seven stages of MBConv blocks on
//! B0's channel and stride plan (`plan.rs`; the block in `block.rs`), a 1x1 head conv to four
//! times the last stage's channels + BN + swish, global average pooling, dropout and a linear
//! classifier. The width and depth multipliers scale it with EfficientNet's rounding, so
//! `MbConvArch::b0()` at 1000 classes is EfficientNet-B0 (5,288,548 parameters, as
//! torchvision's) and the published multipliers give B1..B7.
//!
//! Names are torchvision's `efficientnet_b*` `state_dict`'s: `features.0.0.weight` (stem),
//! `features.{stage + 1}.{block}.block.{part}...` (stages), `features.8.0.weight` (head),
//! `classifier.1.weight` (the linear layer after the dropout).
//!
//! This file owns the configuration and the network (building it, its forward, its
//! `state_dict`).

mod block;
pub mod part;
pub mod plan;

use super::classifier::StateDict;
use super::modules::{input_dims, Builder, Ctx, Linear, Mode};
use super::space::mbconv::MbConvArch;
use crate::autograd::{load_state_dict_strict, ParamStore, StrictLoad, Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::HostTensor;
use crate::rng::Rng;
use crate::shape::Conv2dSpec;
use block::{ConvBn, MbConvBlock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything that determines the MBConv network's shape (kept in checkpoint metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MbConvConfig {
    /// The architecture, written as its arch string in JSON.
    #[serde(with = "arch_string")]
    pub arch: MbConvArch,
    /// Channel multiplier (EfficientNet's width coefficient).
    pub width_mult: f64,
    /// Block-count multiplier (EfficientNet's depth coefficient).
    pub depth_mult: f64,
    /// Dropout before the classifier (training mode only).
    pub dropout: f64,
    /// Batch norm momentum and eps in PyTorch's terms.
    pub bn_momentum: f64,
    pub bn_eps: f64,
    pub classes: usize,
    pub in_channels: usize,
}

/// The arch string form of [`MbConvArch`] in JSON.
mod arch_string {
    use super::MbConvArch;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(arch: &MbConvArch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&arch.to_arch_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MbConvArch, D::Error> {
        let text = String::deserialize(d)?;
        MbConvArch::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl MbConvConfig {
    /// EfficientNet's batch norm (TensorFlow's decay 0.99 and eps 1e-3, in PyTorch terms).
    pub const EFFICIENTNET_BN_MOMENTUM: f64 = 0.01;
    pub const BN_EPS: f64 = 1e-3;
    /// The momentum of [`new`](Self::new): PyTorch's default. EfficientNet's 0.01 suits its
    /// 350 epochs; after a short run its running statistics are still near their start and
    /// eval-mode outputs blow up (measured: B0 at width 0.25, 62 steps on MNIST, test loss
    /// 4.7e4 at 0.01 against 1.4 at 0.1).
    pub const BN_MOMENTUM: f64 = 0.1;

    /// `arch` at width and depth 1, B0's dropout 0.2, BN momentum [`Self::BN_MOMENTUM`] and
    /// EfficientNet's eps.
    pub fn new(arch: MbConvArch, classes: usize, in_channels: usize) -> Self {
        MbConvConfig {
            arch,
            width_mult: 1.0,
            depth_mult: 1.0,
            dropout: 0.2,
            bn_momentum: Self::BN_MOMENTUM,
            bn_eps: Self::BN_EPS,
            classes,
            in_channels,
        }
    }

    /// EfficientNet `name` (`b0`..`b7`) from the shipped scaling table: B0's architecture
    /// with that row's width, depth and dropout, and EfficientNet's batch norm.
    pub fn efficientnet(name: &str, classes: usize, in_channels: usize) -> Result<Self> {
        let row = plan::ScalingRow::named(name)?;
        Ok(MbConvConfig {
            width_mult: row.width,
            depth_mult: row.depth,
            dropout: row.dropout,
            bn_momentum: Self::EFFICIENTNET_BN_MOMENTUM,
            ..Self::new(MbConvArch::b0(), classes, in_channels)
        })
    }

    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("classes", self.classes),
            ("input channels", self.in_channels),
        ] {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "--dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if !(self.bn_momentum >= 0.0 && self.bn_momentum <= 1.0 && self.bn_eps > 0.0) {
            return Err(Error::invalid(
                "batch norm",
                format!(
                    "momentum {} / eps {} (momentum in [0, 1], eps above 0)",
                    self.bn_momentum, self.bn_eps
                ),
            ));
        }
        plan::blocks(&self.arch, self.width_mult, self.depth_mult).map(|_| ())
    }

    /// Any image of at least 1x1 passes: every stride-2 conv pads to `ceil(side / 2)`.
    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        if h == 0 || w == 0 {
            return Err(Error::invalid(
                "images",
                format!("{h}x{w} images are empty"),
            ));
        }
        Ok(())
    }

    /// The sizes in one phrase for messages.
    pub fn describe(&self) -> String {
        format!(
            "width {} depth {} {}",
            self.width_mult,
            self.depth_mult,
            self.arch.to_arch_string()
        )
    }
}

/// The MBConv network with its weights and BN statistics.
pub struct MbConvNetwork<B: Backend> {
    pub config: MbConvConfig,
    pub weights: ParamStore<B>,
    /// BN running means and variances.
    pub buffers: ParamStore<B>,
    /// Training-mode forwards so far: PyTorch's `num_batches_tracked`.
    pub bn_batches: u64,
    stem: ConvBn,
    blocks: Vec<MbConvBlock>,
    head: ConvBn,
    classifier: Linear,
}

impl<B: Backend> MbConvNetwork<B> {
    /// Builds the network with PyTorch's default initialisation, drawn from `seed`.
    pub fn new(backend: &B, config: MbConvConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let (plan, stem_c, head_c) =
            plan::blocks(&config.arch, config.width_mult, config.depth_mult)?;
        let bn = (config.bn_momentum, config.bn_eps);
        let mut rng = Rng::fork(seed, "weights");
        let (mut weights, mut buffers) = (ParamStore::new(), ParamStore::new());
        let mut b = Builder::new(backend, &mut weights, &mut buffers, &mut rng);
        let last_c = plan.last().map_or(stem_c, |p| p.out_channels);
        let (stem, blocks, head) = b.scope("features", |b| {
            let stem_spec = Conv2dSpec::new(config.in_channels, stem_c, 3)
                .stride(2)
                .padding(1);
            let stem = b.scope(0, |b| ConvBn::new(b, stem_spec, true, bn))?;
            let blocks = plan
                .iter()
                .map(|&p| {
                    b.scope(p.stage + 1, |b| {
                        b.scope(p.index, |b| MbConvBlock::new(b, p, bn))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let head_spec = Conv2dSpec::new(last_c, head_c, 1);
            let head = b.scope(plan::B0_STAGES.len() + 1, |b| {
                ConvBn::new(b, head_spec, true, bn)
            })?;
            Ok((stem, blocks, head))
        })?;
        let classifier = b.scope("classifier", |b| {
            b.scope(1, |b| b.linear(head_c, config.classes))
        })?;
        Ok(MbConvNetwork {
            config,
            weights,
            buffers,
            bn_batches: 0,
            stem,
            blocks,
            head,
            classifier,
        })
    }

    /// Every trainable parameter (BN running statistics are buffers, not counted), as
    /// torchvision's `sum(p.numel() for p in model.parameters())`.
    pub fn num_weights(&self) -> usize {
        self.weights.numel()
    }

    /// MBConv blocks in the network (after the depth multiplier).
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Records the forward pass of images `x` and returns the logits. In training mode,
    /// stochastic depth drops block `i`'s residual branch with `drop_prob * i / blocks`
    /// (torchvision's schedule) and dropout (the config's) precedes the classifier; masks
    /// come from `rng`. A training-mode forward that updates the running statistics counts
    /// one batch in `bn_batches`.
    pub fn run(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<Var> {
        if !(0.0..1.0).contains(&drop_prob) {
            return Err(Error::invalid(
                "--drop-path",
                format!("{drop_prob} is not in [0, 1)"),
            ));
        }
        // The buffers are taken out for the call so the network can be borrowed immutably.
        let mut buffers = std::mem::take(&mut self.buffers);
        let no_alphas = ParamStore::new();
        let result = {
            let mut cx = Ctx {
                tape,
                weights: &self.weights,
                buffers: &mut buffers,
                arch: &no_alphas,
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

    fn forward(&self, cx: &mut Ctx<B>, x: Var, drop_prob: f64, rng: &mut Rng) -> Result<Var> {
        let d = input_dims(cx.tape, x, self.config.in_channels, "network input")?;
        self.config.check_image_size(d.h, d.w)?;
        cx.tape.backend().annotate("features.0");
        let mut h = self.stem.forward(cx, x)?;
        for block in &self.blocks {
            let p = block.plan;
            cx.tape
                .backend()
                .annotate(&format!("features.{}.{}", p.stage + 1, p.index));
            h = block.forward(cx, h, drop_prob, rng)?;
        }
        cx.tape.backend().annotate("features.8");
        let h = self.head.forward(cx, h)?;
        cx.tape.backend().annotate("classifier");
        let pooled = cx.tape.global_avg_pool(h)?;
        let dropout = if cx.mode.train {
            self.config.dropout
        } else {
            0.0
        };
        let pooled = cx.tape.dropout(pooled, dropout, rng)?;
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

    /// Loads a `state_dict` strictly (the rules of `autograd::load_state_dict_strict`).
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
            network: "MBConv network",
            hint: "is it the same --arch, --width-mult and --depth-mult?",
            path,
        };
        let stores = &mut [&mut self.weights, &mut self.buffers];
        self.bn_batches = load_state_dict_strict(backend, stores, tensors, &how)?;
        Ok(())
    }
}

/// Checks the network `cfg` describes against the tensors of the file it came from, before
/// anything is built: the stem's channels and inputs and the classifier's inputs and
/// classes must be the ones the configuration gives (a file whose metadata claims a width
/// of 60 is refused here, before 60x the memory is allocated).
pub fn check_against_tensors(
    cfg: &MbConvConfig,
    tensors: &BTreeMap<String, HostTensor>,
    path: &Path,
) -> Result<()> {
    let (_, stem_c, head_c) = plan::blocks(&cfg.arch, cfg.width_mult, cfg.depth_mult)
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    let expect = [
        ("features.0.0.weight", 0, stem_c, "stem channels"),
        ("features.0.0.weight", 1, cfg.in_channels, "input channels"),
        ("classifier.1.weight", 0, cfg.classes, "classes"),
        ("classifier.1.weight", 1, head_c, "head channels"),
    ];
    for (name, axis, want, what) in expect {
        let got = tensors.get(name).and_then(|t| t.shape.get(axis).copied());
        if got != Some(want) {
            return Err(Error::bad_file(
                path,
                format!(
                    "{name} {} does not match the {want} {what} the file describes ({})",
                    tensors
                        .get(name)
                        .map_or("is missing".to_string(), |t| format!(
                            "has shape {:?}",
                            t.shape
                        )),
                    cfg.describe()
                ),
            ));
        }
    }
    Ok(())
}
