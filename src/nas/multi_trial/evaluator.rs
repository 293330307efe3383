//! The tabular evaluator: a [`Table`] with the column searched on (`--metric`, e.g.
//! `cifar10_valid_acc`), the column reported for what the search returns (`--report`, e.g.
//! `cifar10_test_acc`; NB201's protocol: search on validation, report test) and optional
//! size limits read from the table's `params_m` / `flops_m` columns (the multi-objective
//! option as a constraint every strategy honours, never a query outside it), or a soft size
//! penalty on the searched value (MnasNet's reward `ACC x (SIZE / TARGET)^w`, w = -0.07).

use super::table::{Table, Wanted};
use crate::error::{Error, Result};
use crate::nas::space::SearchSpace;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The column of a table holding parameter counts, in millions (NAS-Bench-201's name).
pub const PARAMS_COLUMN: &str = "params_m";
/// The column of a table holding forward FLOPs, in millions (NAS-Bench-201's name).
pub const FLOPS_COLUMN: &str = "flops_m";

/// The table bundled for a space, if any: NAS-Bench-201's 12-epoch table for `nb201`
/// (`./data/nb201-12ep/nb201_12ep.csv` when run from a checkout, else the copy in the crate's
/// source tree, as `data::default_data_dir` finds the bundled images).
pub fn default_table(space: &str) -> Option<PathBuf> {
    if space != "nb201" {
        return None;
    }
    let rel = std::path::Path::new("data")
        .join("nb201-12ep")
        .join("nb201_12ep.csv");
    if rel.is_file() {
        return Some(rel);
    }
    Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
}

/// Which table, which columns, which limits: what a run's `config.json` records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    pub path: PathBuf,
    pub metric: String,
    pub report: String,
    /// Only architectures with `params_m` at most this (`--params-max-m`).
    #[serde(default)]
    pub params_max_m: Option<f64>,
    /// Only architectures with `flops_m` at most this (`--flops-max-m`).
    #[serde(default)]
    pub flops_max_m: Option<f64>,
    /// The searched value multiplied by a size penalty (absent: the metric as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<SizePenalty>,
}

/// MnasNet's soft multi-objective reward on the table's sizes: the searched value is
/// `metric x (params_m / params_target_m)^weight x (flops_m / flops_target_m)^weight` over
/// the targets set (a negative weight favours the smaller of two equally accurate cells).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizePenalty {
    #[serde(default)]
    pub params_target_m: Option<f64>,
    #[serde(default)]
    pub flops_target_m: Option<f64>,
    /// MnasNet's w (-0.07 in the paper).
    pub weight: f64,
}

/// MnasNet's soft-constraint exponent.
pub const MNAS_WEIGHT: f64 = -0.07;

/// One size limit: the column it reads, its bound, the flag that set it.
#[derive(Clone, Debug)]
struct Limit {
    column: usize,
    max: f64,
    flag: &'static str,
}

/// A table ready to answer queries.
pub struct TableEvaluator<S: SearchSpace> {
    pub space: S,
    pub table: Table<S::Arch>,
    pub spec: TableSpec,
    limits: Vec<Limit>,
    /// The penalty's (column, target) pairs and its weight.
    targets: Vec<(usize, f64)>,
    weight: f64,
}

