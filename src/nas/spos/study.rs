//! The ranking study (`nasrs study ranking`): how well a trained supernet ranks
//! architectures, against the ranking stand-alone training gives them. K architectures are
//! drawn uniformly (distinct; spread over the space, not the K best); each is trained from
//! scratch for E epochs on the training half of the data and scored on the other half (the
//! ground truth); then, for each seed and each supernet training choice (uniform or fair
//! sampling), a supernet trains on the same half and scores the same K architectures on the
//! same validation half, with and without BN recalibration. Each (variant, seed) gives a
//! Kendall tau and a Spearman rho against the ground truth; the summary is their mean and
//! standard deviation over seeds, per variant.
//!
//! The ground truth is itself noisy (a short training run on a small validation split): with
//! two or more stand-alone seeds the study also reports the rank correlation between the first
//! two seeds' accuracies, the ceiling any supernet's correlation should be read against.
//!
//! Everything is seeded: the same configuration gives the same study on the CPU.

use super::supernet::{PathOf, Supernet, SupernetConfig};
use super::{score_path, PathSampler, Sampling, SposHyper, SposTrainer};
use crate::autograd::Tape;
use crate::backend::Backend;
use crate::data::{split_indices, Augment, BatchIterator, Dataset, SequentialBatches};
use crate::error::{Error, Result};
use crate::nas::classifier::{Classifier, NetworkConfig};
use crate::nas::darts::DeviceBatch;
use crate::nas::ranking::{kendall_tau, spearman_rho};
use crate::nas::space::SearchSpace;
use crate::nas::train_run::Trainer;
use crate::nas::Mode;
use crate::optim::cosine_lr;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Instant;

/// Everything that determines a ranking study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankingStudyConfig<M> {
    pub space: String,
    pub dataset: String,
    /// The supernet's sizes; the stand-alone networks have the same.
    pub model: M,
    /// K: architectures ranked.
    pub archs: usize,
    /// Seed of the architectures drawn and of their (first) stand-alone training.
    pub arch_seed: u64,
    /// Stand-alone trainings per architecture (seeds `arch_seed`, `arch_seed + 1`, ...): the
    /// ground truth is their mean accuracy.
    #[serde(default = "one")]
    pub standalone_seeds: usize,
    /// One supernet per seed and sampling.
    pub seeds: Vec<u64>,
    pub samplings: Vec<Sampling>,
    pub supernet_epochs: usize,
    pub standalone_epochs: usize,
    pub batch: usize,
    pub train_limit: Option<usize>,
    pub hyper: SposHyper,
    /// Training batches of BN recalibration in the recalibrated variants (0: only the
    /// supernet's own statistics are measured).
    pub recalibration_batches: usize,
}

fn one() -> usize {
    1
}

/// One architecture of the study and its ground truth.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchResult {
    /// The architecture in its space's JSON form.
    pub arch: serde_json::Value,
    /// Validation accuracy after stand-alone training (the mean over its seeds).
    pub standalone: f64,
    /// The accuracy of each stand-alone seed.
    pub standalone_runs: Vec<f64>,
    pub standalone_seconds: f64,
}

/// One supernet (seed, sampling) scored with or without recalibration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantRun {
    pub variant: String,
    pub seed: u64,
    /// The supernet's score of each architecture, in the order of [`RankingStudy::archs`].
    pub scores: Vec<f64>,
    /// Against the stand-alone accuracies (NaN, written null, when either is constant).
    pub kendall_tau: f64,
    pub spearman_rho: f64,
    pub supernet_seconds: f64,
}

/// Mean and standard deviation (over seeds) of one variant's rank correlations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantSummary {
    pub variant: String,
    pub seeds: usize,
    pub tau_mean: f64,
    pub tau_std: f64,
    pub rho_mean: f64,
    pub rho_std: f64,
}

/// A study's result (written as `study.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "M: Serialize + serde::de::DeserializeOwned")]
pub struct RankingStudy<M> {
    pub config: RankingStudyConfig<M>,
    pub archs: Vec<ArchResult>,
    pub runs: Vec<VariantRun>,
    pub summary: Vec<VariantSummary>,
    /// Kendall tau and Spearman rho between the first two stand-alone seeds (with two or
    /// more): how well the ground truth ranks itself.
    pub standalone_tau: Option<f64>,
    pub standalone_rho: Option<f64>,
    pub seconds: f64,
}

/// The name of a variant: its sampling and whether it recalibrates.
pub fn variant_name(sampling: Sampling, recalibration_batches: usize) -> String {
    let s = match sampling {
        Sampling::Uniform => "uniform",
        Sampling::Fair => "fair",
    };
    match recalibration_batches {
        0 => format!("{s}, supernet BN statistics"),
        n => format!("{s}, BN recalibrated on {n} batches"),
    }
}

