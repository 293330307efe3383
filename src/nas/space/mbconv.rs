//! The MBConv space (MnasNet / EfficientNet-B0 style): a chain of seven stages of MBConv
//! blocks on B0's channel and stride plan, each stage choosing its depthwise kernel
//! {3, 5, 7}, expansion {1, 3, 4, 6}, number of blocks {base - 1, base, base + 1} (never
//! below 1, so the two stages of one B0 block choose from {1, 2}) and squeeze-and-excitation
//! {none, 0.25}: 3 * 4 * 3 * 2 = 72 choices for each of five stages and 48 for the other
//! two, about 4.5e12 architectures.
//!
//! Decisions, stage by stage: kernel, expansion, layers, SE (28 in all).
//!
//! The canonical string lists the stages separated by `-`, each `e{expansion}k{kernel}l{layers}`
//! followed by `se` when the stage has SE: EfficientNet-B0 is
//! `e1k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se`, which `parse` also
//! accepts as `b0`. The JSON form is `{"space": "mbconv", "arch": "<string>"}`.

use super::{check_decisions, SearchSpace};
use crate::error::{Error, Result};

/// Stages of the chain.
pub const STAGES: usize = 7;
/// B0's blocks per stage: the middle of each stage's layer choices.
pub const BASE_LAYERS: [usize; STAGES] = [1, 2, 2, 3, 3, 4, 1];
pub const KERNELS: [usize; 3] = [3, 5, 7];
pub const EXPANSIONS: [usize; 4] = [1, 3, 4, 6];
/// B0's kernel and expansion per stage.
const B0_KERNELS: [usize; STAGES] = [3, 3, 5, 3, 5, 5, 3];
const B0_EXPANSIONS: [usize; STAGES] = [1, 6, 6, 6, 6, 6, 6];

/// One stage's choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MbStage {
    /// Depthwise kernel: 3, 5 or 7.
    pub kernel: usize,
    /// Expansion ratio of the 1x1 expand conv: 1 (no expand conv), 3, 4 or 6.
    pub expand: usize,
    /// MBConv blocks in the stage, before any depth multiplier.
    pub layers: usize,
    /// Squeeze-and-excitation with ratio 0.25.
    pub se: bool,
}

/// An architecture of the MBConv space: one [`MbStage`] per stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MbConvArch {
    pub stages: [MbStage; STAGES],
}

/// The layer counts stage `s` may take.
pub fn layer_choices(s: usize) -> Vec<usize> {
    let base = BASE_LAYERS[s];
    (base.saturating_sub(1).max(1)..=base + 1).collect()
}

impl MbConvArch {
    /// EfficientNet-B0: its kernels, expansions and repeats, SE 0.25 in every stage.
    pub fn b0() -> MbConvArch {
        let mut stages = [MbStage {
            kernel: 3,
            expand: 1,
            layers: 1,
            se: true,
        }; STAGES];
        for (s, st) in stages.iter_mut().enumerate() {
            *st = MbStage {
                kernel: B0_KERNELS[s],
                expand: B0_EXPANSIONS[s],
                layers: BASE_LAYERS[s],
                se: true,
            };
        }
        MbConvArch { stages }
    }

    /// The canonical string (module docs).
    pub fn to_arch_string(&self) -> String {
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(|s| {
                format!(
                    "e{}k{}l{}{}",
                    s.expand,
                    s.kernel,
                    s.layers,
                    if s.se { "se" } else { "" }
                )
            })
            .collect();
        parts.join("-")
    }

