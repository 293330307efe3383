//! Training the evaluation network from scratch (the DARTS paper's `train.py`) and
//! evaluating it, with a run folder kept up to date after every epoch, each file written
//! atomically:
//! - `config.json`: every option of the run (genotype included);
//! - `metrics.jsonl`: one line per epoch (train / test loss and accuracy, learning rate,
//!   drop-path probability, seconds);
//! - `curves.svg`: the learning curves;
//! - `checkpoint.safetensors`: the PyTorch `state_dict` of the network plus the SGD momentum
//!   buffers (`optimizer.momentum_buffer.<name>`), and in its metadata the network's shape
//!   (`nasrs.model`) and the training state (`nasrs.train`: data order, drop-path generator,
//!   metrics so far), so `resume` continues exactly (bitwise on the CPU);
//! - `model.safetensors` at the end: the `state_dict` alone (PyTorch's
//!   `load_state_dict(strict=True)` takes it as is) plus `nasrs.model`.
//!
//! Each step: loss = CE(logits) + aux_weight * CE(aux logits), SGD with momentum and weight
//! decay, gradients clipped to norm 5, cosine learning rate per epoch, drop-path probability
//! `drop_path * epoch / epochs`. A NaN or infinite loss, or an epoch whose mean loss passes
//! [`DIVERGED_LOSS`], stops the run with an error naming the epoch and keeps the last good
//! checkpoint.
//!
//! The folder follows [`RunDir`]'s rules; wall-clock times live in `metrics.jsonl` only, so
//! a resumed run writes the checkpoint bytes an uninterrupted one does.

use super::darts::DeviceBatch;
use super::eval_model::{check_against_tensors, infer_config, EvalConfig, EvalNetwork};
use super::genotype::Genotype;
use super::modules::Mode;
use super::run_dir::{RunDir, Start};
pub use super::search_run::DIVERGED_LOSS;
use crate::autograd::Tape;
use crate::backend::{norm_scalars, Backend, Element, ScalarRef};
use crate::data::{Augment, BatchIterator, BatchIteratorState, Dataset, SequentialBatches};
use crate::error::{Error, Result};
use crate::io::{
    atomic_write, atomic_write_json, check_resume_options, load_safetensors, read_json_meta,
    save_safetensors_with_i64, write_jsonl, HostTensor,
};
use crate::optim::{cosine_lr, grad_norm_scalars, Sgd};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const MODEL: &str = "model.safetensors";
/// Metadata key of the network description (genotype, sizes, dataset).
pub const MODEL_META: &str = "nasrs.model";
const TRAIN_META: &str = "nasrs.train";
/// Metadata key of a search checkpoint (`search_run`), refused here by name.
const SEARCH_META: &str = "nasrs.search";
const MOMENTUM_PREFIX: &str = "optimizer.momentum_buffer.";
/// Every file a training run writes in its folder.
pub const RUN_FILES: &[&str] = &[
    "config.json",
    "metrics.jsonl",
    "curves.svg",
    CHECKPOINT,
    MODEL,
];
/// What each epoch rewrites (`model.safetensors` comes at the end).
const EPOCH_FILES: &[&str] = &["config.json", "metrics.jsonl", "curves.svg", CHECKPOINT];

/// The DARTS paper's training hyper-parameters (its `train.py` defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainHyper {
    pub lr_max: f64,
    /// Where the cosine schedule ends (0 in DARTS).
    pub lr_min: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Final drop-path probability; epoch e uses `drop_path * e / epochs`.
    pub drop_path: f64,
    /// Weight of the auxiliary head's loss.
    pub auxiliary_weight: f64,
}

impl Default for TrainHyper {
    fn default() -> Self {
        TrainHyper {
            lr_max: 0.025,
            lr_min: 0.0,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            drop_path: 0.2,
            auxiliary_weight: 0.4,
        }
    }
}

/// What `model.safetensors` and checkpoints say about the network they hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub model: EvalConfig,
    /// The dataset it was trained on (`cifar10`, `mnist`, ...), if known.
    pub dataset: Option<String>,
}

