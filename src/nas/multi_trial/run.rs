//! A multi-trial search on a table as a run folder (`nasrs search random|evolution|reinforce
//! --evaluator table`). The folder, each file written atomically:
//! - `config.json`: the space, the strategy and its settings, the table and its columns, the
//!   budget and the seed;
//! - `journal.jsonl`: every query in order (`query`, `arch` in the space's canonical form,
//!   `metric` searched on, `report` reported), written with `config.json` at most once a second
//!   during the search and at its end;
//! - `best.json`: the architecture with the best metric (the earliest on a tie), its metric
//!   and its report value (NB201's protocol: search on validation, report test);
//! - `anytime.svg`: the best metric so far and that architecture's report, per query.
//!
//! The strategies are deterministic given the seed and the scores, so `--resume` replays the
//! journal: the same proposals are made again, each one the journal holds is answered from
//! it (checked to be the same architecture), and the search goes on from where it stopped.
//! A finished run resumes to the same files; one resumed with a larger `--budget` continues.

use super::{incumbents, search_rng, StrategyConfig, TableEvaluator, TableSpec, RESERVE_MAX};
use crate::error::{Error, Result};
use crate::io::{atomic_write, atomic_write_json, check_resume_options, write_jsonl};
use crate::nas::history::best;
use crate::nas::report::anytime_svg;
use crate::nas::run_dir::{RunDir, Start};
use crate::nas::space::SearchSpace;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

pub const CONFIG: &str = "config.json";
pub const JOURNAL: &str = "journal.jsonl";
pub const BEST: &str = "best.json";
pub const ANYTIME: &str = "anytime.svg";
pub const RUN_FILES: &[&str] = &[CONFIG, JOURNAL, BEST, ANYTIME];

/// How often the journal is saved during a search.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Everything that determines a search on a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRunConfig {
    pub space: String,
    pub strategy: StrategyConfig,
    pub table: TableSpec,
    pub budget: usize,
    pub seed: u64,
}

/// One line of `journal.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub query: usize,
    pub arch: String,
    pub metric: f64,
    pub report: f64,
    /// What the search maximised, with a size penalty (absent: the metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
}

/// `best.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    pub space: String,
    /// The canonical one-line form.
    pub arch: String,
    /// The space's JSON form (a DARTS genotype that `nasrs train --genotype` reads).
    pub arch_json: serde_json::Value,
    /// The query that found it (1-based).
    pub query: usize,
    pub metric: String,
    pub metric_value: f64,
    pub report: String,
    pub report_value: f64,
}

/// What a run returns.
#[derive(Clone, Debug)]
pub struct TableRunOutcome {
    pub best: BestRecord,
    /// Queries in the journal now.
    pub queries: usize,
    /// Of those, the ones answered from an earlier journal (`--resume`).
    pub replayed: usize,
}

