//! One training trial (`nasrs trial --spec FILE --result FILE`): a JSON spec in (the space,
//! the architecture, the network's sizes, the data, the budget), the architecture's network
//! trained from scratch with its space's recipe (NAS-Bench-201's for nb201 and mbconv, DARTS'
//! without drop-path and auxiliary head for darts), and a JSON result out: the validation accuracy on
//! a held-out split of the training data after each epoch (the curve early stopping reads)
//! and after the last. A trial is a process of its own so that anything that can launch a
//! process (a local pool, Slurm) can run it.

use super::super::classifier::NetworkConfig;
use super::super::darts::DeviceBatch;
use super::super::eval_model::EvalConfig;
use super::super::evaluate::evaluate;
use super::super::mbconv_model::MbConvConfig;
use super::super::nb201_model::Nb201Config;
use super::super::space::darts::DartsSpace;
use super::super::space::mbconv::MbConvSpace;
use super::super::space::nb201::Nb201Space;
use super::super::space::SearchSpace;
use super::super::train_run::{TrainHyper, Trainer};
use crate::backend::Backend;
use crate::data::{
    check_resolution, load, resize_dataset, split_indices, Augment, BatchIterator, Dataset,
    DatasetKind,
};
use crate::error::{Error, Result};
use crate::optim::cosine_lr;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a trial trains: `trial.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    /// nb201 | darts | mbconv
    pub space: String,
    /// The cell in the space's canonical one-line form.
    pub arch: String,
    /// Initial channels C.
    pub channels: usize,
    /// darts: cells L; nb201: cells per stage N; mbconv: unused (the arch gives the depth).
    pub layers: usize,
    /// mbconv: the width multiplier (None: [`MBCONV_WIDTH`]); unused by the other spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_mult: Option<f64>,
    /// mbconv: the depth multiplier (None: 1); unused by the other spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_mult: Option<f64>,
    /// Images resized (bilinear, at load time) to this square side (None: the dataset's
    /// own size); compound scaling's resolution coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<usize>,
    /// cifar10 | mnist | fashion-mnist | synthetic
    pub dataset: String,
    /// The data folder (absolute for a trial run elsewhere).
    pub data: PathBuf,
    /// Use only the first N training images (0 = all), split into training and validation.
    pub train_limit: usize,
    /// The share of those images held out for validation (the last ones).
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N | cuda-sim
    pub device: String,
    /// CPU worker threads (None: every core).
    #[serde(default)]
    pub threads: Option<usize>,
}

/// An mbconv trial's width multiplier unless the spec gives one: B0's channels / 4 (the
/// 8-channel floor for most stages), small enough for a CPU trial.
pub const MBCONV_WIDTH: f64 = 0.25;

impl TrialSpec {
    /// An mbconv trial's width multiplier.
    pub fn mbconv_width(&self) -> f64 {
        self.width_mult.unwrap_or(MBCONV_WIDTH)
    }

    /// An mbconv trial's depth multiplier.
    pub fn mbconv_depth(&self) -> f64 {
        self.depth_mult.unwrap_or(1.0)
    }
}

fn default_valid_fraction() -> f64 {
    0.5
}

/// Whether a trial produced a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    Ok,
    Failed,
}

/// What a trial writes: `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub status: TrialStatus,
    /// Validation accuracy after the last epoch (None for a failed trial).
    #[serde(default)]
    pub valid_acc: Option<f64>,
    /// Epochs trained.
    #[serde(default)]
    pub epochs: usize,
    pub seconds: f64,
    /// Validation accuracy after each epoch.
    #[serde(default)]
    pub curve: Vec<f64>,
    /// Why a failed trial failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trial process's `CUDA_VISIBLE_DEVICES` (the GPU a local executor gave it), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_devices: Option<String>,
}

/// This process's `CUDA_VISIBLE_DEVICES`, recorded with its result.
fn visible_devices() -> Option<String> {
    std::env::var("CUDA_VISIBLE_DEVICES").ok()
}

impl TrialResult {
    /// A failed trial's result with `message`.
    pub fn failed(message: impl Into<String>, seconds: f64) -> Self {
        TrialResult {
            status: TrialStatus::Failed,
            valid_acc: None,
            epochs: 0,
            seconds,
            curve: Vec::new(),
            error: Some(message.into()),
            visible_devices: visible_devices(),
        }
    }
}

