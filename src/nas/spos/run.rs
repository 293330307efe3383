//! A SPOS run on disk, on any space with a supernet ([`SupernetConfig`]: DARTS, NB201):
//! train the supernet one sampled path per batch for the
//! epochs asked, then search it. The run folder, each file written atomically:
//! - `config.json`: every option of the run;
//! - `metrics.jsonl`: one line per training epoch (loss, accuracy, learning rate, seconds);
//! - `checkpoint.safetensors`: weights, BN statistics, momentum and (in its metadata) the
//!   data iterator, the path sampler and the metrics, so `--resume` continues exactly where
//!   the last finished epoch left off (bitwise on the CPU);
//! - after the search: `search.jsonl` (every architecture scored, in query order, with its
//!   generation and score), `best.json` (the best architecture in the space's JSON form: the
//!   DARTS genotype `nasrs train --genotype` reads, or `{"space": "nb201", "arch": ...}`),
//!   `genotype.py` (DARTS) or `arch.txt` (NB201: the string `nasrs train --space nb201
//!   --arch` reads), `search.svg` (score against generation).
//!
//! The search is deterministic given the trained supernet and the seed, so a run stopped
//! during the search simply searches again on `--resume`.

use super::constraint::{PathLimits, PathMeter};
use super::supernet::{Supernet, SupernetConfig};
use super::{
    best, evolution_search, random_search, score_path, EvolutionConfig, PathSampler, Sampling,
    SposHyper, SposTrainer,
};
use crate::backend::Backend;
use crate::data::{
    split_indices, Augment, BatchIterator, BatchIteratorState, Dataset, SequentialBatches,
};
use crate::error::{Error, Result};
use crate::io::{
    atomic_write, atomic_write_json, check_resume_options, load_safetensors, read_json_meta,
    save_safetensors_with_i64, write_jsonl,
};
use crate::nas::darts::{DeviceBatch, StepStats};
use crate::nas::multi_trial::StrategyConfig;
use crate::nas::progress::{Progress, Silent};
use crate::nas::run_dir::{RunDir, Start};
use crate::nas::search_model::SearchConfig;
use crate::nas::space::SearchSpace;
use crate::nas::spos::Scored;
use crate::optim::cosine_lr;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// How the trained supernet is searched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SposSearch {
    Evolution(EvolutionConfig),
    /// Random search with weight sharing: this many architectures.
    Random(usize),
    /// A multi-trial strategy (aging evolution, REINFORCE, ...) with the supernet as its
    /// evaluator: `budget` queries drawn with `seed` (`nasrs search evolution|reinforce
    /// --evaluator supernet`; the run's own seed fixed the supernet and the data split).
    Strategy {
        strategy: StrategyConfig,
        budget: usize,
        seed: u64,
    },
}

/// Which part of a SPOS run a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Train the supernet (or the epochs left), then search it.
    All,
    /// Train the supernet only.
    Train,
    /// Search the supernet a finished training phase left in the run folder (again, with
    /// other search settings if they changed).
    Search,
}

impl Phase {
    pub fn parse(s: &str) -> Result<Phase> {
        match s {
            "all" => Ok(Phase::All),
            "train" => Ok(Phase::Train),
            "search" => Ok(Phase::Search),
            other => Err(Error::invalid(
                "--phase",
                format!("'{other}' (expected all, train or search)"),
            )),
        }
    }
}

/// Everything that determines a SPOS run on the space of `M`'s supernet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "M: SupernetConfig")]
pub struct SposRunConfig<M = SearchConfig> {
    /// The space (`darts`, `nb201`): a checkpoint of another space is refused by name.
    pub space: String,
    pub dataset: String,
    pub model: M,
    pub hyper: SposHyper,
    pub sampling: Sampling,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// Fraction of the training set the supernet trains on; the rest scores architectures.
    pub train_portion: f64,
    pub train_limit: Option<usize>,
    pub augment: bool,
    pub search: SposSearch,
    /// Training batches the BN statistics of each scored path are recalibrated on (0: none).
    pub recalibration_batches: usize,
    /// Train and search only paths whose weight count and forward FLOPs lie in these
    /// inclusive ranges (SPOS's constrained sampling).
    #[serde(default)]
    pub limits: PathLimits,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SposEpoch {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub seconds: f64,
}

/// One line of `search.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchRecord {
    pub query: usize,
    pub generation: usize,
    pub score: f64,
    /// The architecture in its space's JSON form.
    pub arch: serde_json::Value,
    /// Its weight count and forward FLOPs (one image), as the limits measure them.
    pub weights: u64,
    pub flops: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "M: SupernetConfig")]
