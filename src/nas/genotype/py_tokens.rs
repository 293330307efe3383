//! Python's tokens, as far as genotypes need them: names, whole numbers, strings (either
//! quote, triple quotes), punctuation, comments and line continuations, each with its line
//! and column for error messages.

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) line: usize,
    pub(super) col: usize,
    /// The first token of its line.
    pub(super) line_start: bool,
}

/// Python's tokens, as far as genotypes need them; never fails (see `Tok::Bad`). The list
/// always ends with `Tok::Eof`.
pub(super) fn tokenize(src: &str) -> Vec<Token> {
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
