//! A multi-trial search whose queries are training trials (`nasrs search ... --evaluator
//! train`), run by an [`Executor`], as a run folder:
//! - `config.json`: the space, the strategy, the trial template, budget, seed, workers,
//!   executor, retries and early-stopping rule;
//! - `journal.jsonl`: every event as it happens, appended and fsync'd: `proposed` (trial,
//!   arch, its configuration and its epoch budget), `attempt_failed` (a failed attempt that
//!   will be retried), `finished` (the trial's result: `ok` with its score, or `failed` after
//!   its retries) and `state` (after each score the strategy is told: its whole state, see
//!   [`Strategy::snapshot`](super::Strategy::snapshot), and the search's generator);
//! - `trials/<trial>/<attempt>/`: each attempt's `trial.json`, `result.json` and log;
//! - `best.json`: the best finished trial at the largest budget trained (the earliest on a
//!   tie).
//!
//! Which configuration trains for how many epochs is a [`Scheduler`](super::fidelity) 's
//! call (`--early-stop`: every one to the full budget, successive halving, Hyperband, ASHA or
//! the learning-curve rule); a promoted configuration is a new trial of the same architecture
//! with more epochs, and the strategy is told each configuration's score once, at its first
//! budget.
//!
//! Up to `workers` trials are in flight. The driver asks the strategy for the next proposal
//! while earlier trials still run, but tells it their scores in proposal order (a trial that
//! finished early waits for the ones proposed before it): the proposals then depend only on
//! the seed and the scores, never on which trial happened to finish first. `--resume` (after
//! a `kill -9` too) walks the journal's events again without running the strategy: its
//! proposals are read back and the scheduler (early stopping) is told the journal's scores,
//! up to the last `state` event, where the strategy and the generator are set from it; from
//! there the strategy proposes again (checked against the proposals the journal holds after
//! that state), results in the journal answer the trials that have them, and the trials that
//! were running when the run stopped are re-queued. A journal with no `state` yet (a kill
//! before the first score) is replayed from the start. A failed trial counts as a query; the
//! strategy sees it as score 0 (the lowest accuracy), the journal and `best.json` as failed.

use super::executor::{Executor, ExecutorConfig, TrialJob};
use super::fidelity::{EarlyStop, Job, Next};
use super::journal::{journaled_arch, read_earlier, Earlier};
pub use super::journal::{JournalEvent, Snapshot};
use super::latency_terms::LatencyTerms;
pub use super::latency_terms::{PARETO_JSON, PARETO_SVG};
use super::trial::{TrialResult, TrialSpec, TrialStatus};
use super::{search_rng, StrategyConfig, RESERVE_MAX};
use crate::error::{Error, Result};
use crate::io::{append_jsonl, atomic_write, atomic_write_json};
use crate::nas::latency::{LatencyObjective, ParetoPoint};
use crate::nas::run_dir::{RunDir, Start};
use crate::nas::space::SearchSpace;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.json";
pub const JOURNAL: &str = "journal.jsonl";
pub const BEST: &str = "best.json";
pub const TRIALS: &str = "trials";
pub const RUN_FILES: &[&str] = &[CONFIG, JOURNAL, BEST, TRIALS, PARETO_JSON, PARETO_SVG];

/// The score a failed trial gives the strategy: no accuracy at all.
pub const FAILED_SCORE: f64 = 0.0;

/// Everything that determines a training search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSearchConfig {
    pub space: String,
    pub strategy: StrategyConfig,
    /// Every trial's spec but its architecture (`arch` is left empty here).
    pub trial: TrialSpec,
    pub budget: usize,
    pub seed: u64,
    /// Trials in flight at once.
    pub workers: usize,
    pub executor: ExecutorConfig,
    /// Attempts after the first for a failed trial.
    pub retries: usize,
    /// Early stopping with epochs as the budget (`trial.epochs` the full budget).
    #[serde(default)]
    pub early_stop: EarlyStop,
    /// Latency in the objective (`--latency-table`, mbconv): the strategy is told the
    /// reward, and the run writes the accuracy-latency Pareto front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyObjective>,
}

/// `best.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainBest {
    pub space: String,
    pub arch: String,
    pub arch_json: serde_json::Value,
    pub trial: usize,
    pub valid_acc: f64,
    /// The epochs the best trial trained.
    #[serde(default)]
    pub epochs: usize,
    pub curve: Vec<f64>,
    /// With a latency objective: the best's predicted latency and reward (it is the best by
    /// the reward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// The trials' network scale where the space has one (mbconv): what `nasrs scale`
    /// takes as the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_mult: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_mult: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<usize>,
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct TrainSearchOutcome {
    /// None when every trial failed.
    pub best: Option<TrainBest>,
    pub trials: usize,
    pub failed: usize,
    /// Trials answered from an earlier journal (`--resume`).
    pub replayed: usize,
    /// With `--resume`: the scores the strategy had been told at the journal's last state,
    /// which the resumed run continued from (None: replayed from the start).
    pub restored_at: Option<usize>,
    /// Configurations (architectures) tried; equal to `trials` without early stopping.
    pub configs: usize,
    /// Epochs trained by all finished trials together (replayed ones included).
    pub epochs_trained: usize,
}

