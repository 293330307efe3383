//! Which genotype a `--genotype` spec names (a built-in, an inline `Genotype(...)`, a JSON or
//! Python file, `FILE:NAME`), and whether an evaluation network can be built from it
//! ([`validate_genotype`]); errors name the flag or the file.

use crate::error::{Error, Result};
use crate::nas::genotype::{Genotype, Primitive, PyGenotypes};
use crate::nas::genotypes_builtin;
use std::path::Path;

/// A genotype a network can be built from: pairs of ops per node, inputs that exist.
pub fn validate_genotype(g: &Genotype) -> Result<()> {
    for (cell, ops, concat) in [
        ("normal", &g.normal, &g.normal_concat),
        ("reduce", &g.reduce, &g.reduce_concat),
    ] {
        if ops.is_empty() || ops.len() % 2 != 0 {
            return Err(Error::invalid(
                "genotype",
                format!(
                    "the {cell} cell has {} ops; it needs two per node",
                    ops.len()
                ),
            ));
        }
        for (k, &(_, input)) in ops.iter().enumerate() {
            let node = k / 2;
            if k % 2 == 1 && ops[k - 1].0 == Primitive::None && ops[k].0 == Primitive::None {
                // Its state would be all zero, a tensor the network never materialises.
                return Err(Error::invalid(
                    "genotype",
                    format!("{cell} node {node} has two none ops"),
                ));
            }
            if input >= node + 2 {
                return Err(Error::invalid(
                    "genotype",
                    format!(
                        "{cell} op {k} reads state {input}, but node {node} can only read states 0..{}",
                        node + 1
                    ),
                ));
            }
        }
        let states = ops.len() / 2 + 2;
        if concat.is_empty() {
            return Err(Error::invalid(
                "genotype",
                format!("{cell}_concat is empty"),
            ));
        }
        if let Some(&c) = concat.iter().find(|&&c| c >= states) {
            return Err(Error::invalid(
                "genotype",
                format!(
                    "{cell}_concat names state {c}, but the cell has states 0..{}",
                    states - 1
                ),
            ));
        }
    }
    Ok(())
}

/// The genotype `--genotype SPEC` names, checked with `validate_genotype`. SPEC is one of:
/// - a built-in name, case-insensitive, `-` or `_`: `DARTS_V1`, `DARTS_V2` (alias `DARTS`),
///   `PC_DARTS` (`PC_DARTS_cifar`, `PCDARTS`), `PC_DARTS_IMAGE`, `PDARTS` (`P-DARTS`);
///   `NASNet` and `AmoebaNet` are refused with the op nasrs lacks;
/// - an inline Python form, `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2,
///   6), reduce=[...], reduce_concat=[2, 3, 4, 5])`, optionally as `NAME = Genotype(...)`;
/// - a file: JSON as `nasrs search` writes it (`.json`, or content starting with `{`), else
///   the Python form, alone or in a `genotypes.py`-like file that holds exactly one genotype;
/// - `FILE:NAME`: the genotype `NAME = Genotype(...)` (or alias `NAME = OTHER`) of such a file.
pub fn resolve_genotype(spec: &str) -> Result<Genotype> {
    if let Some(g) = Genotype::builtin(spec) {
        return Ok(g);
    }
    if let Some(why) = genotypes_builtin::unavailable(spec) {
        return Err(Error::invalid("--genotype", why));
    }
    let path = Path::new(spec);
    if path.is_file() {
        return genotype_file(path, None);
    }
    if is_inline_python(spec) {
        let g = Genotype::from_python(spec).map_err(|e| {
            let at = match e.at {
                Some((1, col)) if !spec.contains('\n') => format!("column {col}: "),
                Some((line, col)) => format!("line {line}, column {col}: "),
                None => String::new(),
            };
            Error::invalid(
                "--genotype",
                format!("{at}{} (in '{}')", e.message, clip(spec)),
            )
        })?;
        validate_genotype(&g).map_err(|e| Error::invalid("--genotype", detail(e)))?;
        return Ok(g);
    }
    if let Some((file, name)) = spec.rsplit_once(':') {
        if Path::new(file).is_file() && !name.is_empty() {
            return genotype_file(Path::new(file), Some(name));
        }
    }
    Err(Error::invalid(
        "--genotype",
        format!(
            "'{}' is neither a built-in genotype ({}), an inline Genotype(...), a file nor \
             FILE:NAME",
            clip(spec),
            genotypes_builtin::names().join(", ")
        ),
    ))
}

/// `Genotype(...)` or `NAME = Genotype(...)`.
fn is_inline_python(spec: &str) -> bool {
    let s = spec.trim_start();
    let after_name = s
        .split_once('=')
        .filter(|(name, _)| {
            let name = name.trim();
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map_or(s, |(_, rest)| rest.trim_start());
    s.starts_with("Genotype") || after_name.starts_with("Genotype")
}

/// A genotype file: JSON or the Python form; `name` picks one from a `genotypes.py`.
fn genotype_file(path: &Path, name: Option<&str>) -> Result<Genotype> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let g: Genotype = if json {
        if let Some(name) = name {
            return Err(Error::bad_file(
                path,
                format!(
                    "a JSON file holds one genotype; ':{name}' picks one from a Python \
                     genotypes.py-style file"
                ),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not a genotype: {e}")))?
    } else {
        PyGenotypes::parse(&text)
            .pick(name)
            .map_err(|e| match name {
                // A definition that does not parse; other errors name `n` already.
                Some(n) if e.at.is_some() => Error::bad_file(path, format!("genotype {n}: {e}")),
                _ => Error::bad_file(path, e.to_string()),
            })?
    };
    validate_genotype(&g).map_err(|e| match name {
        Some(n) => Error::bad_file(path, format!("genotype {n}: {}", detail(e))),
        None => Error::bad_file(path, detail(e)),
    })?;
    Ok(g)
}

/// The message of an `Invalid` error without its "invalid genotype:" prefix.
fn detail(e: Error) -> String {
    match e {
        Error::Invalid { detail, .. } => detail,
        e => e.to_string(),
    }
}

/// A spec shortened for an error message (an inline genotype is a long line).
fn clip(spec: &str) -> String {
    let s: String = spec.chars().take(60).collect();
    if s.len() < spec.len() {
        format!("{s}...")
    } else {
        s
    }
}
