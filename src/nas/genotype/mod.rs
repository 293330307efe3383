//! The eight DARTS primitives and the genotype: the discrete cell derived from the alphas
//! (for each node, the two strongest incoming edges by their largest non-`none` weight,
//! each with its arg-max non-`none` op), written as JSON or in the Python form of the DARTS
//! family's `genotypes.py` (`to_python`, `from_python`, `PyGenotypes` for whole files). The
//! published cells are built in by name (`builtin`, from `genotypes_builtin`).
//!
//! This file owns the types, the derivation from the alphas and JSON (serde); the Python
//! form is `python.rs` (printing, `from_python`, whole files), read by the tokenizer in
//! `py_tokens.rs` and the `Genotype(...)` parser in `py_parser.rs`.

mod py_parser;
mod py_tokens;
mod python;

pub use python::{PyGenotypes, PySyntaxError};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The DARTS primitives, in the paper's order (the column order of the alphas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    None,
    MaxPool3x3,
    AvgPool3x3,
    SkipConnect,
    SepConv3x3,
    SepConv5x5,
    DilConv3x3,
    DilConv5x5,
}

impl Primitive {
    pub const ALL: [Primitive; 8] = [
        Primitive::None,
        Primitive::MaxPool3x3,
        Primitive::AvgPool3x3,
        Primitive::SkipConnect,
        Primitive::SepConv3x3,
        Primitive::SepConv5x5,
        Primitive::DilConv3x3,
        Primitive::DilConv5x5,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Primitive::None => "none",
            Primitive::MaxPool3x3 => "max_pool_3x3",
            Primitive::AvgPool3x3 => "avg_pool_3x3",
            Primitive::SkipConnect => "skip_connect",
            Primitive::SepConv3x3 => "sep_conv_3x3",
            Primitive::SepConv5x5 => "sep_conv_5x5",
            Primitive::DilConv3x3 => "dil_conv_3x3",
            Primitive::DilConv5x5 => "dil_conv_5x5",
        }
    }

    /// Parses a comma-separated op set such as `none,skip_connect,sep_conv_3x3`.
    pub fn parse_list(s: &str) -> Result<Vec<Primitive>> {
        let ops: Vec<Primitive> = s
            .split(',')
            .map(|p| p.trim().parse())
            .collect::<Result<_>>()?;
        if ops.is_empty() {
            return Err(Error::invalid("--ops", "the op set is empty"));
        }
        for (i, a) in ops.iter().enumerate() {
            if ops[..i].contains(a) {
                return Err(Error::invalid(
                    "--ops",
                    format!("'{}' is listed twice", a.name()),
                ));
            }
        }
        Ok(ops)
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Primitive {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Primitive::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Primitive::ALL.iter().map(|p| p.name()).collect();
                Error::invalid(
                    "op",
                    format!(
                        "'{s}' is not a DARTS primitive (expected one of {})",
                        names.join(", ")
                    ),
                )
            })
    }
}

impl Serialize for Primitive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Primitive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A discrete cell pair, in the DARTS paper's format: each node lists two (op, input) pairs,
/// input 0 and 1 being the two cell inputs and 2.. the earlier nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genotype {
    pub normal: Vec<(Primitive, usize)>,
    pub normal_concat: Vec<usize>,
    pub reduce: Vec<(Primitive, usize)>,
    pub reduce_concat: Vec<usize>,
}

/// Picks the two strongest inputs of each node from `weights` (softmax(alpha), one row per
/// edge in the supernet's edge order, one column per op of `ops`).
pub fn parse_cell(
    weights: &[Vec<f64>],
    ops: &[Primitive],
    steps: usize,
) -> Result<Vec<(Primitive, usize)>> {
    let none = ops.iter().position(|&p| p == Primitive::None);
    if ops.len() - usize::from(none.is_some()) == 0 {
        return Err(Error::invalid(
            "op set",
            "a genotype needs at least one op other than none",
        ));
    }
    if let Some((e, row)) = weights
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != ops.len())
    {
        return Err(Error::shape(
            "genotype",
            format!("edge {e} has {} weights for {} ops", row.len(), ops.len()),
        ));
    }
    let best_op = |row: &[f64]| -> usize {
        let mut best: Option<usize> = None;
        for k in 0..row.len() {
            if Some(k) != none && best.is_none_or(|b| row[k] > row[b]) {
                best = Some(k);
            }
        }
        best.unwrap_or(0)
    };
    let mut gene = Vec::new();
    let mut start = 0;
    for i in 0..steps {
        let n = i + 2;
        let rows = weights.get(start..start + n).ok_or_else(|| {
            Error::shape(
                "genotype",
                format!("{} edges for {steps} nodes", weights.len()),
            )
        })?;
        // NaN ranks last: a total order, which `sort_by` needs (it may panic without one).
        let strength = |j: usize| {
            let s = rows[j][best_op(&rows[j])];
            if s.is_nan() {
                f64::NEG_INFINITY
            } else {
                s
            }
        };
        let mut edges: Vec<usize> = (0..n).collect();
        // Stable sort by decreasing strength: ties keep the lower input first, as Python's sorted.
        edges.sort_by(|&a, &b| strength(b).total_cmp(&strength(a)));
        for &j in edges.iter().take(2) {
            gene.push((ops[best_op(&rows[j])], j));
        }
        start += n;
    }
    Ok(gene)
}

impl Genotype {
    pub fn from_weights(
        normal: &[Vec<f64>],
        reduce: &[Vec<f64>],
        ops: &[Primitive],
        steps: usize,
        multiplier: usize,
    ) -> Result<Self> {
        if multiplier == 0 || multiplier > steps {
            return Err(Error::invalid(
                "multiplier",
                format!("{multiplier} must be in 1..={steps}"),
            ));
        }
        let concat: Vec<usize> = (2 + steps - multiplier..steps + 2).collect();
        Ok(Genotype {
            normal: parse_cell(normal, ops, steps)?,
            normal_concat: concat.clone(),
            reduce: parse_cell(reduce, ops, steps)?,
            reduce_concat: concat,
        })
    }

    /// A built-in genotype by name, case-insensitive, `-` or `_`: `DARTS_V1`, `DARTS_V2`
    /// (alias `DARTS`), `PC_DARTS`, `PC_DARTS_IMAGE`, `PDARTS` (see `genotypes_builtin`).
    pub fn builtin(name: &str) -> Option<Genotype> {
        super::genotypes_builtin::lookup(name).map(|b| b.genotype())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