/// Runs (or resumes) the search `config` asks for on `eval` in the folder `out`.
pub fn run_table_search<S: SearchSpace>(
    eval: &TableEvaluator<S>,
    config: &TableRunConfig,
    out: &Path,
    start: Start,
) -> Result<TableRunOutcome> {
    config.strategy.validate()?;
    if config.budget == 0 {
        return Err(Error::invalid("--budget", "must be at least 1 query"));
    }
    if config.table != eval.spec || config.space != eval.space.name() {
        return Err(Error::invalid(
            "table run",
            "the configuration names another table or space than the evaluator's",
        ));
    }
    let (mut dir, resume) = RunDir::open(out, RUN_FILES, JOURNAL, start)?;
    let earlier = if resume {
        read_earlier(&dir, config)?
    } else {
        Vec::new()
    };
    let space = &eval.space;
    let mut records: Vec<JournalRecord> = Vec::with_capacity(config.budget.min(RESERVE_MAX));
    let mut flushed = Instant::now();
    let journal_path = dir.join(JOURNAL);
    let mut score = |arch: &S::Arch| -> Result<f64> {
        let query = records.len() + 1;
        let arch_s = space.to_string(arch);
        if let Some(r) = earlier.get(query - 1) {
            if r.arch != arch_s {
                return Err(Error::bad_file(
                    &journal_path,
                    format!(
                        "query {query} is '{}' where this run proposes '{arch_s}'; the journal \
                         is not this run's (start over with --force)",
                        r.arch
                    ),
                ));
            }
            records.push(r.clone());
            return Ok(r.objective.unwrap_or(r.metric));
        }
        let record = JournalRecord {
            query,
            arch: arch_s,
            metric: eval.metric(arch)?,
            report: eval.report(arch)?,
            objective: if eval.penalized() {
                Some(eval.objective(arch)?)
            } else {
                None
            },
        };
        let metric = record.objective.unwrap_or(record.metric);
        records.push(record);
        if flushed.elapsed() >= FLUSH_EVERY {
            save_journal(&mut dir, config, &records)?;
            flushed = Instant::now();
        }
        Ok(metric)
    };
    let mut rng = search_rng(config.seed);
    let accept = |a: &S::Arch| eval.accepts(a);
    let history = config
        .strategy
        .search(space, config.budget, &mut rng, &accept, &mut score)?;
    let replayed = earlier.len().min(records.len());
    save_journal(&mut dir, config, &records)?;
    let top = best(&history).ok_or_else(|| Error::invalid("search", "no query was made"))?;
    let record = &records[top.query - 1];
    let best_record = BestRecord {
        space: space.name().to_string(),
        arch: record.arch.clone(),
        arch_json: space.to_json(&top.arch),
        query: top.query,
        metric: config.table.metric.clone(),
        metric_value: record.metric,
        report: config.table.report.clone(),
        report_value: record.report,
    };
    atomic_write_json(&dir.join(BEST), &best_record)?;
    atomic_write(
        &dir.join(ANYTIME),
        run_svg(config, &records, &history).as_bytes(),
    )?;
    dir.epoch_saved(RUN_FILES)?;
    Ok(TableRunOutcome {
        best: best_record,
        queries: records.len(),
        replayed,
    })
}

/// Writes the journal so far and the configuration it belongs to.
fn save_journal(
    dir: &mut RunDir,
    config: &TableRunConfig,
    records: &[JournalRecord],
) -> Result<()> {
    write_jsonl(&dir.join(JOURNAL), records)?;
    atomic_write_json(&dir.join(CONFIG), config)?;
    dir.epoch_saved(&[CONFIG, JOURNAL])
}

/// The journal of the run being resumed, after checking that it is this run's: the same
/// options (the budget may grow) and queries numbered 1, 2, ...
fn read_earlier(dir: &RunDir, config: &TableRunConfig) -> Result<Vec<JournalRecord>> {
    let config_path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut saved: TableRunConfig = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&config_path, format!("not a table search's config: {e}")))?;
    saved.budget = config.budget;
    check_resume_options(&saved, config, &config_path)?;
    let path = dir.join(JOURNAL);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: JournalRecord = serde_json::from_str(line)
            .map_err(|e| Error::bad_file(&path, format!("line {}: {e}", i + 1)))?;
        if r.query != records.len() + 1 {
            return Err(Error::bad_file(
                &path,
                format!(
                    "line {}: query {} where {} was due",
                    i + 1,
                    r.query,
                    records.len() + 1
                ),
            ));
        }
        records.push(r);
    }
    if records.len() > config.budget {
        return Err(Error::invalid(
            "--budget",
            format!(
                "{} is below the {} queries the run in {} already made",
                config.budget,
                records.len(),
                dir.path.display()
            ),
        ));
    }
    Ok(records)
}

/// The run's anytime curve: the best metric so far and that architecture's report value.
fn run_svg<A>(
    config: &TableRunConfig,
    records: &[JournalRecord],
    history: &[crate::nas::history::Scored<A>],
) -> String {
    let inc = incumbents(history);
    let metric: Vec<f64> = inc.iter().map(|&i| records[i].metric).collect();
    let report: Vec<f64> = inc.iter().map(|&i| records[i].report).collect();
    let t = &config.table;
    anytime_svg(
        &format!(
            "{} on {} (seed {}): best {} so far",
            config.strategy.name(),
            config.space,
            config.seed,
            t.metric
        ),
        &format!("{} and {} of the best so far", t.metric, t.report),
        &[
            (format!("best {}", t.metric), metric),
            (format!("its {}", t.report), report),
        ],
        &[],
    )
}