/// Runs (or resumes) the search `config` asks for, each trial by `executor` running `exe
/// trial`, in the folder `out`.
pub fn run_train_search<S: SearchSpace>(
    space: &S,
    config: &TrainSearchConfig,
    executor: &mut dyn Executor,
    exe: &Path,
    out: &Path,
    start: Start,
) -> Result<TrainSearchOutcome> {
    config.strategy.validate()?;
    config.early_stop.validate(config.trial.epochs)?;
    for (flag, v) in [("--budget", config.budget), ("--workers", config.workers)] {
        if v == 0 {
            return Err(Error::invalid(flag, "must be at least 1"));
        }
    }
    let most = config.strategy.max_in_flight();
    if config.workers > most {
        return Err(Error::invalid(
            "--workers",
            format!(
                "{} draws at most {most} architectures before their scores (its \
                 --controller-batch); run it with --workers {most} at most",
                config.strategy.name()
            ),
        ));
    }
    let latency = match &config.latency {
        Some(o) => Some(LatencyTerms::open(o, space.name())?),
        None => None,
    };
    let (mut dir, resume) = RunDir::open(out, RUN_FILES, JOURNAL, start)?;
    // Result files must be found by trials running elsewhere (Slurm): absolute paths.
    let root = std::fs::canonicalize(&dir.path).map_err(|e| Error::io(&dir.path, e))?;
    let journal = root.join(JOURNAL);
    let mut earlier = if resume {
        read_earlier(&root, config)?
    } else {
        let trials = root.join(TRIALS);
        if trials.exists() {
            std::fs::remove_dir_all(&trials).map_err(|e| Error::io(&trials, e))?;
        }
        atomic_write_json(&root.join(CONFIG), config)?;
        atomic_write(&journal, b"")?;
        dir.epoch_saved(&[CONFIG, JOURNAL, TRIALS])?;
        Earlier::default()
    };
    if let Some(l) = &latency {
        for (trial, arch, ms) in &earlier.latencies {
            l.check_journaled(*trial, arch, *ms)?;
        }
    }
    let mut rng = search_rng(config.seed);
    let mut strategy = config.strategy.build(space, &mut rng)?;
    // The strategy's score of an ok trial of `arch` at accuracy `acc`, and the latency.
    let rank = |arch: &str, acc: f64| -> Result<(f64, Option<f64>)> {
        match &latency {
            Some(l) => l.reward(arch, acc).map(|(r, ms)| (r, Some(ms))),
            None => Ok((acc, None)),
        }
    };
    let accept = |a: &S::Arch| {
        latency
            .as_ref()
            .is_none_or(|l| l.accepts(&space.to_string(a)))
    };
    // Until the journal's last state, the strategy is not run (see the module docs).
    let restore = earlier.state.take();
    let mut live = restore.is_none();
    let mut restored_at = None;
    let mut scheduler = config
        .early_stop
        .scheduler(config.trial.epochs, config.budget)?;
    let mut archs: Vec<S::Arch> = Vec::with_capacity(config.budget.min(RESERVE_MAX));
    let mut jobs: Vec<Job> = Vec::with_capacity(config.budget.min(RESERVE_MAX));
    let mut observed = 0;
    let mut finished = earlier.finished.clone();
    let mut attempts: BTreeMap<usize, usize> = BTreeMap::new();
    let mut window: VecDeque<usize> = VecDeque::new();
    let mut done = false;
    // A job that needs a new configuration while the strategy may not propose yet (a
    // REINFORCE batch waiting for its scores): it is started first once it may.
    let mut held: Option<Job> = None;
    let submit = |executor: &mut dyn Executor, trial: usize, arch: &str, epochs: usize| {
        let dir = attempt_dir(&root, trial);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let job = TrialJob::in_dir(trial, exe, &dir);
        let spec = TrialSpec {
            arch: arch.to_string(),
            epochs,
            ..config.trial.clone()
        };
        atomic_write_json(&job.spec, &spec)?;
        executor.submit(job)
    };
    loop {
        while window.len() < config.workers && !done {
            let job = match held.take().map_or_else(|| scheduler.next(), Next::Run) {
                Next::Run(job) => job,
                Next::Wait => break,
                Next::Done => {
                    done = true;
                    break;
                }
            };
            if job.config == archs.len() && !config.strategy.may_propose(archs.len(), observed) {
                held = Some(job);
                break;
            }
            if job.config == archs.len() {
                let next = if live {
                    strategy.propose(space, &mut rng, &accept)?
                } else {
                    Some(journaled_arch(space, &earlier, jobs.len() + 1, &journal)?)
                };
                match next {
                    Some(arch) => archs.push(arch),
                    None => {
                        scheduler.exhausted(job);
                        continue;
                    }
                }
            } else if job.config > archs.len() {
                return Err(Error::invalid(
                    "--early-stop",
                    format!(
                        "the scheduler asked for configuration {} unseen",
                        job.config
                    ),
                ));
            }
            jobs.push(job);
            let trial = jobs.len();
            let text = space.to_string(&archs[job.config]);
            match earlier.proposed.get(trial - 1) {
                Some((e, epochs)) if *e != text || epochs.is_some_and(|n| n != job.epochs) => {
                    return Err(Error::bad_file(
                        &journal,
                        format!(
                            "trial {trial} is '{e}' ({epochs:?} epochs) where this run proposes \
                             '{text}' ({} epochs); the journal is not this run's (start over \
                             with --force)",
                            job.epochs
                        ),
                    ))
                }
                Some(_) => {}
                None => append_jsonl(
                    &journal,
                    &JournalEvent::Proposed {
                        trial,
                        arch: text.clone(),
                        config: Some(job.config),
                        epochs: Some(job.epochs),
                    },
                )?,
            }
            if !finished.contains_key(&trial) {
                attempts.insert(trial, 1);
                submit(executor, trial, &text, job.epochs)?;
            }
            window.push_back(trial);
        }
        let Some(&head) = window.front() else {
            if done {
                break;
            }
            return Err(Error::invalid(
                "--early-stop",
                "the scheduler waits with no trial running",
            ));
        };
        while !finished.contains_key(&head) {
            let batch = executor.wait()?;
            if batch.is_empty() {
                return Err(Error::invalid(
                    "executor",
                    format!("trial {head} is neither running nor finished"),
                ));
            }
            for (trial, result) in batch {
                let attempt = attempts.get(&trial).copied().unwrap_or(1);
                let job = jobs[trial - 1];
                let text = space.to_string(&archs[job.config]);
                if result.status == TrialStatus::Failed && attempt <= config.retries {
                    append_jsonl(
                        &journal,
                        &JournalEvent::AttemptFailed {
                            trial,
                            attempt,
                            error: result.error.clone().unwrap_or_default(),
                        },
                    )?;
                    attempts.insert(trial, attempt + 1);
                    submit(executor, trial, &text, job.epochs)?;
                    continue;
                }
                let (objective, latency_ms) = match result.valid_acc {
                    Some(acc) if latency.is_some() && result.status == TrialStatus::Ok => {
                        let (r, ms) = rank(&text, acc)?;
                        (Some(r), ms)
                    }
                    _ => (None, None),
                };
                append_jsonl(
                    &journal,
                    &JournalEvent::Finished {
                        trial,
                        arch: text,
                        attempts: attempt,
                        result: result.clone(),
                        latency_ms,
                        objective,
                    },
                )?;
                finished.insert(trial, (attempt, result));
            }
        }
        let result = &finished[&head].1;
        let job = jobs[head - 1];
        let score = match result {
            r if r.status == TrialStatus::Ok => match r.valid_acc {
                Some(acc) => rank(&space.to_string(&archs[job.config]), acc)?.0,
                None => FAILED_SCORE,
            },
            _ => FAILED_SCORE,
        };
        scheduler.report(job, score, &result.curve);
        // The strategy hears each configuration once, at its first (smallest) budget, in
        // proposal order.
        if job.config == observed {
            if live {
                strategy.observe(space, &archs[job.config], score)?;
            }
            observed += 1;
            match &restore {
                Some(saved) if !live && saved.observed == observed => {
                    if saved.proposed != archs.len() {
                        return Err(Error::bad_file(
                            &journal,
                            format!(
                                "its state after {observed} scores has {} configurations \
                                 proposed where the journal's events give {}",
                                saved.proposed,
                                archs.len()
                            ),
                        ));
                    }
                    strategy
                        .restore(space, &saved.strategy)
                        .map_err(|e| Error::bad_file(&journal, format!("{e}")))?;
                    rng = saved.rng.clone();
                    live = true;
                    restored_at = Some(observed);
                }
                _ if live => append_jsonl(
                    &journal,
                    &JournalEvent::State(Box::new(Snapshot {
                        observed,
                        proposed: archs.len(),
                        rng: rng.clone(),
                        strategy: strategy.snapshot(space)?,
                    })),
                )?,
                _ => {}
            }
        }
        window.pop_front();
    }
    let replayed = earlier
        .finished
        .keys()
        .filter(|&&t| t <= jobs.len())
        .count();
    let mut best = best_trial(space, &archs, &jobs, &finished, &rank)?;
    if let Some(b) = &mut best {
        if space.name() == "mbconv" {
            b.width_mult = Some(config.trial.mbconv_width());
            b.depth_mult = Some(config.trial.mbconv_depth());
            b.resolution = config.trial.resolution;
        }
        atomic_write_json(&root.join(BEST), b)?;
    }
    if let Some(l) = &latency {
        let points = top_results(space, &archs, &jobs, &finished)
            .into_iter()
            .map(|(trial, arch, acc)| {
                let (objective, ms) = l.reward(&arch, acc)?;
                Ok(ParetoPoint {
                    trial,
                    arch,
                    accuracy: acc,
                    latency_ms: ms,
                    objective,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        l.write_front(&root, &points)?;
    }
    let failed = finished
        .values()
        .filter(|(_, r)| r.status == TrialStatus::Failed)
        .count();
    let epochs_trained = finished
        .iter()
        .filter(|(t, _)| **t <= jobs.len())
        .map(|(_, (_, r))| r.epochs)
        .sum();
    Ok(TrainSearchOutcome {
        best,
        trials: jobs.len(),
        failed,
        replayed,
        restored_at,
        configs: archs.len(),
        epochs_trained,
    })
}

/// The first attempt folder of `trial` not used yet (a trial re-queued after a kill starts
/// in a fresh one: the killed run's trial process may still be writing in its own).
fn attempt_dir(root: &Path, trial: usize) -> PathBuf {
    let base = root.join(TRIALS).join(format!("{trial:05}"));
    (1..)
        .map(|a| base.join(format!("attempt-{a}")))
        .find(|d| !d.exists())
        .unwrap_or(base)
}

/// The ok trials trained for the most epochs any ok trial trained (all of them without
/// early stopping), in trial order: (trial, arch, accuracy).
fn top_results<S: SearchSpace>(
    space: &S,
    archs: &[S::Arch],
    jobs: &[Job],
    finished: &BTreeMap<usize, (usize, TrialResult)>,
) -> Vec<(usize, String, f64)> {
    let ok: Vec<(usize, usize, f64)> = finished
        .iter()
        .filter(|(t, (_, r))| **t <= jobs.len() && r.status == TrialStatus::Ok)
        .filter_map(|(&t, (_, r))| r.valid_acc.map(|acc| (t, r.epochs, acc)))
        .collect();
    let Some(top) = ok.iter().map(|&(_, e, _)| e).max() else {
        return Vec::new();
    };
    ok.into_iter()
        .filter(|&(_, e, _)| e == top)
        .map(|(t, _, acc)| (t, space.to_string(&archs[jobs[t - 1].config]), acc))
        .collect()
}

/// The strategy's score of an ok trial of an architecture (its canonical form) at an
/// accuracy: the accuracy, or the latency reward with the predicted latency.
type Rank<'a> = dyn Fn(&str, f64) -> Result<(f64, Option<f64>)> + 'a;

/// The best of [`top_results`] by `rank` (the accuracy, or the latency reward), the
/// earliest on a tie.
fn best_trial<S: SearchSpace>(
    space: &S,
    archs: &[S::Arch],
    jobs: &[Job],
    finished: &BTreeMap<usize, (usize, TrialResult)>,
    rank: &Rank,
) -> Result<Option<TrainBest>> {
    let mut best: Option<(usize, f64, f64, Option<f64>)> = None;
    for (trial, arch, acc) in top_results(space, archs, jobs, finished) {
        let (r, ms) = rank(&arch, acc)?;
        if best.is_none_or(|(_, b, _, _)| r > b) {
            best = Some((trial, r, acc, ms));
        }
    }
    let Some((trial, r, valid_acc, latency_ms)) = best else {
        return Ok(None);
    };
    let arch = &archs[jobs[trial - 1].config];
    Ok(Some(TrainBest {
        space: space.name().to_string(),
        arch: space.to_string(arch),
        arch_json: space.to_json(arch),
        trial,
        valid_acc,
        epochs: finished[&trial].1.epochs,
        curve: finished[&trial].1.curve.clone(),
        objective: latency_ms.map(|_| r),
        latency_ms,
        width_mult: None,
        depth_mult: None,
        resolution: None,
    }))
}
