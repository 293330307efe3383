//! The eight DARTS primitives and the genotype: the discrete cell derived from the alphas
//! (for each node, the two strongest incoming edges by their largest non-`none` weight,
//! each with its arg-max non-`none` op), written as JSON or in the Python form of the DARTS
//! family's `genotypes.py` (`to_python`, `from_python`, `PyGenotypes` for whole files). The
//! published cells are built in by name (`builtin`, from `genotypes_builtin`).

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

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
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

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// An integer literal; `None` when it does not fit a `usize`.
    Int(Option<usize>, String),
    Str(String),
    Punct(char),
    /// Text no Python token fits (an unterminated string, `1.5`): an error where it is parsed.
    Bad(String),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        fn clip(s: &str) -> String {
            let mut c: String = s.chars().take(40).collect();
            if c.len() < s.len() {
                c.push_str("...");
            }
            c
        }
        match self {
            Tok::Ident(s) => format!("'{}'", clip(s)),
            Tok::Int(_, s) => format!("'{}'", clip(s)),
            Tok::Str(s) => format!("the string '{}'", clip(s)),
            Tok::Punct(c) => format!("'{}'", c.escape_debug()),
            Tok::Bad(s) => s.clone(),
            Tok::Eof => "the end of the input".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
    /// The first token of its line.
    line_start: bool,
}

/// Python's tokens, as far as genotypes need them; never fails (see `Tok::Bad`). The list
/// always ends with `Tok::Eof`.
fn tokenize(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0, 1, 1);
    let mut line_start = true;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            (i, line, col, line_start) = (i + 1, line + 1, 1, true);
            continue;
        }
        if c.is_whitespace() {
            (i, col) = (i + 1, col + 1);
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '\\' {
            // A line continuation: the next line goes on this statement.
            let cr = usize::from(chars.get(i + 1) == Some(&'\r'));
            if chars.get(i + 1 + cr) == Some(&'\n') {
                (i, line, col) = (i + 2 + cr, line + 1, 1);
                continue;
            }
        }
        let (start, tok_line, tok_col) = (i, line, col);
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let digits = text.replace('_', "");
            if digits.bytes().all(|b| b.is_ascii_digit()) && !text.ends_with('_') {
                Tok::Int(digits.parse().ok(), text)
            } else {
                Tok::Bad(format!("'{text}' (expected a whole number)"))
            }
        } else if c == '\'' || c == '"' {
            let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
            i += if triple { 3 } else { 1 };
            let mut text = String::new();
            let mut closed = false;
            while i < chars.len() {
                let d = chars[i];
                if d == '\\' && i + 1 < chars.len() {
                    text.push(chars[i + 1]);
                    if chars[i + 1] == '\n' {
                        line += 1;
                    }
                    i += 2;
                } else if d == c
                    && (!triple || (chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c)))
                {
                    i += if triple { 3 } else { 1 };
                    closed = true;
                    break;
                } else if d == '\n' && !triple {
                    break;
                } else {
                    if d == '\n' {
                        line += 1;
                    }
                    text.push(d);
                    i += 1;
                }
            }
            if closed {
                Tok::Str(text)
            } else {
                Tok::Bad(format!("an unterminated string starting with {c}"))
            }
        } else {
            i += 1;
            Tok::Punct(c)
        };
        toks.push(Token {
            tok,
            line: tok_line,
            col: tok_col,
            line_start,
        });
        // Columns count from the token's last line when it spans several (triple quotes).
        match chars[start..i].iter().rposition(|&d| d == '\n') {
            Some(nl) => col = i - start - nl,
            None => col += i - start,
        }
        line_start = false;
    }
    toks.push(Token {
        tok: Tok::Eof,
        line,
        col,
        line_start: true,
    });
    toks
}

struct Parser<'a> {
    toks: &'a [Token],
    i: usize,
}

const FIELDS: [&str; 4] = ["normal", "normal_concat", "reduce", "reduce_concat"];
/// Longest `range(a, b)` accepted: a cell has far fewer states; this only keeps a hostile
/// `range(0, 10**18)` from allocating.
const MAX_RANGE: usize = 1 << 16;

