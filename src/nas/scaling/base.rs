//! The network compound scaling starts from (`--base`): a JSON file with `arch` (and
//! `space: "mbconv"` if it says a space): the `best.json` of `nasrs search ... --space mbconv
//! --evaluator train` (which records the trials' `width_mult`, `depth_mult` and `resolution`),
//! or the scaled network `nasrs scale apply` wrote (the same three), whose scale is then the
//! base's; a text file holding one MBConv arch
//! string; or, when no such file exists, an EfficientNet name `b0`..`b7` (B0's architecture at
//! that row's width and depth of `data/efficientnet/scaling.csv`; the table's resolution is
//! ImageNet's, so the base resolution is then the dataset's unless given).

use crate::error::{Error, Result};
use crate::nas::mbconv_model::plan::ScalingRow;
use crate::nas::space::mbconv::MbConvArch;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The network before scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingBase {
    /// The MBConv arch string.
    pub arch: String,
    pub width_mult: f64,
    pub depth_mult: f64,
    /// The image side the base trains at (None: the dataset's own).
    pub resolution: Option<usize>,
    /// Where it came from: the file, or the EfficientNet name.
    pub source: String,
}

/// Reads the base `spec` names (a file, else `b0`..`b7`): see the module docs. A missing
/// file, a file of another space or without an architecture is refused naming the file.
pub fn read_base(spec: &str) -> Result<ScalingBase> {
    let path = Path::new(spec);
    if !path.exists() {
        let named = spec.len() == 2 && spec.to_ascii_lowercase().starts_with('b');
        if named {
            let row =
                ScalingRow::named(spec).map_err(|e| Error::invalid("--base", e.to_string()))?;
            return Ok(ScalingBase {
                arch: MbConvArch::b0().to_arch_string(),
                width_mult: row.width,
                depth_mult: row.depth,
                resolution: None,
                source: row.model,
            });
        }
        return Err(Error::invalid(
            "--base",
            format!(
                "{spec}: no such file (expected a best.json of an mbconv search, a scaled \
                 network's JSON, an arch string file, or b0..b7)"
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::bad_file(path, why);
    let source = path.display().to_string();
    if !text.trim_start().starts_with('{') {
        let arch = MbConvArch::parse(text.trim())
            .map_err(|e| bad(format!("not an MBConv arch string: {e}")))?;
        return Ok(ScalingBase {
            arch: arch.to_arch_string(),
            width_mult: 1.0,
            depth_mult: 1.0,
            resolution: None,
            source,
        });
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if let Some(space) = json.get("space") {
        if space.as_str() != Some("mbconv") {
            return Err(bad(format!(
                "is a network of space {space}; compound scaling scales MBConv networks \
                 (space \"mbconv\")"
            )));
        }
    }
    let arch = json
        .get("arch")
        .and_then(|a| a.as_str())
        .ok_or_else(|| bad("has no \"arch\" string".to_string()))?;
    let arch = MbConvArch::parse(arch).map_err(|e| bad(format!("\"arch\": {e}")))?;
    let number = |key: &str| -> Result<Option<f64>> {
        match json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(Some)
                .ok_or_else(|| bad(format!("\"{key}\" {v} is not a positive number"))),
        }
    };
    let resolution = match json.get("resolution") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&r| r > 0)
                .map(|r| r as usize)
                .ok_or_else(|| bad(format!("\"resolution\" {v} is not an image side")))?,
        ),
    };
    Ok(ScalingBase {
        arch: arch.to_arch_string(),
        width_mult: number("width_mult")?.unwrap_or(1.0),
        depth_mult: number("depth_mult")?.unwrap_or(1.0),
        resolution,
        source,
    })
}
