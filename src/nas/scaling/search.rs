//! The compound-scaling grid search (`nasrs scale search`) as a run folder: every candidate
//! of the [`Grid`] (coefficients within the tolerance at phi = 1) is the base network scaled
//! by it ([`apply`]), trained briefly as a training trial (`nasrs trial`, run by an
//! [`Executor`]: local workers or Slurm) with its validation accuracy as the score.
//!
//! The folder holds `config.json` (the base, its resolution, the grid, the trial template,
//! seed, workers, executor, retries), `journal.jsonl` (appended and fsync'd: `finished` with
//! each candidate's coefficients and result, `attempt_failed` for an attempt that is retried),
//! `trials/<trial>/attempt-<n>/` (the trial's spec, result and log) and `scaling.json`
//! (every candidate with its coefficients, product, multipliers, resolution, parameters and
//! FLOPs and accuracy, and the chosen one: the best accuracy, the earliest on a tie), written
//! atomically at the end. Every trial has the same seed, so the scores depend on the
//! coefficients only; `--resume` re-runs only the candidates the journal has no result for.

use super::apply::{apply, ScaledNetwork};
use super::base::ScalingBase;
use super::{Coefficients, Grid};
use crate::error::{Error, Result};
use crate::io::{append_jsonl, atomic_write, atomic_write_json, check_resume_options, read_jsonl};
use crate::nas::multi_trial::executor::{Executor, ExecutorConfig, TrialJob};
use crate::nas::multi_trial::trial::{TrialResult, TrialSpec, TrialStatus};
use crate::nas::run_dir::{RunDir, Start};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.json";
pub const JOURNAL: &str = "journal.jsonl";
pub const SCALING: &str = "scaling.json";
pub const TRIALS: &str = "trials";
pub const RUN_FILES: &[&str] = &[CONFIG, JOURNAL, SCALING, TRIALS];

/// Everything that determines a scale search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleSearchConfig {
    pub base: ScalingBase,
    /// The image side the base trains at (the candidates at `round(this * gamma)`).
    pub base_resolution: usize,
    pub grid: Grid,
    /// Every trial's spec but the network (`arch`, `width_mult`, `depth_mult`,
    /// `resolution` are the candidate's).
    pub trial: TrialSpec,
    /// The dataset's classes and channels (the parameter counts' classifier and stem).
    pub classes: usize,
    pub in_channels: usize,
    pub workers: usize,
    pub executor: ExecutorConfig,
    /// Attempts after the first for a failed trial.
    pub retries: usize,
}

/// One line of `journal.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ScaleEvent {
    AttemptFailed {
        trial: usize,
        attempt: usize,
        error: String,
    },
    Finished {
        trial: usize,
        coefficients: Coefficients,
        attempts: usize,
        result: TrialResult,
    },
}

/// One candidate in `scaling.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// 1-based, in grid order.
    pub trial: usize,
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    /// `alpha * beta^2 * gamma^2`.
    pub product: f64,
    pub width_mult: f64,
    pub depth_mult: f64,
    pub resolution: usize,
    pub params: usize,
    /// One image's forward FLOPs at `resolution`.
    pub flops: u64,
    pub status: TrialStatus,
    /// Validation accuracy after the last epoch (None for a failed trial).
    pub valid_acc: Option<f64>,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Candidate {
    pub fn coefficients(&self) -> Coefficients {
        Coefficients {
            alpha: self.alpha,
            beta: self.beta,
            gamma: self.gamma,
        }
    }
}

/// `scaling.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingReport {
    pub base: ScalingBase,
    pub base_resolution: usize,
    pub grid: Grid,
    pub epochs: usize,
    pub candidates: Vec<Candidate>,
    /// The best accuracy, the earliest on a tie (None when every trial failed).
    pub chosen: Option<Candidate>,
}

impl ScalingReport {
    /// Reads `scaling.json` (`--coefficients`), naming the file at fault.
    pub fn read(path: &Path) -> Result<ScalingReport> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::bad_file(
                path,
                format!("not the scaling.json of `nasrs scale search`: {e}"),
            )
        })
    }
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct ScaleSearchOutcome {
    pub report: ScalingReport,
    /// Candidates answered from the journal (`--resume`).
    pub replayed: usize,
    pub failed: usize,
}