/// Everything that determines a training run (saved as `config.json` and in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRunConfig {
    pub dataset: String,
    pub model: EvalConfig,
    pub hyper: TrainHyper,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    pub augment: Augment,
    /// Use only the first N training / test samples (quick runs); None = all.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainEpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub drop_prob: f64,
    /// Mean cross-entropy of the main logits over the epoch's training batches.
    pub train_loss: f64,
    /// Mean cross-entropy of the auxiliary logits (None without an auxiliary head).
    pub train_aux_loss: Option<f64>,
    pub train_acc: f64,
    /// Over the whole test set, eval-mode batch norm.
    pub test_loss: f64,
    pub test_acc: f64,
    pub seconds: f64,
}

/// Loss and accuracy of one training step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainStepStats {
    pub loss: f64,
    pub aux_loss: Option<f64>,
    pub correct: usize,
    pub count: usize,
}

pub use super::progress::{Progress, Silent};

/// The network and its optimizer: one training step, evaluation.
pub struct Trainer<B: Backend> {
    pub backend: B,
    pub net: EvalNetwork<B>,
    pub hyper: TrainHyper,
    pub opt: Sgd<B>,
}

impl<B: Backend> Trainer<B> {
    pub fn new(backend: B, net: EvalNetwork<B>, hyper: TrainHyper) -> Result<Self> {
        if !(0.0..1.0).contains(&hyper.drop_path) {
            return Err(Error::invalid(
                "--drop-path",
                format!("{} is not in [0, 1)", hyper.drop_path),
            ));
        }
        let opt = Sgd::new(&backend, &net.weights, hyper.momentum, hyper.weight_decay)?;
        Ok(Trainer {
            backend,
            net,
            hyper,
            opt,
        })
    }

    /// Forward (training mode), backward, clip, SGD step.
    pub fn step(
        &mut self,
        batch: &DeviceBatch<B>,
        lr: f64,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<TrainStepStats> {
        let mut tape = Tape::new(self.backend.clone());
        let x = tape.constant(batch.images.clone());
        let (logits, aux) = self
            .net
            .run(&mut tape, x, Mode::WEIGHT_STEP, drop_prob, rng)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        let loss_value = tape.scalar(loss, "loss")?;
        let (total, aux_value) = match aux {
            Some(a) => {
                let la = tape.softmax_cross_entropy(a, &batch.labels)?;
                let v = tape.scalar(la, "auxiliary loss")?;
                let weighted = tape.scale(la, self.hyper.auxiliary_weight)?;
                (tape.add(loss, weighted)?, Some(v))
            }
            None => (loss, None),
        };
        let correct = tape.count_correct(logits, &batch.labels)?;
        let correct = correct.to_f64(&self.backend)?[0].round() as usize;
        let grads = tape.backward(total)?;
        let gw = grads.params(&self.backend, &self.net.weights)?;
        drop(grads);
        tape.clear();
        // Clipping fused into the update; the norm is read only to stop on a NaN.
        let norms = grad_norm_scalars(&self.backend, &gw, self.hyper.grad_clip)?;
        let norm = self.backend.download(&norms)?[norm_scalars::NORM].to_f64();
        if !norm.is_finite() {
            return Err(Error::NonFinite(format!("gradient norm is {norm}")));
        }
        let clip = ScalarRef {
            buf: &norms,
            index: norm_scalars::CLIP_COEF,
        };
        self.opt
            .step(&self.backend, &mut self.net.weights, &gw, lr, Some(clip))?;
        Ok(TrainStepStats {
            loss: loss_value,
            aux_loss: aux_value,
            correct,
            count: batch.len(),
        })
    }
}

/// Test-set results: loss, accuracy, per-class accuracy and the confusion matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub count: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[true][predicted]` = number of samples.
    pub confusion: Vec<Vec<usize>>,
}

impl EvalReport {
    /// Accuracy per true class (None for a class without samples).
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect()
    }
}

/// Eval-mode (running statistics, no gradients) logits of one batch.
pub fn eval_logits<B: Backend>(
    backend: &B,
    net: &mut EvalNetwork<B>,
    images: &Tensor<B>,
) -> Result<Vec<f64>> {
    let mut tape = Tape::new(backend.clone());
    tape.set_grad_enabled(false);
    let x = tape.constant(images.clone());
    let (logits, _) = net.run(&mut tape, x, Mode::EVAL, 0.0, &mut Rng::new(0))?;
    tape.value(logits)?.to_f64(backend)
}

