//! A tabular benchmark read from a CSV file: a header naming an `arch` column and numeric
//! columns (NAS-Bench-201's `cifar10_valid_acc`, `params_m`, ...), one row per architecture.
//! Each row's arch is parsed by the search space, so two spellings of one architecture are
//! one key (and a duplicate is refused); a look-up is a hash-map query.
//!
//! Only the columns asked for are read as numbers; the others may hold anything. Every
//! refusal names the file, the line (1-based, the header is line 1) and the column.
//! Fields may be double-quoted (a DARTS genotype's Python form holds commas), `""` being a
//! quote inside a quoted field.

use crate::error::{Error, Result};
use crate::nas::space::SearchSpace;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The name of the column holding the architectures.
pub const ARCH_COLUMN: &str = "arch";

/// The asked columns of a table, by architecture.
#[derive(Clone, Debug)]
pub struct Table<A> {
    path: PathBuf,
    columns: Vec<String>,
    rows: HashMap<A, Vec<f64>>,
    /// The architectures in file order (reference statistics iterate in a fixed order).
    order: Vec<A>,
}

/// One column asked for and who asks for it (a flag, "the constraint"), for the message
/// when the header lacks it.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'a> {
    pub column: &'a str,
    pub asked_by: &'a str,
}

impl<A: Clone + Eq + std::hash::Hash> Table<A> {
    /// Reads the `wanted` columns of the CSV file `path`.
    pub fn load<S: SearchSpace<Arch = A>>(
        space: &S,
        path: &Path,
        wanted: &[Wanted],
    ) -> Result<Table<A>> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::bad_file(path, format!("not UTF-8 text: {e}")))?;
        Table::parse(space, path, &text, wanted)
    }

    /// Parses `text`, the contents of `path` (named in every error).
    pub fn parse<S: SearchSpace<Arch = A>>(
        space: &S,
        path: &Path,
        text: &str,
        wanted: &[Wanted],
    ) -> Result<Table<A>> {
        let bad =
            |line: usize, detail: String| Error::bad_file(path, format!("line {line}: {detail}"));
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty());
        let (header_line, header) = lines
            .next()
            .ok_or_else(|| Error::bad_file(path, "empty file; expected a header line"))?;
        let header = split_fields(header).map_err(|e| bad(header_line, e))?;
        let find = |name: &str| -> std::result::Result<usize, String> {
            let at: Vec<usize> = (0..header.len())
                .filter(|&i| header[i].trim() == name)
                .collect();
            match at[..] {
                [i] => Ok(i),
                [] => Err(format!("no column '{name}'")),
                _ => Err(format!(
                    "column '{name}' appears {} times (fields {})",
                    at.len(),
                    at.iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        };
        let columns_listed = || {
            header
                .iter()
                .map(|h| h.trim())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let arch_at = find(ARCH_COLUMN).map_err(|e| {
            bad(
                header_line,
                format!(
                    "{e} holding the architectures; the header has: {}",
                    columns_listed()
                ),
            )
        })?;
        let mut value_at = Vec::with_capacity(wanted.len());
        for w in wanted {
            let i = find(w.column).map_err(|e| {
                bad(
                    header_line,
                    format!(
                        "{e} (asked by {}); the header has: {}",
                        w.asked_by,
                        columns_listed()
                    ),
                )
            })?;
            value_at.push(i);
        }
        let mut rows: HashMap<A, Vec<f64>> = HashMap::new();
        let mut first_line: HashMap<A, (usize, String)> = HashMap::new();
        let mut order = Vec::new();
        for (line, raw) in lines {
            let fields = split_fields(raw).map_err(|e| bad(line, e))?;
            if fields.len() != header.len() {
                return Err(bad(
                    line,
                    format!(
                        "{} fields where the header has {}",
                        fields.len(),
                        header.len()
                    ),
                ));
            }
            let spelled = fields[arch_at].trim();
            let arch = space
                .parse(spelled)
                .map_err(|e| bad(line, format!("column '{ARCH_COLUMN}': {e}")))?;
            if let Some((earlier, as_spelled)) = first_line.get(&arch) {
                return Err(bad(
                    line,
                    format!(
                        "architecture '{spelled}' is already on line {earlier} (as '{as_spelled}'); \
                         each architecture may appear once"
                    ),
                ));
            }
            let mut values = Vec::with_capacity(wanted.len());
            for (w, &i) in wanted.iter().zip(&value_at) {
                let field = fields[i].trim();
                let v: f64 = field.parse().map_err(|_| {
                    bad(
                        line,
                        format!("column '{}': '{field}' is not a number", w.column),
                    )
                })?;
                if !v.is_finite() {
                    return Err(bad(
                        line,
                        format!("column '{}': {field} is not a finite number", w.column),
                    ));
                }
                values.push(v);
            }
            first_line.insert(arch.clone(), (line, spelled.to_string()));
            rows.insert(arch.clone(), values);
            order.push(arch);
        }
        if order.is_empty() {
            return Err(Error::bad_file(path, "no rows after the header"));
        }
        Ok(Table {
            path: path.to_path_buf(),
            columns: wanted.iter().map(|w| w.column.to_string()).collect(),
            rows,
            order,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The columns read, in the order asked.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Every architecture of the table, in file order.
    pub fn archs(&self) -> &[A] {
        &self.order
    }

    /// The values of `arch` (one per column read), or None when the table lacks it.
    pub fn row(&self, arch: &A) -> Option<&[f64]> {
        self.rows.get(arch).map(|v| &v[..])
    }

    /// The value of column number `column` (an index into [`Table::columns`]) for `arch`; an
    /// architecture the table lacks is an error naming it and the file.
    pub fn value<S: SearchSpace<Arch = A>>(
        &self,
        space: &S,
        arch: &A,
        column: usize,
    ) -> Result<f64> {
        let row = self.rows.get(arch).ok_or_else(|| {
            Error::invalid(
                "architecture",
                format!(
                    "'{}' is not in the table {} ({} rows)",
                    space.to_string(arch),
                    self.path.display(),
                    self.order.len()
                ),
            )
        })?;
        row.get(column).copied().ok_or_else(|| {
            Error::invalid(
                "table column",
                format!("number {column}, where {} were read", self.columns.len()),
            )
        })
    }
}

/// The fields of one CSV line: split on commas outside double quotes; a quoted field's
/// quotes are removed and its `""` read as one quote.
pub fn split_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    // Whether the current field was quoted: text after its closing quote is refused.
    let mut closed = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => {
                quoted = false;
                closed = true;
            }
            (true, c) => field.push(c),
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                closed = false;
            }
            (false, '"') if field.trim().is_empty() && !closed => {
                field.clear();
                quoted = true;
            }
            (false, c) if closed && !c.is_whitespace() => {
                return Err(format!(
                    "field {} has text after its closing quote",
                    fields.len() + 1
                ))
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "field {} opens a quote it never closes",
            fields.len() + 1
        ));
    }
    fields.push(field);
    Ok(fields)
}