struct Meta<M> {
    config: SposRunConfig<M>,
    train_iter: BatchIteratorState,
    sampler: PathSampler,
    history: Vec<SposEpoch>,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const RUN_FILES: &[&str] = &[
    "config.json",
    "metrics.jsonl",
    "search.jsonl",
    "best.json",
    "genotype.py",
    "arch.txt",
    "search.svg",
    CHECKPOINT,
];

/// Runs (or resumes) a SPOS search in the folder `out`.
pub struct SposRun<B: Backend, M: SupernetConfig = SearchConfig> {
    pub backend: B,
    pub config: SposRunConfig<M>,
    pub out: PathBuf,
}

struct State<B: Backend, M: SupernetConfig> {
    trainer: SposTrainer<B, M::Net<B>>,
    train_iter: BatchIterator,
    sampler: PathSampler,
    history: Vec<SposEpoch>,
    val_idx: Vec<usize>,
}

impl<B: Backend, M: SupernetConfig> SposRun<B, M> {
    pub fn new(backend: B, config: SposRunConfig<M>, out: impl Into<PathBuf>) -> Result<Self> {
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
        match &config.search {
            SposSearch::Evolution(e) => e.validate()?,
            SposSearch::Strategy {
                strategy, budget, ..
            } => {
                strategy.validate()?;
                if *budget == 0 {
                    return Err(Error::invalid("--budget", "must be at least 1 query"));
                }
            }
            SposSearch::Random(_) => {}
        }
        Ok(SposRun {
            backend,
            config,
            out: out.into(),
        })
    }

    fn fresh(&self, data: &Dataset) -> Result<State<B, M>> {
        let c = &self.config;
        let net = c.model.build(&self.backend, c.seed)?;
        let trainer = SposTrainer::new(self.backend.clone(), net, c.hyper.clone())?;
        let (train_idx, val_idx) = split_indices(data.n, c.train_portion)?;
        if train_idx.len() < c.batch || val_idx.is_empty() {
            return Err(Error::invalid(
                "--batch",
                format!(
                    "{} does not fit the training part of the data ({} samples; {} to score on)",
                    c.batch,
                    train_idx.len(),
                    val_idx.len()
                ),
            ));
        }
        let augment = if c.augment {
            Augment::cifar(None)
        } else {
            Augment::none()
        };
        Ok(State {
            trainer,
            train_iter: BatchIterator::new(train_idx, Rng::fork(c.seed, "train order"), augment)?,
            sampler: PathSampler::new(c.sampling, c.seed),
            history: Vec::new(),
            val_idx,
        })
    }