/// Evaluates `net` on every sample of `ds` in eval mode.
pub fn evaluate<B: Backend>(
    backend: &B,
    net: &mut EvalNetwork<B>,
    ds: &Dataset,
    batch: usize,
) -> Result<EvalReport> {
    let k = net.config.classes;
    if ds.classes > k {
        return Err(Error::invalid(
            "dataset",
            format!(
                "{} has {} classes but the network has {k} outputs",
                ds.name, ds.classes
            ),
        ));
    }
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut loss_sum, mut count) = (0.0, 0usize);
    for b in SequentialBatches::new(ds, batch)? {
        let db = DeviceBatch::from_batch(backend, &b, k)?;
        let logits = eval_logits(backend, net, &db.images)?;
        for (i, &label) in b.labels.iter().enumerate() {
            let row = &logits[i * k..(i + 1) * k];
            let best = (0..k).fold(0, |m, j| if row[j] > row[m] { j } else { m });
            let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
            loss_sum += lse - row[label as usize];
            confusion[label as usize][best] += 1;
        }
        count += b.n;
    }
    if !loss_sum.is_finite() {
        return Err(Error::NonFinite(format!("test loss is {loss_sum}")));
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    Ok(EvalReport {
        count,
        loss: loss_sum / count.max(1) as f64,
        accuracy: correct as f64 / count.max(1) as f64,
        confusion,
    })
}

/// Writes the network's `state_dict` (plus `extra` f32 tensors) with its description and
/// `extra_meta`, atomically.
pub fn save_network<B: Backend>(
    backend: &B,
    net: &EvalNetwork<B>,
    dataset: Option<&str>,
    path: &Path,
    extra: BTreeMap<String, HostTensor>,
    extra_meta: HashMap<String, String>,
) -> Result<()> {
    let (mut floats, ints) = net.state_dict(backend)?;
    floats.extend(extra);
    let meta = ModelMeta {
        model: net.config.clone(),
        dataset: dataset.map(str::to_string),
    };
    let mut metadata = extra_meta;
    metadata.insert(
        MODEL_META.to_string(),
        serde_json::to_string(&meta)
            .map_err(|e| Error::invalid("model metadata", e.to_string()))?,
    );
    save_safetensors_with_i64(path, &floats, &ints, metadata)
}

/// Loads a network from `model.safetensors`, a training checkpoint, or a PyTorch DARTS
/// `state_dict` saved as safetensors. With nasrs metadata the file says what it holds
/// (`genotype` overrides its genotype); without, the shape is read off the weights and
/// `genotype` must be given.
pub fn load_network<B: Backend>(
    backend: &B,
    path: &Path,
    genotype: Option<Genotype>,
) -> Result<(EvalNetwork<B>, ModelMeta)> {
    let (tensors, metadata) = load_safetensors(path)?;
    let meta = match metadata.get(MODEL_META) {
        Some(json) => {
            let mut m: ModelMeta = serde_json::from_str(json)
                .map_err(|e| Error::bad_file(path, format!("bad {MODEL_META} metadata: {e}")))?;
            if let Some(g) = genotype {
                m.model.genotype = g;
            }
            m
        }
        None if metadata.contains_key(SEARCH_META) => {
            return Err(Error::bad_file(
                path,
                "is a search checkpoint (the DARTS supernet, not a trained network); train \
                 the cell it found first: nasrs train --genotype <its run folder>/genotype.json",
            ))
        }
        None => {
            let g = genotype.ok_or_else(|| {
                Error::invalid(
                    "--genotype",
                    format!(
                        "{} has no nasrs metadata (a PyTorch state_dict?); say which genotype it is",
                        path.display()
                    ),
                )
            })?;
            ModelMeta {
                model: infer_config(&tensors, g, path)?,
                dataset: None,
            }
        }
    };
    // The file's own description is checked as the file's: a bad genotype or size in its
    // metadata names the file, not a flag the user never gave.
    meta.model
        .validate()
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    check_against_tensors(&meta.model, &tensors, path)?;
    let mut net = EvalNetwork::new(backend, meta.model.clone(), 0)?;
    net.load_state_dict(backend, &tensors, &[MOMENTUM_PREFIX], path)?;
    Ok((net, meta))
}