/// Runs the study on `data` (its first `train_limit` samples, split in halves); `log`
/// receives one line per finished piece of work.
pub fn ranking_study<B: Backend, M: SupernetConfig>(
    be: &B,
    cfg: &RankingStudyConfig<M>,
    data: &Dataset,
    log: &mut dyn FnMut(&str),
) -> Result<RankingStudy<M>> {
    let started = Instant::now();
    validate(cfg)?;
    let data = data.first(cfg.train_limit)?;
    cfg.model.check_image_size(data.h, data.w)?;
    let (train_idx, val_idx) = split_indices(data.n, 0.5)?;
    if train_idx.len() < cfg.batch || val_idx.is_empty() {
        return Err(Error::invalid(
            "--batch",
            format!(
                "{} does not fit the training half of the data ({} samples)",
                cfg.batch,
                train_idx.len()
            ),
        ));
    }
    let mut val = Vec::new();
    for b in SequentialBatches::over(&data, val_idx, cfg.batch)? {
        val.push(DeviceBatch::from_batch(be, &b, data.classes)?);
    }
    let space = M::Space::default();
    let archs = draw_distinct(
        &space,
        cfg.archs,
        &mut Rng::fork(cfg.arch_seed, "ranking archs"),
    )?;

    let mut results = Vec::with_capacity(archs.len());
    for (i, a) in archs.iter().enumerate() {
        let t = Instant::now();
        let runs = (0..cfg.standalone_seeds as u64)
            .map(|j| {
                let seed = cfg.arch_seed.wrapping_add(j);
                standalone_accuracy(be, cfg, a, seed, &data, &train_idx, &val)
            })
            .collect::<Result<Vec<f64>>>()?;
        let acc = runs.iter().sum::<f64>() / runs.len() as f64;
        let seconds = t.elapsed().as_secs_f64();
        log(&format!(
            "stand-alone {}/{}: {acc:.4} in {seconds:.0} s  {}",
            i + 1,
            archs.len(),
            space.to_string(a)
        ));
        results.push(ArchResult {
            arch: space.to_json(a),
            standalone: acc,
            standalone_runs: runs,
            standalone_seconds: seconds,
        });
    }
    let truth: Vec<f64> = results.iter().map(|r| r.standalone).collect();
    let (standalone_tau, standalone_rho) = if cfg.standalone_seeds >= 2 {
        let first: Vec<f64> = results.iter().map(|r| r.standalone_runs[0]).collect();
        let second: Vec<f64> = results.iter().map(|r| r.standalone_runs[1]).collect();
        let tau = kendall_tau(&first, &second)?;
        let rho = spearman_rho(&first, &second)?;
        log(&format!(
            "stand-alone seed against seed: tau {tau:.3}, rho {rho:.3}"
        ));
        (Some(tau), Some(rho))
    } else {
        (None, None)
    };

    let mut runs = Vec::new();
    for &sampling in &cfg.samplings {
        for &seed in &cfg.seeds {
            let t = Instant::now();
            let (mut net, recal) = train_supernet(be, cfg, sampling, seed, &data, &train_idx)?;
            let supernet_seconds = t.elapsed().as_secs_f64();
            let mut recals = vec![0];
            if cfg.recalibration_batches > 0 {
                recals.push(cfg.recalibration_batches);
            }
            for n in recals {
                let scores = archs
                    .iter()
                    .map(|a| score_path(be, &mut net, a, &recal[..n], &val))
                    .collect::<Result<Vec<f64>>>()?;
                let run = VariantRun {
                    variant: variant_name(sampling, n),
                    seed,
                    kendall_tau: kendall_tau(&scores, &truth)?,
                    spearman_rho: spearman_rho(&scores, &truth)?,
                    scores,
                    supernet_seconds,
                };
                log(&format!(
                    "supernet seed {seed} ({}): tau {:.3}, rho {:.3} ({supernet_seconds:.0} s)",
                    run.variant, run.kendall_tau, run.spearman_rho
                ));
                runs.push(run);
            }
        }
    }
    let summary = summarize(&runs);
    Ok(RankingStudy {
        config: cfg.clone(),
        archs: results,
        runs,
        summary,
        standalone_tau,
        standalone_rho,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn validate<M>(cfg: &RankingStudyConfig<M>) -> Result<()> {
    for (flag, v) in [
        ("--archs", cfg.archs.saturating_sub(1)),
        ("--seeds", cfg.seeds.len()),
        ("--standalone-seeds", cfg.standalone_seeds),
        ("--sampling", cfg.samplings.len()),
        ("--supernet-epochs", cfg.supernet_epochs),
        ("--standalone-epochs", cfg.standalone_epochs),
        ("--batch", cfg.batch),
    ] {
        if v == 0 {
            let least = if flag == "--archs" { 2 } else { 1 };
            return Err(Error::invalid(flag, format!("must be at least {least}")));
        }
    }
    Ok(())
}

/// `k` distinct architectures drawn uniformly (an error when the space holds fewer).
fn draw_distinct<S: SearchSpace>(space: &S, k: usize, rng: &mut Rng) -> Result<Vec<S::Arch>> {
    if space.size() < k as u128 {
        return Err(Error::invalid(
            "--archs",
            format!("{k}: the {} space holds {}", space.name(), space.size()),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(k);
    while out.len() < k {
        let a = space.sample(rng);
        if seen.insert(a.clone()) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Trains `arch`'s stand-alone network from scratch (the space's recipe, cosine schedule;
/// weights and batch order drawn from `seed`) and returns its validation accuracy in eval
/// mode.
fn standalone_accuracy<B: Backend, M: SupernetConfig>(
    be: &B,
    cfg: &RankingStudyConfig<M>,
    arch: &<M::Space as SearchSpace>::Arch,
    seed: u64,
    data: &Dataset,
    train_idx: &[usize],
    val: &[DeviceBatch<B>],
) -> Result<f64> {
    let model = cfg.model.standalone(arch);
    let net = model.build(be, seed)?;
    let hyper = cfg.model.standalone_hyper();
    let (lr_max, lr_min) = (hyper.lr_max, hyper.lr_min);
    let mut trainer = Trainer::new(be.clone(), net, hyper)?;
    let mut order = BatchIterator::new(
        train_idx.to_vec(),
        Rng::fork(seed, "stand-alone order"),
        Augment::none(),
    )?;
    let mut drop_rng = Rng::fork(seed, "drop path");
    let steps = order.steps_per_epoch(cfg.batch);
    let epochs = cfg.standalone_epochs;
    for epoch in 0..epochs {
        let lr = cosine_lr(lr_max, lr_min, epoch, epochs);
        for _ in 0..steps {
            let b = order.next_batch(data, cfg.batch)?;
            let batch = DeviceBatch::from_batch(be, &b, data.classes)?;
            trainer.step(&batch, lr, 0.0, &mut drop_rng)?;
        }
    }
    let mut net = trainer.net;
    let (mut correct, mut count) = (0usize, 0usize);
    for batch in val {
        let mut tape = Tape::new(be.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.images.clone());
        let (logits, _) = net.run(&mut tape, x, Mode::EVAL, 0.0, &mut drop_rng)?;
        correct += tape.count_correct(logits, &batch.labels)?.to_f64(be)?[0].round() as usize;
        count += batch.len();
    }
    Ok(correct as f64 / count.max(1) as f64)
}

/// A trained supernet and its recalibration batches.
type Trained<B, M> = (<M as SupernetConfig>::Net<B>, Vec<DeviceBatch<B>>);

/// Trains a supernet (seed `seed`, paths drawn by `sampling`) and returns it with the
/// recalibration batches (the first batches of the training order after training, as a SPOS
/// run takes them).
fn train_supernet<B: Backend, M: SupernetConfig>(
    be: &B,
    cfg: &RankingStudyConfig<M>,
    sampling: Sampling,
    seed: u64,
    data: &Dataset,
    train_idx: &[usize],
) -> Result<Trained<B, M>> {
    let net = cfg.model.build(be, seed)?;
    let mut trainer = SposTrainer::new(be.clone(), net, cfg.hyper.clone())?;
    let mut order = BatchIterator::new(
        train_idx.to_vec(),
        Rng::fork(seed, "train order"),
        Augment::none(),
    )?;
    let mut sampler = PathSampler::new(sampling, seed);
    let space = trainer.net.space();
    let steps = order.steps_per_epoch(cfg.batch);
    let epochs = cfg.supernet_epochs;
    for epoch in 0..epochs {
        let lr = cosine_lr(cfg.hyper.lr_max, cfg.hyper.lr_min, epoch, epochs);
        for _ in 0..steps {
            let b = order.next_batch(data, cfg.batch)?;
            let batch = DeviceBatch::from_batch(be, &b, data.classes)?;
            let path: PathOf<B, M::Net<B>> = sampler.next(&space, &|_| true)?;
            trainer.step(&batch, &path, lr)?;
        }
    }
    let mut recal = Vec::with_capacity(cfg.recalibration_batches);
    for _ in 0..cfg.recalibration_batches {
        let b = order.next_batch(data, cfg.batch)?;
        recal.push(DeviceBatch::from_batch(be, &b, data.classes)?);
    }
    Ok((trainer.net, recal))
}

/// Mean and (sample) standard deviation of each variant's correlations over its seeds, in
/// the order variants first appear.
fn summarize(runs: &[VariantRun]) -> Vec<VariantSummary> {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.variant.as_str()) {
            names.push(&r.variant);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let of: Vec<&VariantRun> = runs.iter().filter(|r| r.variant == name).collect();
            let (tau_mean, tau_std) = mean_std(of.iter().map(|r| r.kendall_tau));
            let (rho_mean, rho_std) = mean_std(of.iter().map(|r| r.spearman_rho));
            VariantSummary {
                variant: name.to_string(),
                seeds: of.len(),
                tau_mean,
                tau_std,
                rho_mean,
                rho_std,
            }
        })
        .collect()
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}
