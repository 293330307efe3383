//! A DARTS search run on disk: the loop over epochs and steps, and the run folder it keeps
//! up to date after every epoch, each file written atomically:
//! - `config.json`: every option of the run;
//! - `metrics.jsonl`: one line per epoch (losses, accuracies, learning rate, softmax(alpha));
//! - `genotype.json`, `genotype.py`: the cell derived from the current alphas, as JSON and
//!   in the Python `Genotype(...)` form DARTS-family code prints (`--genotype` reads both);
//! - `alphas.svg`, `cells.svg`: the alpha weights over the epochs and the derived cells;
//! - `checkpoint.safetensors`: weights, BN statistics, alphas, both optimizers' states, and
//!   (in its metadata) the data iterators, the metrics so far and the config, so that
//!   `resume` continues exactly where the last finished epoch left off (bitwise on the CPU).
//!
//! The folder follows [`RunDir`]'s rules (no new run over an earlier one without
//! `--force`; `config.json` written with the first checkpoint). Wall-clock times live in
//! `metrics.jsonl` only, so an interrupted and resumed run writes the very checkpoint bytes
//! an uninterrupted one does.
//!
//! A NaN or infinite loss, or an epoch whose mean loss passes [`DIVERGED_LOSS`], stops the
//! run with an error naming the epoch; the last checkpoint (the last good epoch) stays as it
//! was.