struct TrainState<B: Backend> {
    trainer: Trainer<B>,
    train_iter: BatchIterator,
    drop_rng: Rng,
    history: Vec<TrainEpochMetrics>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    config: TrainRunConfig,
    epochs_done: usize,
    bn_batches: u64,
    train_iter: BatchIteratorState,
    drop_rng: Rng,
    history: Vec<TrainEpochMetrics>,
}

/// Runs (or resumes) training of `config.model` in the folder `out`.
pub struct TrainRun<B: Backend> {
    pub backend: B,
    pub config: TrainRunConfig,
    pub out: PathBuf,
}

impl<B: Backend> TrainRun<B> {
    pub fn new(backend: B, config: TrainRunConfig, out: impl Into<PathBuf>) -> Result<Self> {
        if config.epochs == 0 {
            return Err(Error::invalid("--epochs", "must be at least 1"));
        }
        if config.batch == 0 {
            return Err(Error::invalid("--batch", "must be at least 1"));
        }
        config.model.validate()?;
        Ok(TrainRun {
            backend,
            config,
            out: out.into(),
        })
    }

    fn fresh_state(&self, train_set: &Dataset) -> Result<TrainState<B>> {
        let net = EvalNetwork::new(&self.backend, self.config.model.clone(), self.config.seed)?;
        let trainer = Trainer::new(self.backend.clone(), net, self.config.hyper.clone())?;
        if train_set.n < self.config.batch {
            return Err(Error::invalid(
                "--batch",
                format!(
                    "{} is larger than the training set ({} samples)",
                    self.config.batch, train_set.n
                ),
            ));
        }
        let train_iter = BatchIterator::new(
            (0..train_set.n).collect(),
            Rng::fork(self.config.seed, "train order"),
            self.config.augment,
        )?;
        Ok(TrainState {
            trainer,
            train_iter,
            drop_rng: Rng::fork(self.config.seed, "drop path"),
            history: Vec::new(),
        })
    }

    fn save_checkpoint(&self, st: &TrainState<B>) -> Result<()> {
        let be = &self.backend;
        let mut extra = BTreeMap::new();
        st.trainer
            .opt
            .state
            .export(be, MOMENTUM_PREFIX, &mut extra)?;
        let meta = CheckpointMeta {
            config: self.config.clone(),
            epochs_done: st.history.len(),
            bn_batches: st.trainer.net.bn_batches,
            train_iter: st.train_iter.state(),
            drop_rng: st.drop_rng.clone(),
            history: st
                .history
                .iter()
                .map(|m| TrainEpochMetrics {
                    seconds: 0.0,
                    ..m.clone()
                })
                .collect(),
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::invalid("checkpoint metadata", e.to_string()))?;
        save_network(
            be,
            &st.trainer.net,
            Some(&self.config.dataset),
            &self.out.join(CHECKPOINT),
            extra,
            HashMap::from([(TRAIN_META.to_string(), json)]),
        )
    }

    fn load_checkpoint(&self, dir: &RunDir, train_set: &Dataset) -> Result<TrainState<B>> {
        let path = dir.checkpoint();
        let (tensors, meta) = load_safetensors(&path)?;
        let meta: CheckpointMeta = read_json_meta(&meta, TRAIN_META, "training", &path)?;
        let mut expected = meta.config.clone();
        expected.epochs = self.config.epochs; // more epochs may be asked for on resume
        check_resume_options(&expected, &self.config, &path)?;
        if meta.history.len() != meta.epochs_done {
            return Err(Error::bad_file(
                &path,
                "metrics history does not match the epochs done",
            ));
        }
        let mut st = self.fresh_state(train_set)?;
        let be = &self.backend;
        st.trainer
            .net
            .load_state_dict(be, &tensors, &[MOMENTUM_PREFIX], &path)?;
        st.trainer.net.bn_batches = meta.bn_batches;
        st.trainer
            .opt
            .state
            .import(be, MOMENTUM_PREFIX, &tensors, &path)?;
        st.train_iter = BatchIterator::from_state(meta.train_iter)?;
        st.drop_rng = meta.drop_rng;
        st.history = meta.history;
        for (m, seconds) in st.history.iter_mut().zip(dir.epoch_seconds()) {
            m.seconds = seconds.unwrap_or(0.0);
        }
        Ok(st)
    }