/// Each candidate's scaled network (phi = 1).
pub fn scaled_candidates(config: &ScaleSearchConfig) -> Result<Vec<ScaledNetwork>> {
    config
        .grid
        .candidates()?
        .into_iter()
        .map(|c| {
            apply(
                &config.base,
                config.base_resolution,
                c,
                1.0,
                config.classes,
                config.in_channels,
            )
        })
        .collect()
}

/// The finished candidates of the run being resumed in `root`, after checking that it is
/// this run's (the executor, the workers and the retries may change).
fn read_earlier(
    root: &Path,
    config: &ScaleSearchConfig,
    nets: &[ScaledNetwork],
) -> Result<BTreeMap<usize, (usize, TrialResult)>> {
    let config_path = root.join(CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut saved: ScaleSearchConfig = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&config_path, format!("not a scale search's config: {e}")))?;
    saved.executor = config.executor.clone();
    saved.workers = config.workers;
    saved.retries = config.retries;
    saved.trial.threads = config.trial.threads;
    check_resume_options(&saved, config, &config_path)?;
    let path = root.join(JOURNAL);
    let mut finished = BTreeMap::new();
    for (line, event) in read_jsonl::<ScaleEvent>(&path)? {
        if let ScaleEvent::Finished {
            trial,
            coefficients,
            attempts,
            result,
        } = event
        {
            let want = trial
                .checked_sub(1)
                .and_then(|t| nets.get(t))
                .map(|n| n.coefficients);
            if want != Some(coefficients) {
                return Err(Error::bad_file(
                    &path,
                    format!(
                        "line {line}: trial {trial} is {coefficients:?}, not this grid's \
                         candidate {want:?}; start over with --force"
                    ),
                ));
            }
            finished.insert(trial, (attempts, result));
        }
    }
    Ok(finished)
}

/// The first attempt folder of `trial` not used yet (a trial re-run after a kill starts in a
/// fresh one).
fn attempt_dir(root: &Path, trial: usize) -> PathBuf {
    let base = root.join(TRIALS).join(format!("{trial:05}"));
    (1..)
        .map(|a| base.join(format!("attempt-{a}")))
        .find(|d| !d.exists())
        .unwrap_or(base)
}

/// A scale search whose run folder is open: what the journal of an earlier run answered.
pub struct ScaleSearch<'a> {
    config: &'a ScaleSearchConfig,
    nets: Vec<ScaledNetwork>,
    /// The run folder, absolute (trials running elsewhere, on Slurm, find their files).
    root: PathBuf,
    earlier: BTreeMap<usize, (usize, TrialResult)>,
}

/// Opens the run folder `out` for the search `config` asks for (new, `--resume`d or
/// `--force`d): refuses a bad grid, a folder holding another run, or a journal that is not
/// this run's, before any trial starts.
pub fn open_scale_search<'a>(
    config: &'a ScaleSearchConfig,
    out: &Path,
    start: Start,
) -> Result<ScaleSearch<'a>> {
    if config.workers == 0 {
        return Err(Error::invalid("--workers", "must be at least 1"));
    }
    let nets = scaled_candidates(config)?;
    let (mut dir, resume) = RunDir::open(out, RUN_FILES, JOURNAL, start)?;
    let root = std::fs::canonicalize(&dir.path).map_err(|e| Error::io(&dir.path, e))?;
    let earlier = if resume {
        read_earlier(&root, config, &nets)?
    } else {
        let trials = root.join(TRIALS);
        if trials.exists() {
            std::fs::remove_dir_all(&trials).map_err(|e| Error::io(&trials, e))?;
        }
        atomic_write_json(&root.join(CONFIG), config)?;
        atomic_write(&root.join(JOURNAL), b"")?;
        dir.epoch_saved(&[CONFIG, JOURNAL, TRIALS])?;
        BTreeMap::new()
    };
    Ok(ScaleSearch {
        config,
        nets,
        root,
        earlier,
    })
}

