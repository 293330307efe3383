//! The Python form of genotypes, as DARTS-family `genotypes.py` files and papers print them:
//! [`Genotype::to_python`], [`Genotype::from_python`] for one genotype, [`PyGenotypes`] for
//! the named genotypes and aliases of a whole file, and [`PySyntaxError`], what is wrong
//! and where. Tokens come from `py_tokens.rs`, the `Genotype(...)` call's parser from
//! `py_parser.rs`.

use super::py_parser::Parser;
use super::py_tokens::{tokenize, Tok};
use super::{Genotype, Primitive};
use std::fmt;

impl Genotype {
    /// The Python form DARTS-family `genotypes.py` files and papers print:
    /// `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), reduce=[...],
    /// reduce_concat=range(2, 6))`, with a list where a concat is not `range(2, n)`.
    pub fn to_python(&self) -> String {
        format!(
            "Genotype(normal={}, normal_concat={}, reduce={}, reduce_concat={})",
            py_cell(&self.normal),
            py_concat(&self.normal_concat),
            py_cell(&self.reduce),
            py_concat(&self.reduce_concat)
        )
    }

    /// Parses one genotype in the Python form (see `to_python`), with an optional `NAME = `
    /// before it; anything after it is an error. Keyword or positional arguments, `range(a, b)`
    /// or lists, either quote, whitespace and comments anywhere. Checks the op names, not the
    /// cell's wiring (`eval_model::validate_genotype` does that).
    pub fn from_python(src: &str) -> Result<Genotype, PySyntaxError> {
        let toks = tokenize(src);
        let mut p = Parser { toks: &toks, i: 0 };
        if matches!(p.peek(), Tok::Ident(_)) && p.peek_at(1) == &Tok::Punct('=') {
            p.i += 2;
        }
        let g = p.call()?;
        match p.peek() {
            Tok::Eof => Ok(g),
            t => Err(p.err_here(format!("unexpected {} after the genotype", t.describe()))),
        }
    }
}

fn py_cell(ops: &[(Primitive, usize)]) -> String {
    let pairs: Vec<String> = ops
        .iter()
        .map(|(p, j)| format!("('{}', {j})", p.name()))
        .collect();
    format!("[{}]", pairs.join(", "))
}

fn py_concat(c: &[usize]) -> String {
    let contiguous = c.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]));
    match (c.first(), c.last()) {
        (Some(2), Some(&last)) if contiguous => format!("range(2, {})", last + 1),
        _ => {
            let items: Vec<String> = c.iter().map(|j| j.to_string()).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// What is wrong with a Python-form genotype, and where (1-based line and column, in
/// characters) when it is at one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PySyntaxError {
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for PySyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "line {line}, column {col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PySyntaxError {}

/// The genotypes of a `genotypes.py`-like file: every `NAME = Genotype(...)` and bare
/// `Genotype(...)` that starts a line, and every `NAME = OTHER` alias line; the rest of the
/// file (imports, `PRIMITIVES = [...]`, code) is skipped. A definition that does not parse
/// (NASNet's `sep_conv_7x7`) is an error only when it is picked.
#[derive(Clone, Debug)]
pub struct PyGenotypes {
    defs: Vec<PyDef>,
    aliases: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct PyDef {
    name: Option<String>,
    genotype: Result<Genotype, PySyntaxError>,
}

impl PyGenotypes {
    pub fn parse(src: &str) -> PyGenotypes {
        let toks = tokenize(src);
        let mut out = PyGenotypes {
            defs: Vec::new(),
            aliases: Vec::new(),
        };
        let mut i = 0;
        while i < toks.len() {
            let tok = |k: usize| toks.get(i + k).map_or(&Tok::Eof, |t| &t.tok);
            let is_call = |k: usize| {
                matches!(tok(k), Tok::Ident(g) if g == "Genotype") && tok(k + 1) == &Tok::Punct('(')
            };
            let (name, start) = match tok(0) {
                _ if !toks[i].line_start => {
                    i += 1;
                    continue;
                }
                Tok::Ident(n) if tok(1) == &Tok::Punct('=') && is_call(2) => {
                    (Some(n.clone()), i + 2)
                }
                Tok::Ident(n) if tok(1) == &Tok::Punct('=') => {
                    // `PCDARTS = PC_DARTS_cifar`: an alias when the line ends there.
                    if let Tok::Ident(target) = tok(2) {
                        if toks.get(i + 3).is_none_or(|t| t.line_start) {
                            out.aliases.push((n.clone(), target.clone()));
                        }
                    }
                    i += 1;
                    continue;
                }
                _ if is_call(0) => (None, i),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let mut p = Parser {
                toks: &toks,
                i: start,
            };
            let genotype = p.call();
            // Resume after the call (after its `Genotype` token if it failed), so that a
            // `NAME =` line followed by `Genotype(` on the next is one definition, not two.
            i = if genotype.is_ok() { p.i } else { start + 1 };
            out.defs.push(PyDef { name, genotype });
        }
        out
    }

    /// The names defined, in file order (aliases after the definitions).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let defined = self.defs.iter().filter_map(|d| d.name.clone());
        for n in defined.chain(self.aliases.iter().map(|(a, _)| a.clone())) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    /// How many `Genotype(...)` calls the file holds (aliases not counted).
    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The genotype named `name` (exact, else case-insensitive if that is unambiguous; the
    /// last definition wins, as in Python), or with `None` the file's only one.
    pub fn pick(&self, name: Option<&str>) -> Result<Genotype, PySyntaxError> {
        let plain = |message: String| PySyntaxError { at: None, message };
        let Some(name) = name else {
            return match &self.defs[..] {
                [only] => only.genotype.clone(),
                [] => Err(plain(
                    "no Genotype(...) found (expected `Genotype(normal=[...], \
                     normal_concat=..., reduce=[...], reduce_concat=...)` at the start of a line)"
                        .into(),
                )),
                _ => Err(plain(format!(
                    "several genotypes here ({}); pick one with FILE:NAME",
                    self.names().join(", ")
                ))),
            };
        };
        let mut wanted = name.to_string();
        // Follow aliases (a bounded number of hops: `A = B` and `B = A` must not loop).
        for _ in 0..=self.aliases.len() {
            if let Some(d) = self
                .defs
                .iter()
                .rev()
                .find(|d| d.name.as_deref() == Some(&wanted))
            {
                return d.genotype.clone();
            }
            match self.aliases.iter().rev().find(|(a, _)| *a == wanted) {
                Some((_, target)) => wanted = target.clone(),
                None => break,
            }
        }
        if wanted != name {
            return Err(plain(format!(
                "'{name}' stands for '{wanted}', which no Genotype(...) line here defines"
            )));
        }
        let names = self.names();
        let folded: Vec<&String> = names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .collect();
        match folded[..] {
            [one] if *one != name => self.pick(Some(one)),
            _ if names.is_empty() => Err(plain(format!(
                "no genotype named '{name}': no `NAME = Genotype(...)` line here"
            ))),
            _ => Err(plain(format!(
                "no genotype named '{name}' (defined: {})",
                names.join(", ")
            ))),
        }
    }
}