impl Parser<'_> {
    fn peek_at(&self, k: usize) -> &Tok {
        self.toks.get(self.i + k).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn err_here(&self, message: String) -> PySyntaxError {
        let t = self.toks.get(self.i).or(self.toks.last());
        PySyntaxError {
            at: t.map(|t| (t.line, t.col)),
            message,
        }
    }

    fn expect(&mut self, c: char, context: &str) -> Result<(), PySyntaxError> {
        if self.peek() == &Tok::Punct(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err_here(format!(
                "expected '{c}' {context}, found {}",
                self.peek().describe()
            )))
        }
    }

    /// Consumes `c` if it is next.
    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == &Tok::Punct(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    /// `Genotype(` arguments `)`: positional in field order, then keywords.
    fn call(&mut self) -> Result<Genotype, PySyntaxError> {
        match self.peek() {
            Tok::Ident(g) if g == "Genotype" => self.i += 1,
            t => return Err(self.err_here(format!("expected 'Genotype(', found {}", t.describe()))),
        }
        self.expect('(', "after 'Genotype'")?;
        let mut cells: [Option<Vec<(Primitive, usize)>>; 2] = [None, None];
        let mut concats: [Option<Vec<usize>>; 2] = [None, None];
        let mut positional = 0;
        let mut keywords = false;
        while !self.eat(')') {
            let field = match (self.peek(), self.peek_at(1)) {
                (Tok::Ident(k), Tok::Punct('=')) => {
                    let Some(f) = FIELDS.iter().position(|f| f == k) else {
                        return Err(self.err_here(format!(
                            "unknown field '{k}' (Genotype has {})",
                            FIELDS.join(", ")
                        )));
                    };
                    self.i += 2;
                    keywords = true;
                    f
                }
                (Tok::Eof, _) => {
                    return Err(self.err_here(
                        "the input ends inside Genotype(...): expected a field or ')'".into(),
                    ))
                }
                _ if keywords => {
                    return Err(self.err_here(format!(
                        "expected a field name such as 'reduce=', found {}",
                        self.peek().describe()
                    )))
                }
                _ if positional == FIELDS.len() => {
                    return Err(self.err_here(format!(
                        "Genotype takes four fields, found a fifth: {}",
                        self.peek().describe()
                    )))
                }
                _ => {
                    positional += 1;
                    positional - 1
                }
            };
            let already = if field % 2 == 0 {
                cells[field / 2]
                    .replace(self.cell(FIELDS[field])?)
                    .is_some()
            } else {
                concats[field / 2]
                    .replace(self.concat(FIELDS[field])?)
                    .is_some()
            };
            if already {
                return Err(self.err_here(format!("'{}' is given twice", FIELDS[field])));
            }
            if !self.eat(',') && self.peek() != &Tok::Punct(')') {
                return Err(self.err_here(format!(
                    "expected ',' or ')' after {}, found {}",
                    FIELDS[field],
                    self.peek().describe()
                )));
            }
        }
        let missing: Vec<&str> = FIELDS
            .iter()
            .enumerate()
            .filter(|(f, _)| {
                if f % 2 == 0 {
                    cells[f / 2].is_none()
                } else {
                    concats[f / 2].is_none()
                }
            })
            .map(|(_, n)| *n)
            .collect();
        if !missing.is_empty() {
            self.i -= 1; // point at the ')'
            return Err(self.err_here(format!("Genotype(...) lacks {}", missing.join(", "))));
        }
        let [normal, reduce] = cells.map(Option::unwrap_or_default);
        let [normal_concat, reduce_concat] = concats.map(Option::unwrap_or_default);
        Ok(Genotype {
            normal,
            normal_concat,
            reduce,
            reduce_concat,
        })
    }

    /// `[` or `(`, then the closing bracket that matches it.
    fn open(&mut self, what: &str) -> Result<char, PySyntaxError> {
        match self.peek() {
            Tok::Punct('[') => {
                self.i += 1;
                Ok(']')
            }
            Tok::Punct('(') => {
                self.i += 1;
                Ok(')')
            }
            t => Err(self.err_here(format!(
                "expected a list for {what}, found {}",
                t.describe()
            ))),
        }
    }

    /// After an item of a sequence closed by `close`: `,` or the end.
    fn item_end(&mut self, close: char, what: &str) -> Result<bool, PySyntaxError> {
        if self.eat(close) {
            return Ok(true);
        }
        if self.eat(',') {
            return Ok(self.eat(close));
        }
        Err(self.err_here(format!(
            "expected ',' or '{close}' in {what}, found {}",
            self.peek().describe()
        )))
    }

    fn int(&mut self, what: &str) -> Result<usize, PySyntaxError> {
        match self.peek().clone() {
            Tok::Int(Some(v), _) => {
                self.i += 1;
                Ok(v)
            }
            Tok::Int(None, s) => Err(self.err_here(format!("{s} is too large for {what}"))),
            t => Err(self.err_here(format!(
                "expected a whole number for {what}, found {}",
                t.describe()
            ))),
        }
    }

    /// `[('sep_conv_3x3', 0), ...]`
    fn cell(&mut self, what: &str) -> Result<Vec<(Primitive, usize)>, PySyntaxError> {
        let close = self.open(what)?;
        let mut ops = Vec::new();
        if self.eat(close) {
            return Ok(ops);
        }
        loop {
            let k = ops.len();
            let pair = format!("{what}[{k}]");
            if !self.eat('(') {
                return Err(self.err_here(format!(
                    "expected an ('op', input) pair for {pair}, found {}",
                    self.peek().describe()
                )));
            }
            let op = match self.peek().clone() {
                Tok::Str(name) => name.parse::<Primitive>().map_err(|_| {
                    let names: Vec<&str> = Primitive::ALL.iter().map(|p| p.name()).collect();
                    self.err_here(format!(
                        "'{name}' in {pair} is not an op nasrs implements (it has {})",
                        names.join(", ")
                    ))
                })?,
                t => {
                    return Err(self.err_here(format!(
                        "expected a quoted op name for {pair}, found {}",
                        t.describe()
                    )))
                }
            };
            self.i += 1;
            self.expect(',', &format!("between the op and the input of {pair}"))?;
            let input = self.int(&format!("the input of {pair}"))?;
            self.eat(',');
            self.expect(')', &format!("to close {pair}"))?;
            ops.push((op, input));
            if self.item_end(close, what)? {
                return Ok(ops);
            }
        }
    }

    /// `range(2, 6)`, `range(6)` or `[2, 3, 4, 5]`.
    fn concat(&mut self, what: &str) -> Result<Vec<usize>, PySyntaxError> {
        if matches!(self.peek(), Tok::Ident(r) if r == "range") {
            self.i += 1;
            self.expect('(', "after 'range'")?;
            let a = self.int(what)?;
            let (start, end) = if self.eat(',') && self.peek() != &Tok::Punct(')') {
                (a, self.int(what)?)
            } else {
                (0, a)
            };
            self.eat(',');
            self.expect(')', "to close range(...)")?;
            if end.saturating_sub(start) > MAX_RANGE {
                return Err(self.err_here(format!(
                    "range({start}, {end}) for {what} is longer than any cell"
                )));
            }
            return Ok((start..end).collect());
        }
        let close = self.open(what)?;
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.int(what)?);
            if self.item_end(close, what)? {
                return Ok(items);
            }
        }
    }
}