impl<S: SearchSpace> TableEvaluator<S> {
    /// Loads the table of `spec` for `space`; refuses limits no architecture of the table
    /// meets, naming the flag and the smallest value there is.
    pub fn open(space: S, spec: TableSpec) -> Result<Self> {
        let mut wanted = vec![
            Wanted {
                column: &spec.metric,
                asked_by: "--metric",
            },
            Wanted {
                column: &spec.report,
                asked_by: "--report",
            },
        ];
        let mut limits = Vec::new();
        for (max, column, flag) in [
            (spec.params_max_m, PARAMS_COLUMN, "--params-max-m"),
            (spec.flops_max_m, FLOPS_COLUMN, "--flops-max-m"),
        ] {
            let Some(max) = max else { continue };
            if !max.is_finite() || max <= 0.0 {
                return Err(Error::invalid(
                    flag,
                    format!("{max} is not a positive size"),
                ));
            }
            limits.push(Limit {
                column: wanted.len(),
                max,
                flag,
            });
            wanted.push(Wanted {
                column,
                asked_by: flag,
            });
        }
        let mut targets = Vec::new();
        let mut weight = 0.0;
        if let Some(p) = &spec.penalty {
            if !p.weight.is_finite() {
                return Err(Error::invalid(
                    "--penalty-weight",
                    format!("{} is not finite", p.weight),
                ));
            }
            weight = p.weight;
            for (target, column, flag) in [
                (p.params_target_m, PARAMS_COLUMN, "--params-target-m"),
                (p.flops_target_m, FLOPS_COLUMN, "--flops-target-m"),
            ] {
                let Some(target) = target else { continue };
                if !target.is_finite() || target <= 0.0 {
                    return Err(Error::invalid(
                        flag,
                        format!("{target} is not a positive size"),
                    ));
                }
                targets.push((wanted.len(), target));
                wanted.push(Wanted {
                    column,
                    asked_by: flag,
                });
            }
            if targets.is_empty() {
                return Err(Error::invalid(
                    "--penalty-weight",
                    "needs --params-target-m or --flops-target-m",
                ));
            }
        }
        let table = Table::load(&space, &spec.path, &wanted)?;
        for l in &limits {
            let smallest = table
                .archs()
                .iter()
                .filter_map(|a| table.row(a).map(|r| r[l.column]))
                .fold(f64::INFINITY, f64::min);
            if smallest > l.max {
                return Err(Error::invalid(
                    l.flag,
                    format!(
                        "{}: no architecture of {} is that small (the smallest is {smallest})",
                        l.max,
                        spec.path.display()
                    ),
                ));
            }
        }
        Ok(TableEvaluator {
            space,
            table,
            spec,
            limits,
            targets,
            weight,
        })
    }

    /// The searched column's value of `arch` (an error names an architecture not in the table).
    pub fn metric(&self, arch: &S::Arch) -> Result<f64> {
        self.table.value(&self.space, arch, 0)
    }

    /// What the search maximises: the metric times the size penalty (the metric itself
    /// without one). A size of 0 with a negative weight is refused, naming the architecture.
    pub fn objective(&self, arch: &S::Arch) -> Result<f64> {
        let metric = self.metric(arch)?;
        let mut factor = 1.0;
        for &(column, target) in &self.targets {
            let size = self.table.value(&self.space, arch, column)?;
            let f = (size / target).powf(self.weight);
            if !f.is_finite() {
                return Err(Error::invalid(
                    "size penalty",
                    format!(
                        "{} has size {size}, which the penalty (size / {target})^{} cannot weigh",
                        self.space.to_string(arch),
                        self.weight
                    ),
                ));
            }
            factor *= f;
        }
        Ok(metric * factor)
    }

    /// Whether the searched value is the metric times a size penalty.
    pub fn penalized(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The reported column's value of `arch`.
    pub fn report(&self, arch: &S::Arch) -> Result<f64> {
        self.table.value(&self.space, arch, 1)
    }

    /// Whether `arch` meets every limit. Without limits every architecture does (one the
    /// table lacks then reaches the query, which names it); with limits, one the table lacks
    /// does not (its size is unknown).
    pub fn accepts(&self, arch: &S::Arch) -> bool {
        if self.limits.is_empty() {
            return true;
        }
        match self.table.row(arch) {
            Some(row) => self.limits.iter().all(|l| row[l.column] <= l.max),
            None => false,
        }
    }

    /// The architectures of the table inside the limits, in file order: what reference
    /// figures (median, best) are taken over.
    pub fn feasible(&self) -> impl Iterator<Item = &S::Arch> {
        self.table.archs().iter().filter(|a| self.accepts(a))
    }
}
