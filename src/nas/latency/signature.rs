//! What a latency table is keyed by: the scale of the network (batch, image size, width and
//! depth multipliers, input channels, classes), the pieces an architecture's network is
//! made of at that scale (stem, MBConv blocks, head), each with a signature string and its
//! input shape, and every piece the MBConv space can produce at one scale.
//!
//! A block's signature names what decides its work: `mbconv e6 k5 se0.25 s2 in40 out80
//! @ [40,28,28]` (expansion, kernel, SE ratio or `se0`, stride, channels in and out, input
//! `[C,H,W]`). Every conv of the network pads to `ceil(side / stride)`, so each stage's input
//! side is fixed by the image size whatever the choices.

use crate::error::{Error, Result};
use crate::nas::mbconv_model::plan::{self, BlockPlan, B0_STAGES};
use crate::nas::mbconv_model::MbConvConfig;
use crate::nas::space::mbconv::{layer_choices, MbConvArch, MbStage, EXPANSIONS, KERNELS, STAGES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The network scale one table is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    /// Images per forward.
    pub batch: usize,
    /// Image side (square images).
    pub size: usize,
    pub width_mult: f64,
    pub depth_mult: f64,
    pub in_channels: usize,
    pub classes: usize,
}

impl Scale {
    /// Refuses an empty batch, image, input or output, naming the flag; the multipliers are
    /// checked by the network's plan.
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--batch", self.batch),
            ("--size", self.size),
            ("--in-channels", self.in_channels),
            ("--classes", self.classes),
        ] {
            if v == 0 {
                return Err(Error::invalid(flag, "must be at least 1"));
            }
        }
        if self.size > 4096 || self.batch > 4096 {
            return Err(Error::invalid(
                if self.size > 4096 {
                    "--size"
                } else {
                    "--batch"
                },
                "is over 4096",
            ));
        }
        plan::blocks(&MbConvArch::b0(), self.width_mult, self.depth_mult).map(|_| ())
    }

    /// The network configuration of `arch` at this scale (eval mode: dropout is unused).
    pub fn config(&self, arch: MbConvArch) -> MbConvConfig {
        MbConvConfig {
            width_mult: self.width_mult,
            depth_mult: self.depth_mult,
            ..MbConvConfig::new(arch, self.classes, self.in_channels)
        }
    }

    /// The scale in one phrase for messages.
    pub fn describe(&self) -> String {
        format!(
            "batch {} size {} width {} depth {} in-channels {} classes {}",
            self.batch, self.size, self.width_mult, self.depth_mult, self.in_channels, self.classes
        )
    }
}

/// What a piece is, with what building it needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PieceSpec {
    /// The stem conv to this many channels.
    Stem {
        channels: usize,
    },
    Block(BlockPlan),
    /// The head conv from the last stage's channels to `channels`, pooling, classifier.
    Head {
        last: usize,
        channels: usize,
    },
}

/// One piece of a network at a scale: its signature (the table's key) and input shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub key: String,
    /// `[C, H, W]` of one image.
    pub input: [usize; 3],
    pub spec: PieceSpec,
}

fn shape_text(s: [usize; 3]) -> String {
    format!("[{},{},{}]", s[0], s[1], s[2])
}

/// The stem, every block in order, and the head of `arch`'s network at `scale`.
pub fn arch_pieces(scale: &Scale, arch: &MbConvArch) -> Result<Vec<Piece>> {
    let (blocks, stem_c, head_c) = plan::blocks(arch, scale.width_mult, scale.depth_mult)?;
    let mut side = scale.size.div_ceil(2);
    let mut pieces = vec![Piece {
        key: format!(
            "stem in{} out{stem_c} @ {}",
            scale.in_channels,
            shape_text([scale.in_channels, scale.size, scale.size])
        ),
        input: [scale.in_channels, scale.size, scale.size],
        spec: PieceSpec::Stem { channels: stem_c },
    }];
    for p in &blocks {
        let input = [p.in_channels, side, side];
        let se = if p.se_channels.is_some() {
            format!("se{}", plan::SE_RATIO)
        } else {
            "se0".to_string()
        };
        pieces.push(Piece {
            key: format!(
                "mbconv e{} k{} {se} s{} in{} out{} @ {}",
                arch.stages[p.stage].expand,
                p.kernel,
                p.stride,
                p.in_channels,
                p.out_channels,
                shape_text(input)
            ),
            input,
            spec: PieceSpec::Block(*p),
        });
        side = side.div_ceil(p.stride);
    }
    let last = blocks.last().map_or(stem_c, |p| p.out_channels);
    let input = [last, side, side];
    pieces.push(Piece {
        key: format!(
            "head in{last} out{head_c} classes{} @ {}",
            scale.classes,
            shape_text(input)
        ),
        input,
        spec: PieceSpec::Head {
            last,
            channels: head_c,
        },
    });
    Ok(pieces)
}

/// Every piece the MBConv space can produce at `scale`, each signature once: the stem, for
/// each stage and each kernel x expansion x SE the stage's first block (its stride, the
/// previous stage's channels in) and its repeated block (stride 1, channels in = out) where
/// some layer count repeats it, and the head.
///
/// Every stage has at least one block, so a stage's input channels and side do not depend
/// on the choices: the union over the uniform architectures (one kernel, expansion and SE
/// everywhere, each stage at its most layers) holds every piece of every architecture.
pub fn space_pieces(scale: &Scale) -> Result<Vec<Piece>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for arch in uniform_archs() {
        for piece in arch_pieces(scale, &arch)? {
            if seen.insert(piece.key.clone()) {
                out.push(piece);
            }
        }
    }
    Ok(out)
}

/// The architectures with one kernel, expansion and SE choice in every stage and each
/// stage at its most layers (3 x 4 x 2 = 24).
pub fn uniform_archs() -> Vec<MbConvArch> {
    let mut archs = Vec::new();
    for &kernel in &KERNELS {
        for &expand in &EXPANSIONS {
            for se in [false, true] {
                let mut arch = MbConvArch::b0();
                for (s, st) in arch.stages.iter_mut().enumerate() {
                    *st = MbStage {
                        kernel,
                        expand,
                        layers: layer_choices(s).into_iter().max().unwrap_or(1),
                        se,
                    };
                }
                archs.push(arch);
            }
        }
    }
    debug_assert_eq!(B0_STAGES.len(), STAGES);
    archs
}