/// Runs the candidates the journal has no result for, each by `executor` running `exe
/// trial`, then writes `scaling.json`.
pub fn run_scale_search(
    search: ScaleSearch,
    executor: &mut dyn Executor,
    exe: &Path,
) -> Result<ScaleSearchOutcome> {
    let ScaleSearch {
        config,
        nets,
        root,
        earlier,
    } = search;
    let journal = root.join(JOURNAL);
    let replayed = earlier.len();
    let mut finished = earlier;
    let submit = |executor: &mut dyn Executor, trial: usize| -> Result<()> {
        let net = &nets[trial - 1];
        let dir = attempt_dir(&root, trial);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let job = TrialJob::in_dir(trial, exe, &dir);
        let spec = TrialSpec {
            arch: net.arch.clone(),
            width_mult: Some(net.width_mult),
            depth_mult: Some(net.depth_mult),
            resolution: Some(net.resolution),
            ..config.trial.clone()
        };
        atomic_write_json(&job.spec, &spec)?;
        executor.submit(job)
    };
    let mut pending: VecDeque<usize> = (1..=nets.len())
        .filter(|t| !finished.contains_key(t))
        .collect();
    let mut attempts: BTreeMap<usize, usize> = BTreeMap::new();
    let mut running = 0;
    while running > 0 || !pending.is_empty() {
        while running < config.workers {
            let Some(trial) = pending.pop_front() else {
                break;
            };
            attempts.insert(trial, 1);
            submit(executor, trial)?;
            running += 1;
        }
        let batch = executor.wait()?;
        if batch.is_empty() {
            return Err(Error::invalid(
                "executor",
                format!("{running} trial(s) are neither running nor finished"),
            ));
        }
        for (trial, result) in batch {
            let attempt = attempts.get(&trial).copied().unwrap_or(1);
            if result.status == TrialStatus::Failed && attempt <= config.retries {
                append_jsonl(
                    &journal,
                    &ScaleEvent::AttemptFailed {
                        trial,
                        attempt,
                        error: result.error.clone().unwrap_or_default(),
                    },
                )?;
                attempts.insert(trial, attempt + 1);
                submit(executor, trial)?;
                continue;
            }
            append_jsonl(
                &journal,
                &ScaleEvent::Finished {
                    trial,
                    coefficients: nets[trial - 1].coefficients,
                    attempts: attempt,
                    result: result.clone(),
                },
            )?;
            finished.insert(trial, (attempt, result));
            running -= 1;
        }
    }
    let candidates: Vec<Candidate> = nets
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let r = &finished[&(i + 1)].1;
            let c = net.coefficients;
            Candidate {
                trial: i + 1,
                alpha: c.alpha,
                beta: c.beta,
                gamma: c.gamma,
                product: (c.product() * 1e9).round() / 1e9,
                width_mult: net.width_mult,
                depth_mult: net.depth_mult,
                resolution: net.resolution,
                params: net.params,
                flops: net.flops,
                status: r.status,
                valid_acc: r.valid_acc.filter(|_| r.status == TrialStatus::Ok),
                seconds: r.seconds,
                error: r.error.clone(),
            }
        })
        .collect();
    let mut chosen: Option<&Candidate> = None;
    for c in &candidates {
        if let Some(acc) = c.valid_acc {
            if chosen.is_none_or(|b| b.valid_acc.is_none_or(|best| acc > best)) {
                chosen = Some(c);
            }
        }
    }
    let report = ScalingReport {
        base: config.base.clone(),
        base_resolution: config.base_resolution,
        grid: config.grid,
        epochs: config.trial.epochs,
        chosen: chosen.cloned(),
        candidates,
    };
    atomic_write_json(&root.join(SCALING), &report)?;
    let failed = report
        .candidates
        .iter()
        .filter(|c| c.status == TrialStatus::Failed)
        .count();
    Ok(ScaleSearchOutcome {
        report,
        replayed,
        failed,
    })
}