    fn write_outputs(&self, st: &TrainState<B>) -> Result<()> {
        atomic_write_json(&self.out.join("config.json"), &self.config)?;
        write_jsonl(&self.out.join("metrics.jsonl"), &st.history)?;
        atomic_write(
            &self.out.join("curves.svg"),
            learning_curves_svg(&st.history).as_bytes(),
        )
    }

    /// Runs the remaining epochs (all unless `start` resumes from a checkpoint), writes
    /// `model.safetensors` and returns the metrics of every epoch.
    pub fn run(
        &self,
        train_set: &Dataset,
        test_set: &Dataset,
        start: Start,
        progress: &mut dyn Progress<TrainStepStats, TrainEpochMetrics>,
    ) -> Result<Vec<TrainEpochMetrics>> {
        let m = &self.config.model;
        for ds in [train_set, test_set] {
            if ds.c != m.in_channels || ds.classes > m.classes {
                return Err(Error::invalid(
                    "dataset",
                    format!(
                        "{} has {} channels and {} classes; the network was configured for {} and {}",
                        ds.name, ds.c, ds.classes, m.in_channels, m.classes
                    ),
                ));
            }
        }
        m.check_image_size(train_set.h, train_set.w)?;
        let train_set = train_set.first(self.config.train_limit)?;
        let test_set = test_set.first(self.config.test_limit)?;
        let (mut dir, resume) = RunDir::open(&self.out, RUN_FILES, CHECKPOINT, start)?;
        let mut st = if resume {
            self.load_checkpoint(&dir, &train_set)?
        } else {
            self.fresh_state(&train_set)?
        };
        let steps = st.train_iter.steps_per_epoch(self.config.batch);
        let h = &self.config.hyper;
        for epoch in st.history.len()..self.config.epochs {
            let started = Instant::now();
            let lr = cosine_lr(h.lr_max, h.lr_min, epoch, self.config.epochs);
            let drop_prob = h.drop_path * epoch as f64 / self.config.epochs as f64;
            progress.epoch_start(epoch, self.config.epochs, steps);
            let (mut loss, mut aux, mut correct, mut count) = (0.0, 0.0, 0usize, 0usize);
            for step in 0..steps {
                let batch = DeviceBatch::from_batch(
                    &self.backend,
                    &st.train_iter.next_batch(&train_set, self.config.batch)?,
                    train_set.classes,
                )?;
                let s = st
                    .trainer
                    .step(&batch, lr, drop_prob, &mut st.drop_rng)
                    .map_err(|e| match e {
                        Error::NonFinite(what) => Error::NonFinite(format!(
                            "{what} at epoch {epoch} step {step}{}",
                            dir.kept_note(st.history.len())
                        )),
                        e => e,
                    })?;
                loss += s.loss * s.count as f64;
                aux += s.aux_loss.unwrap_or(0.0) * s.count as f64;
                correct += s.correct;
                count += s.count;
                progress.step(step, &s, correct as f64 / count as f64);
            }
            let test = evaluate(
                &self.backend,
                &mut st.trainer.net,
                &test_set,
                self.config.batch,
            )
            .map_err(|e| match e {
                Error::NonFinite(what) => Error::NonFinite(format!(
                    "{what} at epoch {epoch}{}",
                    dir.kept_note(st.history.len())
                )),
                e => e,
            })?;
            let n = count.max(1) as f64;
            let metrics = TrainEpochMetrics {
                epoch,
                lr,
                drop_prob,
                train_loss: loss / n,
                train_aux_loss: m.auxiliary.then_some(aux / n),
                train_acc: correct as f64 / n,
                test_loss: test.loss,
                test_acc: test.accuracy,
                seconds: started.elapsed().as_secs_f64(),
            };
            let diverged = [
                ("training", metrics.train_loss),
                ("test", metrics.test_loss),
            ]
            .into_iter()
            .find(|&(_, loss)| loss > DIVERGED_LOSS);
            if let Some((what, loss)) = diverged {
                return Err(Error::NonFinite(format!(
                    "training diverged: mean {what} loss {loss:e} at epoch {epoch} (over \
                     {DIVERGED_LOSS:e}; try a smaller --lr){}",
                    dir.kept_note(st.history.len())
                )));
            }
            progress.epoch_end(&metrics);
            st.history.push(metrics);
            self.save_checkpoint(&st)?;
            self.write_outputs(&st)?;
            dir.epoch_saved(EPOCH_FILES)?;
        }
        self.write_outputs(&st)?;
        save_network(
            &self.backend,
            &st.trainer.net,
            Some(&self.config.dataset),
            &self.out.join(MODEL),
            BTreeMap::new(),
            HashMap::new(),
        )?;
        Ok(st.history)
    }
}