impl TrialSpec {
    /// Reads a spec, naming the file and the field at fault.
    pub fn read(path: &Path) -> Result<TrialSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec: TrialSpec = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not a trial spec: {e}")))?;
        spec.validate()
            .map_err(|e| Error::bad_file(path, e.to_string()))?;
        Ok(spec)
    }

    /// Checks every field a trial could not run with, naming it.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("channels", self.channels),
            ("layers", self.layers),
            ("epochs", self.epochs),
            ("batch", self.batch),
        ] {
            if v == 0 {
                return Err(Error::invalid(
                    format!("field '{field}'"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(side) = self.resolution {
            check_resolution(side)
                .map_err(|e| Error::invalid("field 'resolution'", e.to_string()))?;
        }
        if self.threads == Some(0) {
            return Err(Error::invalid("field 'threads'", "must be at least 1"));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return Err(Error::invalid(
                "field 'valid_fraction'",
                format!("{} is not in (0, 1)", self.valid_fraction),
            ));
        }
        self.dataset
            .parse::<DatasetKind>()
            .map_err(|e| Error::invalid("field 'dataset'", e.to_string()))?;
        match self.space.as_str() {
            "nb201" => Nb201Space.parse(&self.arch).map(|_| ()),
            "darts" => DartsSpace::default().parse(&self.arch).map(|_| ()),
            "mbconv" => MbConvSpace::default().parse(&self.arch).map(|_| ()),
            other => {
                return Err(Error::invalid(
                    "field 'space'",
                    format!("'{other}' (expected nb201, darts or mbconv)"),
                ))
            }
        }
        .map_err(|e| Error::invalid("field 'arch'", e.to_string()))
    }
}

/// Trains the spec's network on `backend` and returns its result (an `Err` for a trial that
/// could not run; the caller writes it as a failed result).
pub fn run_trial<B: Backend>(backend: &B, spec: &TrialSpec) -> Result<TrialResult> {
    spec.validate()?;
    let started = Instant::now();
    let kind: DatasetKind = spec.dataset.parse()?;
    let (train, _) = load(kind, &spec.data)?;
    let data = train.first((spec.train_limit > 0).then_some(spec.train_limit))?;
    let data = match spec.resolution {
        Some(side) => resize_dataset(&data, side)?,
        None => data,
    };
    let (train_idx, valid_idx) = split_indices(data.n, 1.0 - spec.valid_fraction)?;
    if train_idx.len() < spec.batch || valid_idx.is_empty() {
        return Err(Error::invalid(
            "field 'batch'",
            format!(
                "{} does not fit the {} training images left of {} (valid_fraction {})",
                spec.batch,
                train_idx.len(),
                data.n,
                spec.valid_fraction
            ),
        ));
    }
    let valid = data.subset(&valid_idx)?;
    let cifar = kind == DatasetKind::Cifar10;
    let augment = Augment {
        crop_pad: cifar.then_some(4),
        flip: cifar,
        cutout: None,
    };
    let curve = match spec.space.as_str() {
        "nb201" => {
            let model = Nb201Config {
                arch: Nb201Space.parse(&spec.arch)?,
                channels: spec.channels,
                cells_per_stage: spec.layers,
                classes: data.classes,
                in_channels: data.c,
            };
            train_curve(
                backend,
                spec,
                model,
                TrainHyper::nb201(),
                &data,
                train_idx,
                &valid,
                augment,
            )?
        }
        "mbconv" => {
            let model = MbConvConfig {
                width_mult: spec.mbconv_width(),
                depth_mult: spec.mbconv_depth(),
                ..MbConvConfig::new(
                    MbConvSpace::default().parse(&spec.arch)?,
                    data.classes,
                    data.c,
                )
            };
            let hyper = TrainHyper::nb201();
            train_curve(
                backend, spec, model, hyper, &data, train_idx, &valid, augment,
            )?
        }
        _ => {
            let model = EvalConfig {
                genotype: DartsSpace::default().parse(&spec.arch)?.to_genotype(),
                channels: spec.channels,
                layers: spec.layers,
                classes: data.classes,
                in_channels: data.c,
                auxiliary: false,
            };
            let hyper = TrainHyper {
                drop_path: 0.0,
                auxiliary_weight: 0.0,
                ..TrainHyper::default()
            };
            train_curve(
                backend, spec, model, hyper, &data, train_idx, &valid, augment,
            )?
        }
    };
    Ok(TrialResult {
        status: TrialStatus::Ok,
        valid_acc: curve.last().copied(),
        epochs: curve.len(),
        seconds: started.elapsed().as_secs_f64(),
        curve,
        error: None,
        visible_devices: visible_devices(),
    })
}

/// Trains `model` from scratch for the spec's epochs (cosine schedule) and returns the
/// validation accuracy (eval-mode batch norm) after each epoch.
#[allow(clippy::too_many_arguments)]
fn train_curve<B: Backend, M: NetworkConfig>(
    be: &B,
    spec: &TrialSpec,
    model: M,
    hyper: TrainHyper,
    data: &Dataset,
    train_idx: Vec<usize>,
    valid: &Dataset,
    augment: Augment,
) -> Result<Vec<f64>> {
    model.validate()?;
    model.check_image_size(data.h, data.w)?;
    let net = model.build(be, spec.seed)?;
    let (lr_max, lr_min) = (hyper.lr_max, hyper.lr_min);
    let mut trainer = Trainer::new(be.clone(), net, hyper)?;
    let mut order = BatchIterator::new(train_idx, Rng::fork(spec.seed, "trial order"), augment)?;
    let mut drop_rng = Rng::fork(spec.seed, "drop path");
    let steps = order.steps_per_epoch(spec.batch);
    let mut curve = Vec::with_capacity(spec.epochs.min(super::RESERVE_MAX));
    for epoch in 0..spec.epochs {
        let lr = cosine_lr(lr_max, lr_min, epoch, spec.epochs);
        for _ in 0..steps {
            let b = order.next_batch(data, spec.batch)?;
            let batch = DeviceBatch::from_batch(be, &b, data.classes)?;
            trainer.step(&batch, lr, 0.0, &mut drop_rng)?;
        }
        let report = evaluate(be, &mut trainer.net, valid, spec.batch)?;
        curve.push(report.accuracy);
    }
    Ok(curve)
}