    fn save(&self, st: &State<B, M>) -> Result<()> {
        let be = &self.backend;
        let (mut t, counters) = st.trainer.net.state_dict(be)?;
        st.trainer
            .opt
            .state
            .export(be, "optimizer.momentum_buffer.", &mut t)?;
        let meta = Meta {
            config: self.config.clone(),
            train_iter: st.train_iter.state(),
            sampler: st.sampler.clone(),
            history: st
                .history
                .iter()
                .map(|m| SposEpoch {
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
            HashMap::from([
                ("nasrs.spos".to_string(), json),
                ("nasrs.spos.space".to_string(), self.config.space.clone()),
            ]),
        )
    }

    fn load(&self, dir: &RunDir, data: &Dataset) -> Result<State<B, M>> {
        let path = dir.checkpoint();
        let (tensors, meta) = load_safetensors(&path)?;
        let space = meta.get("nasrs.spos.space").map_or("darts", |s| s.as_str());
        if space != self.config.space {
            return Err(Error::bad_file(
                &path,
                format!(
                    "is a SPOS run on the {space} space, not on {}; resume it with --space {space}",
                    self.config.space
                ),
            ));
        }
        let meta: Meta<M> = read_json_meta(&meta, "nasrs.spos", "SPOS", &path)?;
        let mut expected = meta.config.clone();
        expected.epochs = self.config.epochs;
        expected.search = self.config.search.clone();
        expected.recalibration_batches = self.config.recalibration_batches;
        check_resume_options(&expected, &self.config, &path)?;
        let mut st = self.fresh(data)?;
        let be = &self.backend;
        st.trainer
            .net
            .load_state_dict(be, &tensors, &["optimizer."], &path)?;
        st.trainer
            .opt
            .state
            .import(be, "optimizer.momentum_buffer.", &tensors, &path)?;
        st.train_iter = BatchIterator::from_state(meta.train_iter)?;
        st.sampler = meta.sampler;
        st.history = meta.history;
        for (m, s) in st.history.iter_mut().zip(dir.epoch_seconds()) {
            m.seconds = s.unwrap_or(0.0);
        }
        Ok(st)
    }

    /// Trains the remaining epochs, then searches; returns the best architecture found.
    pub fn run(
        &self,
        data: &Dataset,
        start: Start,
    ) -> Result<Scored<<M::Space as SearchSpace>::Arch>> {
        self.run_phase(data, start, Phase::All, &mut Silent)?
            .ok_or_else(|| Error::invalid("search", "no architecture was scored"))
    }

    /// Does `phase` of the run: the best architecture found, or None after training only.
    /// The search phase resumes from the folder's checkpoint, which must have finished
    /// training.
    pub fn run_phase(
        &self,
        data: &Dataset,
        start: Start,
        phase: Phase,
        progress: &mut dyn Progress<StepStats, SposEpoch>,
    ) -> Result<Option<Scored<<M::Space as SearchSpace>::Arch>>> {
        let m = &self.config.model;
        if data.c != m.in_channels() || data.classes > m.classes() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} has {} channels and {} classes; the supernet was configured for {} and {}",
                    data.name,
                    data.c,
                    data.classes,
                    m.in_channels(),
                    m.classes()
                ),
            ));
        }
        m.check_image_size(data.h, data.w)?;
        let data = data.first(self.config.train_limit)?;
        let start = if phase == Phase::Search {
            Start::Resume
        } else {
            start
        };
        let (mut dir, resume) = RunDir::open(&self.out, RUN_FILES, CHECKPOINT, start)?;
        if phase == Phase::Search && !resume {
            return Err(Error::invalid(
                "--phase search",
                format!(
                    "{} holds no trained supernet; run --phase train (or all) first",
                    self.out.display()
                ),
            ));
        }
        let mut st = if resume {
            self.load(&dir, &data)?
        } else {
            self.fresh(&data)?
        };
        let space = M::Space::default();
        let c = &self.config;
        let meter = PathMeter::new(&c.model, c.limits.clone(), data.h, data.w)?;
        if phase == Phase::Search && st.history.len() < c.epochs {
            return Err(Error::invalid(
                "--phase search",
                format!(
                    "the supernet in {} has trained {} of its {} epochs; finish --phase train \
                     first",
                    self.out.display(),
                    st.history.len(),
                    c.epochs
                ),
            ));
        }
        let steps = st.train_iter.steps_per_epoch(c.batch);
        for epoch in st.history.len()..c.epochs {
            let started = Instant::now();
            let lr = cosine_lr(c.hyper.lr_max, c.hyper.lr_min, epoch, c.epochs);
            let mut sum = StepStats::default();
            progress.epoch_start(epoch, c.epochs, steps);
            for step in 0..steps {
                let host = st.train_iter.next_batch(&data, c.batch)?;
                let batch = DeviceBatch::from_batch(&self.backend, &host, data.classes)?;
                let path = st.sampler.next(&space, &|a| meter.accepts(a))?;
                let s = st.trainer.step(&batch, &path, lr).map_err(|e| match e {
                    Error::NonFinite(what) => Error::NonFinite(format!(
                        "{what} at epoch {epoch} step {step}{}",
                        dir.kept_note(st.history.len())
                    )),
                    e => e,
                })?;
                sum.loss += s.loss * s.count as f64;
                sum.correct += s.correct;
                sum.count += s.count;
                progress.step(step, &s, sum.correct as f64 / sum.count.max(1) as f64);
            }
            st.history.push(SposEpoch {
                epoch,
                lr,
                train_loss: sum.loss / sum.count.max(1) as f64,
                train_acc: sum.correct as f64 / sum.count.max(1) as f64,
                seconds: started.elapsed().as_secs_f64(),
            });
            self.save(&st)?;
            atomic_write_json(&self.out.join("config.json"), &self.config)?;
            write_jsonl(&self.out.join("metrics.jsonl"), &st.history)?;
            dir.epoch_saved(&["config.json", "metrics.jsonl", CHECKPOINT])?;
            if let Some(m) = st.history.last() {
                progress.epoch_end(m);
            }
        }
        if phase == Phase::Train {
            return Ok(None);
        }
        self.search(&mut st, &data, &space, &meter).map(Some)
    }

    fn search(
        &self,
        st: &mut State<B, M>,
        data: &Dataset,
        space: &M::Space,
        meter: &PathMeter<M>,
    ) -> Result<Scored<<M::Space as SearchSpace>::Arch>> {
        let be = &self.backend;
        let c = &self.config;
        let mut val = Vec::new();
        for b in SequentialBatches::over(data, st.val_idx.clone(), c.batch)? {
            val.push(DeviceBatch::from_batch(be, &b, data.classes)?);
        }
        // Recalibration batches: the first ones of a fixed order of the training part.
        let mut recal_iter = BatchIterator::from_state(st.train_iter.state())?;
        let mut recal = Vec::new();
        for _ in 0..c.recalibration_batches {
            let b = recal_iter.next_batch(data, c.batch)?;
            recal.push(DeviceBatch::from_batch(be, &b, data.classes)?);
        }
        let accept = |a: &<M::Space as SearchSpace>::Arch| meter.accepts(a);
        let net = &mut st.trainer.net;
        let mut score = |a: &<M::Space as SearchSpace>::Arch| score_path(be, net, a, &recal, &val);
        let mut rng = Rng::fork(c.seed, "spos search");
        let history = match &c.search {
            SposSearch::Evolution(e) => evolution_search(space, e, &mut rng, &accept, &mut score)?,
            SposSearch::Random(n) => random_search(space, *n, &mut rng, &accept, &mut score)?,
            SposSearch::Strategy {
                strategy,
                budget,
                seed,
            } => {
                let mut rng = Rng::fork(*seed, "spos search");
                strategy.search(space, *budget, &mut rng, &accept, &mut score)?
            }
        };
        let records = history
            .iter()
            .map(|s| {
                let (weights, flops) = meter.measure(&s.arch)?;
                Ok(SearchRecord {
                    query: s.query,
                    generation: s.generation,
                    score: s.score,
                    arch: space.to_json(&s.arch),
                    weights,
                    flops,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        write_jsonl(&self.out.join("search.jsonl"), &records)?;
        // The configuration that produced these search files (a search phase may have
        // changed the search settings).
        atomic_write_json(&self.out.join("config.json"), &self.config)?;
        let top = best(&history)
            .cloned()
            .ok_or_else(|| Error::invalid("search", "no architecture was scored"))?;
        atomic_write_json(&self.out.join("best.json"), &space.to_json(&top.arch))?;
        for (name, text) in M::arch_files(&top.arch) {
            atomic_write(&self.out.join(name), text.as_bytes())?;
        }
        atomic_write(
            &self.out.join("search.svg"),
            crate::nas::report::score_scatter_svg(
                "SPOS search: validation accuracy (inherited weights) per generation",
                &history
                    .iter()
                    .map(|s| (s.generation as f64, s.score))
                    .collect::<Vec<_>>(),
            )
            .as_bytes(),
        )?;
        Ok(top)
    }
}
