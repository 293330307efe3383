//! Training a classifier network from scratch (the DARTS paper's `train.py` for a DARTS
//! genotype's evaluation network, NAS-Bench-201's recipe for an NB201 cell's network: any
//! [`NetworkConfig`]) and evaluating it, with a run folder kept up to date after every epoch,
//! each file written atomically:
//! - `config.json`: every option of the run (genotype or arch included);
//! - `metrics.jsonl`: one line per epoch (train / test loss and accuracy, learning rate,
//!   drop-path probability, seconds);
//! - `curves.svg`: the learning curves;
//! - `checkpoint.safetensors`: the PyTorch `state_dict` of the network plus the SGD momentum
//!   buffers (`optimizer.momentum_buffer.<name>`), and in its metadata the network's shape
//!   (`nasrs.model`) and the training state (`nasrs.train`: data order, drop-path generator,
//!   metrics so far), and for a network other than DARTS's its space (`nasrs.space`), so
//!   `resume` continues exactly (bitwise on the CPU) and refuses another space's run;
//! - `model.safetensors` at the end: the `state_dict` alone (PyTorch's
//!   `load_state_dict(strict=True)` takes it as is) plus `nasrs.model`.
//!
//! Each step: loss = CE(logits) + aux_weight * CE(aux logits), SGD with momentum (Nesterov's
//! if asked) and weight decay, gradients clipped to norm 5 (unless `grad_clip` is 0), cosine
//! learning rate per epoch, drop-path probability `drop_path * epoch / epochs`. A NaN or
//! infinite loss, or an epoch whose mean loss passes [`DIVERGED_LOSS`], stops the run with an
//! error naming the epoch and keeps the last good checkpoint.
//!
//! The folder follows [`RunDir`]'s rules; wall-clock times live in `metrics.jsonl` only, so
//! a resumed run writes the checkpoint bytes an uninterrupted one does.

use super::classifier::{Classifier, NetworkConfig};
use super::darts::DeviceBatch;
use super::eval_model::{EvalConfig, EvalNetwork};
use super::modules::Mode;
use super::report::learning_curves_svg;
use super::run_dir::{RunDir, Start};
pub use super::search_run::DIVERGED_LOSS;
use crate::autograd::Tape;
use crate::backend::{norm_scalars, Backend, Element, ScalarRef};
use crate::data::{Augment, BatchIterator, BatchIteratorState, Dataset};
use crate::error::{Error, Result};
use crate::io::{
    atomic_write, atomic_write_json, check_resume_options, load_safetensors, read_json_meta,
    write_jsonl,
};
use crate::optim::{cosine_lr, grad_norm_scalars, Sgd};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const MODEL: &str = "model.safetensors";
const TRAIN_META: &str = "nasrs.train";
use super::evaluate::{evaluate, file_space, save_network_at, MOMENTUM_PREFIX};
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

/// Training hyper-parameters; the default is the DARTS paper's (its `train.py` defaults),
/// [`TrainHyper::nb201`] NAS-Bench-201's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainHyper {
    pub lr_max: f64,
    /// Where the cosine schedule ends (0 in DARTS).
    pub lr_min: f64,
    pub momentum: f64,
    /// Nesterov momentum (PyTorch's `nesterov=True`). Written to files only when on, so
    /// DARTS runs keep their bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 = no clipping.
    pub grad_clip: f64,
    /// Final drop-path probability; epoch e uses `drop_path * e / epochs`.
    pub drop_path: f64,
    /// Weight of the auxiliary head's loss.
    pub auxiliary_weight: f64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TrainHyper {
    /// NAS-Bench-201's recipe: SGD lr 0.1 cosine to 0, Nesterov momentum 0.9, weight decay
    /// 5e-4, no gradient clipping, no drop-path, no auxiliary head.
    pub fn nb201() -> Self {
        TrainHyper {
            lr_max: 0.1,
            lr_min: 0.0,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            grad_clip: 0.0,
            drop_path: 0.0,
            auxiliary_weight: 0.0,
        }
    }
}

impl Default for TrainHyper {
    fn default() -> Self {
        TrainHyper {
            lr_max: 0.025,
            lr_min: 0.0,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            drop_path: 0.2,
            auxiliary_weight: 0.4,
        }
    }
}

/// Everything that determines a training run (saved as `config.json` and in checkpoints):
/// by default of a DARTS evaluation network, `TrainRunConfig<Nb201Config>` of an NB201 one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRunConfig<M = EvalConfig> {
    pub dataset: String,
    pub model: M,
    pub hyper: TrainHyper,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    pub augment: Augment,
    /// Use only the first N training / test samples (quick runs); None = all.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// The side the images were resized to before training and testing (`--resolution`);
    /// None: the dataset's own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<usize>,
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
pub struct Trainer<B: Backend, N: Classifier<B> = EvalNetwork<B>> {
    pub backend: B,
    pub net: N,
    pub hyper: TrainHyper,
    pub opt: Sgd<B>,
}

