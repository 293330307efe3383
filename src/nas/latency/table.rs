//! The latency table file (JSON): what it was measured on and at, the timing of every
//! piece keyed by signature, and the prediction it makes for an architecture (stem + the
//! sum of its blocks + head, medians).

use super::signature::{arch_pieces, PieceSpec, Scale};
use crate::error::{Error, Result};
use crate::nas::space::mbconv::MbConvArch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The `format` field of a table file.
pub const FORMAT: &str = "nasrs-latency-table";
/// The version of the layout below; a file of another version is refused.
pub const VERSION: u32 = 1;

/// Repeated timings of one piece, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub median_ms: f64,
    pub mean_ms: f64,
    /// 10th and 90th percentiles (nearest rank).
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Timed runs (after the warm-up).
    pub runs: usize,
}

impl Timing {
    /// The summary of `samples_s` (seconds); None when there are none.
    pub fn from_seconds(samples_s: &[f64]) -> Option<Timing> {
        let mut ms: Vec<f64> = samples_s.iter().map(|s| s * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let n = ms.len();
        if n == 0 {
            return None;
        }
        let rank = |q: f64| ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Timing {
            median_ms: if n % 2 == 1 {
                ms[n / 2]
            } else {
                0.5 * (ms[n / 2 - 1] + ms[n / 2])
            },
            mean_ms: ms.iter().sum::<f64>() / n as f64,
            p10_ms: rank(0.1),
            p90_ms: rank(0.9),
            min_ms: ms[0],
            max_ms: ms[n - 1],
            runs: n,
        })
    }
}

/// The stem or the head: its signature and timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedTiming {
    pub key: String,
    #[serde(flatten)]
    pub timing: Timing,
}

/// A latency lookup table for the MBConv space at one scale on one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    /// Always [`FORMAT`].
    pub format: String,
    pub version: u32,
    pub space: String,
    /// The backend's description (`cpu (2 threads, f32)`, the GPU's name).
    pub device: String,
    /// How runs were timed (`wall_clock`, `cuda_events`).
    pub timer: String,
    /// The nasrs build that measured it (version, profile, features).
    pub build: String,
    pub scale: Scale,
    /// Untimed runs before the timed ones, and timed runs, per piece.
    pub warmup: usize,
    pub repeats: usize,
    /// MiB copied before each timed run to evict the caches (0: none).
    pub flush_mib: usize,
    /// Seconds the whole build took.
    pub build_seconds: f64,
    pub stem: KeyedTiming,
    pub head: KeyedTiming,
    /// Every block signature the space produces at this scale.
    pub blocks: BTreeMap<String, Timing>,
}

/// A prediction and its parts, in milliseconds (medians).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub total_ms: f64,
    pub stem_ms: f64,
    pub blocks_ms: f64,
    pub head_ms: f64,
    pub blocks: usize,
}

/// The nasrs build in one phrase: version, profile, device features.
pub fn build_description() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let features = match (cfg!(feature = "cuda"), cfg!(feature = "cuda-sim")) {
        (true, _) => " +cuda",
        (_, true) => " +cuda-sim",
        _ => "",
    };
    format!("nasrs {} {profile}{features}", env!("CARGO_PKG_VERSION"))
}

impl LatencyTable {
    /// Reads a table file, refusing another format or version.
    pub fn load(path: &Path) -> Result<LatencyTable> {
        let bytes = crate::io::read_file(path)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::bad_file(path, format!("not JSON: {e}")))?;
        let format = value.get("format").and_then(|f| f.as_str());
        if format != Some(FORMAT) {
            return Err(Error::bad_file(
                path,
                format!("not a latency table (format {format:?}, expected \"{FORMAT}\")"),
            ));
        }
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(VERSION)) {
            return Err(Error::bad_file(
                path,
                format!("latency table version {version:?}; this nasrs reads version {VERSION}"),
            ));
        }
        let table: LatencyTable = serde_json::from_value(value)
            .map_err(|e| Error::bad_file(path, format!("latency table: {e}")))?;
        table
            .scale
            .validate()
            .map_err(|e| Error::bad_file(path, e.to_string()))?;
        Ok(table)
    }

    /// Writes the table atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::atomic_write_json(path, self)
    }

    /// The median latency of `arch`'s network at the table's own scale.
    pub fn predict(&self, arch: &MbConvArch) -> Result<Prediction> {
        self.predict_at(arch, &self.scale)
    }

    /// The median latency of `arch`'s network at `scale`: an error naming the first piece
    /// the table has no entry for (another scale or image size), or naming `--batch` when
    /// the batch differs (it is not part of the signatures).
    pub fn predict_at(&self, arch: &MbConvArch, scale: &Scale) -> Result<Prediction> {
        if scale.batch != self.scale.batch {
            return Err(Error::invalid(
                "--batch",
                format!(
                    "{} but the latency table was measured at batch {}",
                    scale.batch, self.scale.batch
                ),
            ));
        }
        let mut p = Prediction {
            total_ms: 0.0,
            stem_ms: 0.0,
            blocks_ms: 0.0,
            head_ms: 0.0,
            blocks: 0,
        };
        for piece in arch_pieces(scale, arch)? {
            let ms = match piece.spec {
                PieceSpec::Stem { .. } => self.stem_or_head(&self.stem, &piece.key)?,
                PieceSpec::Head { .. } => self.stem_or_head(&self.head, &piece.key)?,
                PieceSpec::Block(_) => self
                    .blocks
                    .get(&piece.key)
                    .map(|t| t.median_ms)
                    .ok_or_else(|| self.missing(&piece.key))?,
            };
            match piece.spec {
                PieceSpec::Stem { .. } => p.stem_ms = ms,
                PieceSpec::Head { .. } => p.head_ms = ms,
                PieceSpec::Block(_) => {
                    p.blocks_ms += ms;
                    p.blocks += 1;
                }
            }
        }
        p.total_ms = p.stem_ms + p.blocks_ms + p.head_ms;
        Ok(p)
    }

    fn stem_or_head(&self, entry: &KeyedTiming, key: &str) -> Result<f64> {
        if entry.key == key {
            Ok(entry.timing.median_ms)
        } else {
            Err(self.missing(key))
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::invalid(
            "latency table",
            format!(
                "no entry for `{key}`: the table was built at {} on {}; build one at this \
                 scale (nasrs latency build)",
                self.scale.describe(),
                self.device
            ),
        )
    }
}
