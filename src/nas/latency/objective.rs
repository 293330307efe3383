//! Latency as an objective of a search (MnasNet, Tan et al. 2019): the reward of an
//! architecture with accuracy `acc` and predicted latency `lat` under a target `T` is
//! `acc * (lat / T)^w`, with `w` = -0.07 for the soft constraint (every millisecond counts a
//! little), or for the hard one `w = 0` at or under the target and `w = -1` over it; a plain
//! limit instead never proposes an architecture over the target. The latency is the table's
//! prediction (`table.rs`) for the architecture at the table's own scale: the table fixes the
//! deployment setting (device, batch, image size) the search optimises for.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// MnasNet's soft exponent.
pub const MNAS_SOFT_WEIGHT: f64 = -0.07;

/// How latency enters the search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LatencyReward {
    /// `acc * (lat / T)^weight` (MnasNet's soft constraint at weight -0.07).
    Soft { weight: f64 },
    /// MnasNet's hard constraint: `acc` at or under `T`, `acc * T / lat` over it.
    Hard,
    /// Architectures over `T` are never proposed; the reward is the accuracy.
    Limit,
}

/// The latency objective of a search: the table, the target and the reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyObjective {
    pub table: PathBuf,
    pub target_ms: f64,
    pub reward: LatencyReward,
}

impl LatencyObjective {
    pub fn validate(&self) -> Result<()> {
        if !(self.target_ms.is_finite() && self.target_ms > 0.0) {
            return Err(Error::invalid(
                "--latency-target",
                format!(
                    "{} is not a positive number of milliseconds",
                    self.target_ms
                ),
            ));
        }
        if let LatencyReward::Soft { weight } = self.reward {
            if !(weight.is_finite() && weight <= 0.0) {
                return Err(Error::invalid(
                    "--latency-weight",
                    format!("{weight} is not an exponent <= 0"),
                ));
            }
        }
        Ok(())
    }

    /// Whether an architecture of latency `lat_ms` may be proposed at all.
    pub fn accepts(&self, lat_ms: f64) -> bool {
        !matches!(self.reward, LatencyReward::Limit) || lat_ms <= self.target_ms
    }

    /// The reward of accuracy `acc` at latency `lat_ms`.
    pub fn reward(&self, acc: f64, lat_ms: f64) -> f64 {
        let ratio = lat_ms / self.target_ms;
        let w = match self.reward {
            LatencyReward::Soft { weight } => weight,
            LatencyReward::Hard if ratio > 1.0 => -1.0,
            LatencyReward::Hard | LatencyReward::Limit => 0.0,
        };
        acc * ratio.powf(w)
    }
}