/// Learning curves as a standalone SVG: loss (left) and accuracy (right) per epoch, train
/// solid and test dashed.
pub fn learning_curves_svg(history: &[TrainEpochMetrics]) -> String {
    let (pw, ph, pad) = (360.0, 220.0, 48.0);
    let width = 2.0 * (pw + pad) + pad;
    let height = ph + 2.0 * pad + 24.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
    );
    type Pick = fn(&TrainEpochMetrics) -> f64;
    /// Title, (label, value) per series, whether it is an accuracy panel.
    type Panel = (&'static str, [(&'static str, Pick); 2], bool);
    let panels: [Panel; 2] = [
        (
            "loss",
            [("train", |m| m.train_loss), ("test", |m| m.test_loss)],
            false,
        ),
        (
            "accuracy (%)",
            [
                ("train", |m| 100.0 * m.train_acc),
                ("test", |m| 100.0 * m.test_acc),
            ],
            true,
        ),
    ];
    let n = history.len();
    for (p, (title, series, is_acc)) in panels.iter().enumerate() {
        let x0 = pad + p as f64 * (pw + pad);
        let y0 = pad;
        let values = || {
            series
                .iter()
                .flat_map(|(_, f)| history.iter().map(f))
                .filter(|v| v.is_finite())
        };
        let (mut lo, mut hi) = (
            values().fold(f64::INFINITY, f64::min),
            values().fold(f64::NEG_INFINITY, f64::max),
        );
        if *is_acc {
            (lo, hi) = (lo.clamp(0.0, 100.0), 100.0);
            lo = (lo / 10.0).floor() * 10.0;
        } else {
            lo = lo.min(0.0);
        }
        if !(lo.is_finite() && hi > lo) {
            (lo, hi) = (0.0, 1.0);
        }
        let xp = |e: usize| {
            if n <= 1 {
                x0 + pw / 2.0
            } else {
                x0 + pw * e as f64 / (n - 1) as f64
            }
        };
        let yp = |v: f64| y0 + ph * (1.0 - (v - lo) / (hi - lo));
        let _ = write!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{x0}" y="{}" font-size="13" font-weight="bold">{title}</text><text x="{}" y="{}" text-anchor="end">{hi:.3}</text><text x="{}" y="{}" text-anchor="end">{lo:.3}</text><text x="{x0}" y="{}">epoch 1</text><text x="{}" y="{}" text-anchor="end">epoch {n}</text>"##,
            y0 - 8.0,
            x0 - 4.0,
            y0 + 10.0,
            x0 - 4.0,
            y0 + ph,
            y0 + ph + 14.0,
            x0 + pw,
            y0 + ph + 14.0
        );
        for (k, (label, f)) in series.iter().enumerate() {
            let (color, dash) = if k == 0 {
                ("#377eb8", "")
            } else {
                ("#e41a1c", r#" stroke-dasharray="5,3""#)
            };
            let pts: Vec<String> = history
                .iter()
                .enumerate()
                .filter(|(_, m)| f(m).is_finite())
                .map(|(e, m)| format!("{:.2},{:.2}", xp(e), yp(f(m))))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                if let Some((x, y)) = p.split_once(',') {
                    let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="2" fill="{color}"/>"#);
                }
            }
            let ly = y0 + ph + 30.0;
            let lx = x0 + k as f64 * 90.0;
            let _ = write!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{label}</text>"#,
                lx + 24.0,
                lx + 28.0,
                ly + 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
