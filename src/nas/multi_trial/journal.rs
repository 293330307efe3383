//! The training search's journal (`journal.jsonl`): its events, appended and fsync'd by
//! `train_search.rs` as they happen, and reading them back on `--resume`: the proposals,
//! the results, the last state of the strategy, after checking the run's config is this
//! run's; a line torn by a kill is dropped.

use super::fidelity::EarlyStop;
use super::train_search::{TrainSearchConfig, CONFIG, JOURNAL};
use super::trial::TrialResult;
use crate::error::{Error, Result};
use crate::io::{check_resume_options, read_jsonl};
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One line of `journal.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JournalEvent {
    Proposed {
        trial: usize,
        arch: String,
        /// The configuration this trial trains (0-based; a promotion repeats one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<usize>,
        /// The epochs this trial trains (its budget).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epochs: Option<usize>,
    },
    AttemptFailed {
        trial: usize,
        attempt: usize,
        error: String,
    },
    Finished {
        trial: usize,
        arch: String,
        attempts: usize,
        #[serde(flatten)]
        result: TrialResult,
        /// With a latency objective: the architecture's predicted latency and the reward the
        /// strategy was told (ok trials).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        objective: Option<f64>,
    },
    /// After the strategy was told the score of configuration `observed - 1`: its state, the
    /// search's generator, and the configurations proposed by then.
    State(Box<Snapshot>),
}

/// The search's state after a score: what `--resume` continues from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Configurations whose score the strategy has been told.
    pub observed: usize,
    /// Configurations proposed so far (some may still be training).
    pub proposed: usize,
    pub rng: Rng,
    /// [`Strategy::snapshot`](super::Strategy::snapshot).
    pub strategy: serde_json::Value,
}

/// What the journal of the run being resumed holds.
#[derive(Default)]
pub(crate) struct Earlier {
    /// (arch, epochs) of each proposed trial (epochs None in a journal that predates them).
    pub(crate) proposed: Vec<(String, Option<usize>)>,
    pub(crate) finished: BTreeMap<usize, (usize, TrialResult)>,
    /// The last state journaled.
    pub(crate) state: Option<Snapshot>,
    /// (trial, arch, predicted ms) of each finished trial whose latency was journaled.
    pub(crate) latencies: Vec<(usize, String, f64)>,
}

/// Trial `trial`'s architecture as the journal proposed it (replaying up to its last state).
pub(crate) fn journaled_arch<S: SearchSpace>(
    space: &S,
    earlier: &Earlier,
    trial: usize,
    journal: &Path,
) -> Result<S::Arch> {
    let (text, _) = earlier.proposed.get(trial - 1).ok_or_else(|| {
        Error::bad_file(
            journal,
            format!("trial {trial} comes before its last state but was never proposed"),
        )
    })?;
    space
        .parse(text)
        .map_err(|e| Error::bad_file(journal, format!("trial {trial}: {e}")))
}

/// The journal of the run being resumed, after checking that it is this run's (the budget,
/// the executor and the retries may change; the workers may not: they shape the proposals).
pub(crate) fn read_earlier(root: &Path, config: &TrainSearchConfig) -> Result<Earlier> {
    let config_path = root.join(CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut saved: TrainSearchConfig = serde_json::from_str(&text).map_err(|e| {
        Error::bad_file(&config_path, format!("not a training search's config: {e}"))
    })?;
    // With early stopping the budget shapes the rungs and brackets: it may not change.
    if saved.early_stop == EarlyStop::None {
        saved.budget = config.budget;
    }
    saved.executor = config.executor.clone();
    saved.retries = config.retries;
    saved.trial.threads = config.trial.threads;
    check_resume_options(&saved, config, &config_path)?;
    let path = root.join(JOURNAL);
    let mut earlier = Earlier::default();
    for (line, event) in read_jsonl::<JournalEvent>(&path)? {
        match event {
            JournalEvent::Proposed {
                trial,
                arch,
                epochs,
                ..
            } => {
                if trial != earlier.proposed.len() + 1 {
                    return Err(Error::bad_file(
                        &path,
                        format!("line {line}: trial {trial} proposed out of order"),
                    ));
                }
                earlier.proposed.push((arch, epochs));
            }
            JournalEvent::AttemptFailed { .. } => {}
            JournalEvent::State(state) => earlier.state = Some(*state),
            JournalEvent::Finished {
                trial,
                arch,
                attempts,
                result,
                latency_ms,
                ..
            } => {
                if let Some(ms) = latency_ms {
                    earlier.latencies.push((trial, arch, ms));
                }
                earlier.finished.insert(trial, (attempts, result));
            }
        }
    }
    if config.early_stop == EarlyStop::None && earlier.proposed.len() > config.budget {
        return Err(Error::invalid(
            "--budget",
            format!(
                "{} is below the {} trials the run in {} already proposed",
                config.budget,
                earlier.proposed.len(),
                root.display()
            ),
        ));
    }
    Ok(earlier)
}
