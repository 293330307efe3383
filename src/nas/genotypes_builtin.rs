//! The published cells of the DARTS search space, by name: DARTS_V1/V2 (Liu et al., ICLR
//! 2019), PC-DARTS (Xu et al., ICLR 2020) and P-DARTS (Chen et al., ICCV 2019), as their
//! reference implementations' `genotypes.py` list them (quark0/darts `cnn/genotypes.py`,
//! yuhuixu1993/PC-DARTS `genotypes.py`, chenxin061/pdarts `genotypes.py`). NASNet-A and
//! AmoebaNet-A, which those files also list, use ops nasrs does not implement: naming them
//! gives an error that says so instead of a different cell.

use super::genotype::{Genotype, Primitive};

use Primitive::{
    AvgPool3x3 as AVG3, DilConv3x3 as DIL3, DilConv5x5 as DIL5, MaxPool3x3 as MAX3,
    SepConv3x3 as SEP3, SepConv5x5 as SEP5, SkipConnect as SKIP,
};

/// One published cell pair. Every built-in concatenates nodes 2..=5 (`range(2, 6)`).
pub struct Builtin {
    /// The canonical name (as `genotypes.py` spells it).
    pub name: &'static str,
    /// Other accepted names, upper case with `_` for `-` (the form `lookup` compares).
    pub aliases: &'static [&'static str],
    /// Where the cell comes from.
    pub source: &'static str,
    normal: [(Primitive, usize); 8],
    reduce: [(Primitive, usize); 8],
}

impl Builtin {
    pub fn genotype(&self) -> Genotype {
        Genotype {
            normal: self.normal.to_vec(),
            normal_concat: vec![2, 3, 4, 5],
            reduce: self.reduce.to_vec(),
            reduce_concat: vec![2, 3, 4, 5],
        }
    }
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "DARTS_V1",
        aliases: &[],
        source: "DARTS (first order), quark0/darts cnn/genotypes.py",
        normal: [
            (SEP3, 1),
            (SEP3, 0),
            (SKIP, 0),
            (SEP3, 1),
            (SKIP, 0),
            (SEP3, 1),
            (SEP3, 0),
            (SKIP, 2),
        ],
        reduce: [
            (MAX3, 0),
            (MAX3, 1),
            (SKIP, 2),
            (MAX3, 0),
            (MAX3, 0),
            (SKIP, 2),
            (SKIP, 2),
            (AVG3, 0),
        ],
    },
    Builtin {
        name: "DARTS_V2",
        // The DARTS repo ends its list with `DARTS = DARTS_V2`.
        aliases: &["DARTS"],
        source: "DARTS (second order), quark0/darts cnn/genotypes.py",
        normal: [
            (SEP3, 0),
            (SEP3, 1),
            (SEP3, 0),
            (SEP3, 1),
            (SEP3, 1),
            (SKIP, 0),
            (SKIP, 0),
            (DIL3, 2),
        ],
        reduce: [
            (MAX3, 0),
            (MAX3, 1),
            (SKIP, 2),
            (MAX3, 1),
            (MAX3, 0),
            (SKIP, 2),
            (SKIP, 2),
            (MAX3, 1),
        ],
    },
    Builtin {
        name: "PC_DARTS",
        // `PC_DARTS_cifar` in genotypes.py, `PCDARTS` its train.py default.
        aliases: &["PC_DARTS_CIFAR", "PCDARTS"],
        source: "PC-DARTS searched on CIFAR-10, yuhuixu1993/PC-DARTS genotypes.py (PC_DARTS_cifar)",
        normal: [
            (SEP3, 1),
            (SKIP, 0),
            (SEP3, 0),
            (DIL3, 1),
            (SEP5, 0),
            (SEP3, 1),
            (AVG3, 0),
            (DIL3, 1),
        ],
        reduce: [
            (SEP5, 1),
            (MAX3, 0),
            (SEP5, 1),
            (SEP5, 2),
            (SEP3, 0),
            (SEP3, 3),
            (SEP3, 1),
            (SEP3, 2),
        ],
    },
    Builtin {
        name: "PC_DARTS_IMAGE",
        aliases: &["PC_DARTS_IMAGENET"],
        source: "PC-DARTS searched on ImageNet, yuhuixu1993/PC-DARTS genotypes.py (PC_DARTS_image)",
        normal: [
            (SKIP, 1),
            (SEP3, 0),
            (SEP3, 0),
            (SKIP, 1),
            (SEP3, 1),
            (SEP3, 3),
            (SEP3, 1),
            (DIL5, 4),
        ],
        reduce: [
            (SEP3, 0),
            (SKIP, 1),
            (DIL5, 2),
            (MAX3, 1),
            (SEP3, 2),
            (SEP3, 1),
            (SEP5, 0),
            (SEP3, 3),
        ],
    },
    Builtin {
        name: "PDARTS",
        aliases: &["P_DARTS"],
        source: "P-DARTS searched on CIFAR-10, chenxin061/pdarts genotypes.py",
        normal: [
            (SKIP, 0),
            (DIL3, 1),
            (SKIP, 0),
            (SEP3, 1),
            (SEP3, 1),
            (SEP3, 3),
            (SEP3, 0),
            (DIL5, 4),
        ],
        reduce: [
            (AVG3, 0),
            (SEP5, 1),
            (SEP3, 0),
            (DIL5, 2),
            (MAX3, 0),
            (DIL3, 1),
            (DIL3, 1),
            (DIL5, 3),
        ],
    },
];

/// Published cells that nasrs cannot build, with the reason (normalised name, message).
const UNAVAILABLE: &[(&[&str], &str)] = &[
    (
        &["NASNET", "NASNET_A"],
        "NASNet (NASNet-A as in the DARTS repo's genotypes.py) uses sep_conv_7x7 in its \
         reduction cell, which nasrs does not implement",
    ),
    (
        &["AMOEBANET", "AMOEBANET_A"],
        "AmoebaNet (AmoebaNet-A as in the DARTS repo's genotypes.py) uses sep_conv_7x7 and \
         conv_7x1_1x7 in its reduction cell, which nasrs does not implement",
    ),
];

/// Upper case, `-` as `_`: `p-darts`, `P_DARTS` and `P-DARTS` compare equal.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_uppercase().replace('-', "_")
}

/// The built-in named `name` (case-insensitive, `-` or `_`), aliases included.
pub fn lookup(name: &str) -> Option<&'static Builtin> {
    let n = normalise(name);
    BUILTINS
        .iter()
        .find(|b| b.name == n || b.aliases.contains(&n.as_str()))
}

/// Why a published cell that nasrs does not ship cannot be used, if `name` is one.
pub fn unavailable(name: &str) -> Option<&'static str> {
    let n = normalise(name);
    UNAVAILABLE
        .iter()
        .find(|(names, _)| names.contains(&n.as_str()))
        .map(|&(_, why)| why)
}

/// The canonical names, for messages and `--help`.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}
