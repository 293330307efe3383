//! A training search's latency objective, loaded (`--latency-table`, `--latency-target`):
//! each architecture's predicted latency from the table, the reward the strategy is told
//! (MnasNet's soft or hard reward, or the accuracy under a plain limit), whether it may be
//! proposed at all, and at the end the accuracy-latency Pareto front of the results
//! (`pareto.json`, `pareto.svg`). Only the MBConv space has latency tables.

use crate::error::{Error, Result};
use crate::io::{atomic_write, atomic_write_json};
use crate::nas::latency::{pareto_svg, LatencyObjective, LatencyTable, ParetoPoint};
use crate::nas::space::mbconv::MbConvArch;
use serde::Serialize;
use std::path::Path;

pub const PARETO_JSON: &str = "pareto.json";
pub const PARETO_SVG: &str = "pareto.svg";

/// The objective with its table.
pub struct LatencyTerms {
    pub objective: LatencyObjective,
    table: LatencyTable,
}

/// `pareto.json`.
#[derive(Serialize)]
struct ParetoFile<'a> {
    target_ms: f64,
    table: &'a Path,
    device: &'a str,
    scale: String,
    /// Every ok result at the largest budget trained.
    results: &'a [ParetoPoint],
    /// The non-dominated ones, fastest first.
    front: Vec<ParetoPoint>,
}

impl LatencyTerms {
    /// Loads the table for a search of `space` (refused unless `mbconv`), checking that it
    /// predicts the space's architectures (B0's at its scale).
    pub fn open(objective: &LatencyObjective, space: &str) -> Result<LatencyTerms> {
        objective.validate()?;
        if space != "mbconv" {
            return Err(Error::invalid(
                "--latency-table",
                format!("latency tables are for --space mbconv, not {space}"),
            ));
        }
        let table = LatencyTable::load(&objective.table)?;
        table
            .predict(&MbConvArch::b0())
            .map_err(|e| Error::bad_file(&objective.table, e.to_string()))?;
        Ok(LatencyTerms {
            objective: objective.clone(),
            table,
        })
    }

    /// The predicted latency (ms) of the architecture whose canonical form is `arch`.
    pub fn latency_ms(&self, arch: &str) -> Result<f64> {
        Ok(self.table.predict(&MbConvArch::parse(arch)?)?.total_ms)
    }

    /// Whether `arch` may be proposed (always, but over the target under a plain limit).
    pub fn accepts(&self, arch: &str) -> bool {
        self.latency_ms(arch)
            .is_ok_and(|ms| self.objective.accepts(ms))
    }

    /// What the strategy is told for accuracy `acc` of `arch`, and the latency.
    pub fn reward(&self, arch: &str, acc: f64) -> Result<(f64, f64)> {
        let ms = self.latency_ms(arch)?;
        Ok((self.objective.reward(acc, ms), ms))
    }

    /// Refuses to resume a run whose table changed: trial `trial` of `arch` was journaled
    /// at `journaled_ms`, and the strategy's state was built on the rewards of then.
    pub fn check_journaled(&self, trial: usize, arch: &str, journaled_ms: f64) -> Result<()> {
        let ms = self.latency_ms(arch)?;
        if (ms - journaled_ms).abs() > 1e-9 * journaled_ms.abs().max(1.0) {
            return Err(Error::bad_file(
                &self.objective.table,
                format!(
                    "it predicts {ms} ms for trial {trial} ({arch}) but the run journaled \
                     {journaled_ms} ms: the table changed since the run started"
                ),
            ));
        }
        Ok(())
    }

    /// Writes `pareto.json` and `pareto.svg` of `results` into `root`.
    pub fn write_front(&self, root: &Path, results: &[ParetoPoint]) -> Result<()> {
        let file = ParetoFile {
            target_ms: self.objective.target_ms,
            table: &self.objective.table,
            device: &self.table.device,
            scale: self.table.scale.describe(),
            results,
            front: crate::nas::latency::front(results),
        };
        atomic_write_json(&root.join(PARETO_JSON), &file)?;
        let title = format!(
            "accuracy vs predicted latency ({}, target {} ms)",
            self.table.device, self.objective.target_ms
        );
        let svg = pareto_svg(&title, results, self.objective.target_ms);
        atomic_write(&root.join(PARETO_SVG), svg.as_bytes())
    }
}
