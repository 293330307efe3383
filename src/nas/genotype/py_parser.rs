//! The parser of one `Genotype(...)` call over the tokens of `py_tokens.rs`: positional or
//! keyword fields, cells as lists of `('op', input)` pairs, concats as `range(...)` or
//! lists; every error says what it expected and points at the token it found.

use super::py_tokens::{Tok, Token};
use super::python::PySyntaxError;
use super::{Genotype, Primitive};

pub(super) struct Parser<'a> {
    pub(super) toks: &'a [Token],
    pub(super) i: usize,
}

const FIELDS: [&str; 4] = ["normal", "normal_concat", "reduce", "reduce_concat"];
/// Longest `range(a, b)` accepted: a cell has far fewer states; this only keeps a hostile
/// `range(0, 10**18)` from allocating.
const MAX_RANGE: usize = 1 << 16;

impl Parser<'_> {
    pub(super) fn peek_at(&self, k: usize) -> &Tok {
        self.toks.get(self.i + k).map_or(&Tok::Eof, |t| &t.tok)
    }

    pub(super) fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    pub(super) fn err_here(&self, message: String) -> PySyntaxError {
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
    pub(super) fn call(&mut self) -> Result<Genotype, PySyntaxError> {
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