impl<B: Backend, N: Classifier<B>> Trainer<B, N> {
    pub fn new(backend: B, net: N, hyper: TrainHyper) -> Result<Self> {
        if !(0.0..1.0).contains(&hyper.drop_path) {
            return Err(Error::invalid(
                "--drop-path",
                format!("{} is not in [0, 1)", hyper.drop_path),
            ));
        }
        if hyper.grad_clip.is_nan() || hyper.grad_clip < 0.0 {
            return Err(Error::invalid(
                "gradient clip",
                format!("{} is not 0 (off) or positive", hyper.grad_clip),
            ));
        }
        if hyper.nesterov && (hyper.momentum.is_nan() || hyper.momentum <= 0.0) {
            return Err(Error::invalid(
                "momentum",
                format!(
                    "Nesterov momentum needs a momentum above 0, not {}",
                    hyper.momentum
                ),
            ));
        }
        let opt = Sgd::new(&backend, net.weights(), hyper.momentum, hyper.weight_decay)?
            .with_nesterov(hyper.nesterov);
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
        let gw = grads.params(&self.backend, self.net.weights())?;
        drop(grads);
        tape.clear();
        // Clipping fused into the update; the norm is read only to stop on a NaN.
        let clipping = self.hyper.grad_clip > 0.0;
        let max_norm = if clipping { self.hyper.grad_clip } else { 1.0 };
        let norms = grad_norm_scalars(&self.backend, &gw, max_norm)?;
        let norm = self.backend.download(&norms)?[norm_scalars::NORM].to_f64();
        if !norm.is_finite() {
            return Err(Error::NonFinite(format!("gradient norm is {norm}")));
        }
        let clip = clipping.then_some(ScalarRef {
            buf: &norms,
            index: norm_scalars::CLIP_COEF,
        });
        self.opt
            .step(&self.backend, self.net.weights_mut(), &gw, lr, clip)?;
        Ok(TrainStepStats {
            loss: loss_value,
            aux_loss: aux_value,
            correct,
            count: batch.len(),
        })
    }
}

struct TrainState<B: Backend, M: NetworkConfig> {
    trainer: Trainer<B, M::Network<B>>,
    train_iter: BatchIterator,
    drop_rng: Rng,
    history: Vec<TrainEpochMetrics>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta<M> {
    config: TrainRunConfig<M>,
    epochs_done: usize,
    bn_batches: u64,
    train_iter: BatchIteratorState,
    drop_rng: Rng,
    history: Vec<TrainEpochMetrics>,
}

/// Runs (or resumes) training of `config.model` in the folder `out`.
pub struct TrainRun<B: Backend, M: NetworkConfig = EvalConfig> {
    pub backend: B,
    pub config: TrainRunConfig<M>,
    pub out: PathBuf,
}

impl<B: Backend, M: NetworkConfig> TrainRun<B, M> {
    pub fn new(backend: B, config: TrainRunConfig<M>, out: impl Into<PathBuf>) -> Result<Self> {
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

    fn fresh_state(&self, train_set: &Dataset) -> Result<TrainState<B, M>> {
        let net = self.config.model.build(&self.backend, self.config.seed)?;
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

    fn save_checkpoint(&self, st: &TrainState<B, M>) -> Result<()> {
        let be = &self.backend;
        let mut extra = BTreeMap::new();
        st.trainer
            .opt
            .state
            .export(be, MOMENTUM_PREFIX, &mut extra)?;
        let meta = CheckpointMeta {
            config: self.config.clone(),
            epochs_done: st.history.len(),
            bn_batches: st.trainer.net.bn_batches(),
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
        save_network_at(
            be,
            &st.trainer.net,
            (Some(&self.config.dataset), self.config.resolution),
            &self.out.join(CHECKPOINT),
            extra,
            HashMap::from([(TRAIN_META.to_string(), json)]),
        )
    }

    fn load_checkpoint(&self, dir: &RunDir, train_set: &Dataset) -> Result<TrainState<B, M>> {
        let path = dir.checkpoint();
        let (tensors, meta) = load_safetensors(&path)?;
        let space = file_space(&meta);
        if space != M::SPACE {
            return Err(Error::invalid(
                "--resume",
                format!(
                    "{} holds a {space} network's training run, not a {} one; resume it with \
                     --space {space}",
                    path.display(),
                    M::SPACE
                ),
            ));
        }
        let meta: CheckpointMeta<M> = read_json_meta(&meta, TRAIN_META, "training", &path)?;
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
        st.trainer.net.set_bn_batches(meta.bn_batches);
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

    fn write_outputs(&self, st: &TrainState<B, M>) -> Result<()> {
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
            if ds.c != m.in_channels() || ds.classes > m.classes() {
                return Err(Error::invalid(
                    "dataset",
                    format!(
                        "{} has {} channels and {} classes; the network was configured for {} and {}",
                        ds.name,
                        ds.c,
                        ds.classes,
                        m.in_channels(),
                        m.classes()
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
                train_aux_loss: m.auxiliary().then_some(aux / n),
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
        save_network_at(
            &self.backend,
            &st.trainer.net,
            (Some(&self.config.dataset), self.config.resolution),
            &self.out.join(MODEL),
            BTreeMap::new(),
            HashMap::new(),
        )?;
        Ok(st.history)
    }
}