    /// Parses the canonical string, or `b0`; every stage's values must be the space's.
    pub fn parse(text: &str) -> Result<MbConvArch> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("b0") {
            return Ok(Self::b0());
        }
        let bad = |why: String| Error::invalid("MBConv arch string", format!("'{text}': {why}"));
        let parts: Vec<&str> = text.split('-').collect();
        if parts.len() != STAGES {
            return Err(bad(format!(
                "{} stages separated by '-', expected {STAGES} (or 'b0')",
                parts.len()
            )));
        }
        let mut arch = Self::b0();
        for (s, (part, st)) in parts.iter().zip(arch.stages.iter_mut()).enumerate() {
            let stage_bad = |why: &str| {
                bad(format!(
                    "stage {s} '{part}' {why} (expected e{{1,3,4,6}}k{{3,5,7}}l{{N}}[se])"
                ))
            };
            let (body, se) = match part.strip_suffix("se") {
                Some(b) => (b, true),
                None => (*part, false),
            };
            let rest = body
                .strip_prefix('e')
                .ok_or_else(|| stage_bad("does not start with 'e'"))?;
            let (e, rest) = rest
                .split_once('k')
                .ok_or_else(|| stage_bad("has no 'k'"))?;
            let (k, l) = rest
                .split_once('l')
                .ok_or_else(|| stage_bad("has no 'l'"))?;
            let num = |v: &str, what: &str| {
                v.parse::<usize>()
                    .map_err(|_| stage_bad(&format!("has {what} '{v}', not a number")))
            };
            *st = MbStage {
                kernel: num(k, "kernel")?,
                expand: num(e, "expansion")?,
                layers: num(l, "layers")?,
                se,
            };
            if !KERNELS.contains(&st.kernel) {
                return Err(stage_bad(&format!("has kernel {}", st.kernel)));
            }
            if !EXPANSIONS.contains(&st.expand) {
                return Err(stage_bad(&format!("has expansion {}", st.expand)));
            }
            if !layer_choices(s).contains(&st.layers) {
                return Err(stage_bad(&format!(
                    "has {} layers, this stage takes {:?}",
                    st.layers,
                    layer_choices(s)
                )));
            }
        }
        Ok(arch)
    }
}

/// The MBConv space.
#[derive(Clone, Debug)]
pub struct MbConvSpace {
    choices: Vec<usize>,
}

impl Default for MbConvSpace {
    fn default() -> Self {
        let choices = (0..STAGES)
            .flat_map(|s| [KERNELS.len(), EXPANSIONS.len(), layer_choices(s).len(), 2])
            .collect();
        MbConvSpace { choices }
    }
}

/// Decisions per stage: kernel, expansion, layers, SE.
const PER_STAGE: usize = 4;

impl SearchSpace for MbConvSpace {
    type Arch = MbConvArch;

    fn name(&self) -> &'static str {
        "mbconv"
    }
    fn choices(&self) -> &[usize] {
        &self.choices
    }
    fn decision_name(&self, i: usize) -> String {
        let what = ["kernel", "expansion", "layers", "SE"];
        match what.get(i % PER_STAGE) {
            Some(w) if i < STAGES * PER_STAGE => format!("stage {} {w}", i / PER_STAGE),
            _ => format!("decision {i}"),
        }
    }
    fn encode(&self, arch: &MbConvArch) -> Vec<usize> {
        let pos = |xs: &[usize], v: usize| xs.iter().position(|&x| x == v).unwrap_or(0);
        arch.stages
            .iter()
            .enumerate()
            .flat_map(|(s, st)| {
                [
                    pos(&KERNELS, st.kernel),
                    pos(&EXPANSIONS, st.expand),
                    pos(&layer_choices(s), st.layers),
                    usize::from(st.se),
                ]
            })
            .collect()
    }
    fn decode(&self, decisions: &[usize]) -> Result<MbConvArch> {
        check_decisions(self, decisions)?;
        let mut arch = MbConvArch::b0();
        for (s, (st, d)) in arch
            .stages
            .iter_mut()
            .zip(decisions.chunks(PER_STAGE))
            .enumerate()
        {
            *st = MbStage {
                kernel: KERNELS[d[0]],
                expand: EXPANSIONS[d[1]],
                layers: layer_choices(s)[d[2]],
                se: d[3] == 1,
            };
        }
        Ok(arch)
    }
    fn to_string(&self, arch: &MbConvArch) -> String {
        arch.to_arch_string()
    }
    fn parse(&self, text: &str) -> Result<MbConvArch> {
        MbConvArch::parse(text)
    }
    fn to_json(&self, arch: &MbConvArch) -> serde_json::Value {
        serde_json::json!({ "space": "mbconv", "arch": arch.to_arch_string() })
    }
    fn from_json(&self, value: &serde_json::Value) -> Result<MbConvArch> {
        let arch = value.get("arch").and_then(|a| a.as_str()).ok_or_else(|| {
            Error::invalid(
                "MBConv architecture JSON",
                "expected an object with an \"arch\" string".to_string(),
            )
        })?;
        MbConvArch::parse(arch)
    }
}