use super::darts::{Darts, DartsHyper, DeviceBatch, StepStats};
use super::genotype::Genotype;
use super::run_dir::{RunDir, Start};
use super::search_model::{SearchConfig, SearchNetwork};
use crate::backend::Backend;
use crate::data::{
    split_indices, Augment, BatchIterator, BatchIteratorState, Dataset, SequentialBatches,
};
use crate::error::{Error, Result};
use crate::io::{
    atomic_write, atomic_write_json, check_resume_options, load_safetensors, read_json_meta,
    save_safetensors_with_i64, write_jsonl,
};
use crate::nas::report::{alpha_history_svg, genotype_svg};
use crate::optim::cosine_lr;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Everything that determines a search run (saved as `config.json` and in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchRunConfig {
    pub dataset: String,
    pub model: SearchConfig,
    pub hyper: DartsHyper,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// Fraction of the training set the weights train on; the rest drives the alphas.
    pub train_portion: f64,
    /// Use only the first N training samples (quick runs); None = all.
    pub train_limit: Option<usize>,
    /// Random crop (pad 4) and horizontal flip, as DARTS does on CIFAR.
    pub augment: bool,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub arch_lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// Loss of the validation batches the architecture steps used.
    pub arch_loss: f64,
    /// Loss and accuracy on the whole validation half, eval-mode batch norm.
    pub valid_loss: f64,
    pub valid_acc: f64,
    pub seconds: f64,
    /// softmax(alpha) per edge, normal and reduction cells.
    pub alphas_normal: Vec<Vec<f64>>,
    pub alphas_reduce: Vec<Vec<f64>>,
    pub genotype: Genotype,
}

pub use super::progress::{Progress, Silent};

struct SearchState<B: Backend> {
    darts: Darts<B>,
    train_iter: BatchIterator,
    val_iter: BatchIterator,
    history: Vec<EpochMetrics>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    config: SearchRunConfig,
    epochs_done: usize,
    arch_adam_step: u64,
    train_iter: BatchIteratorState,
    val_iter: BatchIteratorState,
    history: Vec<EpochMetrics>,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Every file a search run writes in its folder.
pub const RUN_FILES: &[&str] = &[
    "config.json",
    "metrics.jsonl",
    "genotype.json",
    "genotype.py",
    "cells.svg",
    "alphas.svg",
    CHECKPOINT,
];
/// A mean cross-entropy past this has diverged: it puts a probability below e^-10000 on
/// the true class (a uniform guess over K classes scores ln K, about 2.3 for 10).
pub const DIVERGED_LOSS: f64 = 1e4;

/// Runs (or resumes) a DARTS search on `train_set` in the folder `out`.
pub struct SearchRun<B: Backend> {
    pub backend: B,
    pub config: SearchRunConfig,
    pub out: PathBuf,
}

impl<B: Backend> SearchRun<B> {
    pub fn new(backend: B, config: SearchRunConfig, out: impl Into<PathBuf>) -> Result<Self> {
        if config.epochs == 0 {
            return Err(Error::invalid("--epochs", "must be at least 1"));
        }
        if config.batch == 0 {
            return Err(Error::invalid("--batch", "must be at least 1"));
        }
        if !(config.train_portion > 0.0 && config.train_portion < 1.0) {
            return Err(Error::invalid(
                "train portion",
                format!("{} is not in (0, 1)", config.train_portion),
            ));
        }
        Ok(SearchRun {
            backend,
            config,
            out: out.into(),
        })
    }

    fn fresh_state(&self, train_set: &Dataset) -> Result<SearchState<B>> {
        let net = SearchNetwork::new(&self.backend, self.config.model.clone(), self.config.seed)?;
        let darts = Darts::new(self.backend.clone(), net, self.config.hyper.clone())?;
        let (train_idx, val_idx) = split_indices(train_set.n, self.config.train_portion)?;
        let augment = if self.config.augment {
            Augment::cifar(None)
        } else {
            Augment::none()
        };
        for (what, idx) in [("training half", &train_idx), ("validation half", &val_idx)] {
            if idx.len() < self.config.batch {
                return Err(Error::invalid(
                    "--batch",
                    format!(
                        "{} is larger than the {what} of the data ({} samples)",
                        self.config.batch,
                        idx.len()
                    ),
                ));
            }
        }
        let train_iter = BatchIterator::new(
            train_idx,
            Rng::fork(self.config.seed, "train order"),
            augment,
        )?;
        let val_iter =
            BatchIterator::new(val_idx, Rng::fork(self.config.seed, "val order"), augment)?;
        Ok(SearchState {
            darts,
            train_iter,
            val_iter,
            history: Vec::new(),
        })
    }

    fn save_checkpoint(&self, st: &SearchState<B>) -> Result<()> {
        let be = &self.backend;
        let net = &st.darts.net;
        // The PyTorch-named state (weights, BN statistics and `num_batches_tracked`, the
        // [edges, ops] alpha tables) plus the per-edge alpha rows the optimizer state is
        // keyed by.
        let (mut t, counters) = net.state_dict(be)?;
        net.arch.export(be, "", &mut t)?;
        st.darts
            .weight_opt
            .state
            .export(be, "optimizer.momentum_buffer.", &mut t)?;
        st.darts
            .arch_opt
            .exp_avg
            .export(be, "arch_optimizer.exp_avg.", &mut t)?;
        st.darts
            .arch_opt
            .exp_avg_sq
            .export(be, "arch_optimizer.exp_avg_sq.", &mut t)?;
        let meta = CheckpointMeta {
            config: self.config.clone(),
            epochs_done: st.history.len(),
            arch_adam_step: st.darts.arch_opt.step,
            train_iter: st.train_iter.state(),
            val_iter: st.val_iter.state(),
            history: st
                .history
                .iter()
                .map(|m| EpochMetrics {
                    seconds: 0.0,
                    ..m.clone()
                })
                .collect(),
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::invalid("checkpoint metadata", e.to_string()))?;
        save_safetensors_with_i64(
            &self.out.join(CHECKPOINT),
            &t,
            &counters,
            HashMap::from([("nasrs.search".to_string(), json)]),
        )
    }

    fn load_checkpoint(&self, dir: &RunDir, train_set: &Dataset) -> Result<SearchState<B>> {
        let path = dir.checkpoint();
        let (tensors, meta) = load_safetensors(&path)?;
        let meta: CheckpointMeta = read_json_meta(&meta, "nasrs.search", "search", &path)?;
        let mut expected = meta.config.clone();
        expected.epochs = self.config.epochs; // more epochs may be asked for on resume
        check_resume_options(&expected, &self.config, &path)?;
        let mut st = self.fresh_state(train_set)?;
        let be = &self.backend;
        let net = &mut st.darts.net;
        net.load_state_dict(be, &tensors, &["optimizer.", "arch_optimizer."], &path)?;
        st.darts
            .weight_opt
            .state
            .import(be, "optimizer.momentum_buffer.", &tensors, &path)?;
        st.darts
            .arch_opt
            .exp_avg
            .import(be, "arch_optimizer.exp_avg.", &tensors, &path)?;
        st.darts
            .arch_opt
            .exp_avg_sq
            .import(be, "arch_optimizer.exp_avg_sq.", &tensors, &path)?;
        st.darts.arch_opt.step = meta.arch_adam_step;
        st.train_iter = BatchIterator::from_state(meta.train_iter)?;
        st.val_iter = BatchIterator::from_state(meta.val_iter)?;
        if meta.history.len() != meta.epochs_done {
            return Err(Error::bad_file(
                &path,
                "metrics history does not match the epochs done",
            ));
        }
        st.history = meta.history;
        for (m, seconds) in st.history.iter_mut().zip(dir.epoch_seconds()) {
            m.seconds = seconds.unwrap_or(0.0);
        }
        Ok(st)
    }

    fn write_outputs(&self, st: &SearchState<B>) -> Result<()> {
        atomic_write_json(&self.out.join("config.json"), &self.config)?;
        write_jsonl(&self.out.join("metrics.jsonl"), &st.history)?;
        if let Some(last) = st.history.last() {
            atomic_write_json(&self.out.join("genotype.json"), &last.genotype)?;
            // The form DARTS-family code (`genotypes.py`) and papers print.
            atomic_write(
                &self.out.join("genotype.py"),
                format!("{}\n", last.genotype.to_python()).as_bytes(),
            )?;
            atomic_write(
                &self.out.join("cells.svg"),
                genotype_svg(&last.genotype).as_bytes(),
            )?;
        }
        let normal: Vec<_> = st.history.iter().map(|m| m.alphas_normal.clone()).collect();
        let reduce: Vec<_> = st.history.iter().map(|m| m.alphas_reduce.clone()).collect();
        atomic_write(
            &self.out.join("alphas.svg"),
            alpha_history_svg(&normal, &reduce, &self.config.model.ops).as_bytes(),
        )
    }

    /// Runs the remaining epochs (all of them unless `start` resumes from a checkpoint) and
    /// returns the final genotype.
    pub fn run(
        &self,
        train_set: &Dataset,
        start: Start,
        progress: &mut dyn Progress<StepStats, EpochMetrics>,
    ) -> Result<Genotype> {
        let m = &self.config.model;
        if train_set.c != m.in_channels || train_set.classes > m.classes {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} has {} channels and {} classes; the network was configured for {} and {}",
                    train_set.name, train_set.c, train_set.classes, m.in_channels, m.classes
                ),
            ));
        }
        m.check_image_size(train_set.h, train_set.w)?;
        let train_set = train_set.first(self.config.train_limit)?;
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
            progress.epoch_start(epoch, self.config.epochs, steps);
            let (mut train_sum, mut arch_sum) = (StepStats::default(), StepStats::default());
            for step in 0..steps {
                let train = st.train_iter.next_batch(&train_set, self.config.batch)?;
                let val = st.val_iter.next_batch(&train_set, self.config.batch)?;
                let (w, a) = st.darts.iteration(&train, &val, lr).map_err(|e| match e {
                    Error::NonFinite(what) => Error::NonFinite(format!(
                        "{what} at epoch {epoch} step {step}{}",
                        dir.kept_note(st.history.len())
                    )),
                    e => e,
                })?;
                train_sum.loss += w.loss * w.count as f64;
                train_sum.correct += w.correct;
                train_sum.count += w.count;
                arch_sum.loss += a.loss * a.count as f64;
                arch_sum.count += a.count;
                progress.step(step, &w, train_sum.correct as f64 / train_sum.count as f64);
            }
            let (valid_loss, valid_acc) =
                self.validate(&mut st, &train_set).map_err(|e| match e {
                    Error::NonFinite(what) => Error::NonFinite(format!(
                        "{what} at epoch {epoch}{}",
                        dir.kept_note(st.history.len())
                    )),
                    e => e,
                })?;
            let net = &st.darts.net;
            let metrics = EpochMetrics {
                epoch,
                lr,
                arch_lr: h.arch_lr,
                train_loss: train_sum.loss / train_sum.count.max(1) as f64,
                train_acc: train_sum.correct as f64 / train_sum.count.max(1) as f64,
                arch_loss: arch_sum.loss / arch_sum.count.max(1) as f64,
                valid_loss,
                valid_acc,
                seconds: started.elapsed().as_secs_f64(),
                alphas_normal: net.alpha_weights(&self.backend, false)?,
                alphas_reduce: net.alpha_weights(&self.backend, true)?,
                genotype: net.genotype(&self.backend)?,
            };
            let diverged = [
                ("training loss", metrics.train_loss),
                ("architecture loss", metrics.arch_loss),
                ("validation loss", metrics.valid_loss),
            ]
            .into_iter()
            .find(|&(_, loss)| loss > DIVERGED_LOSS);
            if let Some((what, loss)) = diverged {
                return Err(Error::NonFinite(format!(
                    "the search diverged: mean {what} {loss:e} at epoch {epoch} (over \
                     {DIVERGED_LOSS:e}; try a smaller --lr or --arch-lr){}",
                    dir.kept_note(st.history.len())
                )));
            }
            progress.epoch_end(&metrics);
            st.history.push(metrics);
            self.save_checkpoint(&st)?;
            self.write_outputs(&st)?;
            dir.epoch_saved(RUN_FILES)?;
        }
        self.write_outputs(&st)?;
        st.darts.net.genotype(&self.backend)
    }

    /// Eval-mode loss and accuracy over the whole validation half.
    fn validate(&self, st: &mut SearchState<B>, train_set: &Dataset) -> Result<(f64, f64)> {
        let mut idx = st.val_iter.state().order;
        idx.sort_unstable();
        let mut total = StepStats::default();
        for batch in SequentialBatches::over(train_set, idx, self.config.batch)? {
            let s = st.darts.evaluate(&DeviceBatch::from_batch(
                &self.backend,
                &batch,
                train_set.classes,
            )?)?;
            total.loss += s.loss * s.count as f64;
            total.correct += s.correct;
            total.count += s.count;
        }
        Ok((
            total.loss / total.count.max(1) as f64,
            total.correct as f64 / total.count.max(1) as f64,
        ))
    }
}
