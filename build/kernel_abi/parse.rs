//! Reading the ABI from the sources: comments stripped, integer `#define`s collected,
//! preprocessor lines dropped, then every namespace-scope `struct` and every
//! `extern "C" __global__` signature parsed into [`Abi`]. Anything outside the supported
//! C subset panics naming the file and the declaration.

use super::{Abi, Field, KernelSig, Param, ParamType, Scalar, StructDef};

/// Removes // and /* */ comments (string literals in kernels are only `extern "C"`).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

impl Abi {
    /// Reads one source file (`module` is its stem for `.cu` files, None for headers).
    pub fn read(&mut self, file: &str, module: Option<&str>, src: &str) {
        let src = strip_comments(src);
        // Integer defines first: array sizes refer to them.
        for line in src.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("#define") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next())
                {
                    if let Ok(v) = value.parse::<i64>() {
                        self.defines.insert(name.to_string(), v);
                    }
                }
            }
        }
        // Drop preprocessor lines (macros with bodies span lines ending in '\').
        let mut code = String::new();
        let mut continued = false;
        for line in src.lines() {
            let is_pp = continued || line.trim_start().starts_with('#');
            continued = is_pp && line.trim_end().ends_with('\\');
            if !is_pp {
                code.push_str(line);
                code.push('\n');
            }
        }
        self.read_structs(file, &code);
        if let Some(module) = module {
            self.read_kernels(file, module, &code);
        }
    }

    fn read_structs(&mut self, file: &str, code: &str) {
        let mut rest = code;
        while let Some(at) = find_word(rest, "struct") {
            let after = &rest[at + "struct".len()..];
            let Some(open) = after.find('{') else { break };
            let name = after[..open].trim();
            // `struct X {` at namespace scope; anything else (a use of a type) is skipped.
            if name.is_empty() || !is_ident(name) || after[..open].contains(['(', ';', ')']) {
                rest = after;
                continue;
            }
            let Some(close) = after[open..].find("};") else {
                panic!("{file}: struct {name} has no closing '}};'");
            };
            let body = &after[open + 1..open + close];
            let mut fields = Vec::new();
            for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
                fields.extend(self.parse_fields(file, name, decl));
            }
            self.structs.push(StructDef {
                name: name.to_string(),
                file: file.to_string(),
                fields,
            });
            rest = &after[open + close + 2..];
        }
    }

    /// `const float* x[MAX_K]` or `int n, c, h, w` -> fields.
    fn parse_fields(&self, file: &str, st: &str, decl: &str) -> Vec<Field> {
        let bad =
            || -> ! { panic!("{file}: struct {st}: cannot read the field declaration '{decl}'") };
        let mut decls = decl.split(',');
        let first = decls.next().unwrap_or_else(|| bad());
        // The base type is the leading words of the first declarator that are type words.
        let toks: Vec<String> = tokens(first);
        let type_end = toks
            .iter()
            .position(|t| t == "*" || !is_type_word(t))
            .unwrap_or_else(|| bad());
        let base: Vec<&str> = toks[..type_end]
            .iter()
            .map(String::as_str)
            .filter(|w| *w != "const")
            .collect();
        let scalar = Scalar::parse(&base);
        let first_declarator = toks[type_end..].join(" ");
        let mut out = Vec::new();
        for d in std::iter::once(first_declarator.as_str()).chain(decls) {
            let d = d.trim();
            let pointer = d.starts_with('*');
            let d = d.trim_start_matches(['*', ' ']);
            let d = d.strip_prefix("const ").unwrap_or(d).trim();
            let (name, count) = match d.find('[') {
                Some(i) => {
                    let inner = d[i + 1..]
                        .trim_end()
                        .strip_suffix(']')
                        .unwrap_or_else(|| bad());
                    (d[..i].trim(), Some(self.eval(file, inner) as usize))
                }
                None => (d, None),
            };
            if !is_ident(name) || (!pointer && scalar.is_none()) {
                bad();
            }
            out.push(Field {
                name: name.to_string(),
                scalar: if pointer { None } else { scalar },
                count,
            });
        }
        out
    }

    /// An integer expression of literals and defines with + - * (left to right, * first).
    fn eval(&self, file: &str, expr: &str) -> i64 {
        let term = |t: &str| -> i64 {
            t.split('*')
                .map(|f| {
                    let f = f.trim();
                    f.parse::<i64>()
                        .ok()
                        .or_else(|| self.defines.get(f).copied())
                        .unwrap_or_else(|| {
                            panic!("{file}: array size '{expr}': unknown value '{f}'")
                        })
                })
                .product()
        };
        let mut total = 0i64;
        let mut sign = 1i64;
        let mut cur = String::new();
        for ch in expr.chars() {
            if ch == '+' || ch == '-' {
                total += sign * term(&cur);
                cur.clear();
                sign = if ch == '+' { 1 } else { -1 };
            } else {
                cur.push(ch);
            }
        }
        total + sign * term(&cur)
    }

    fn read_kernels(&mut self, file: &str, module: &str, code: &str) {
        let key = "__global__";
        let mut rest = code;
        while let Some(at) = find_word(rest, key) {
            let before = rest[..at].trim_end();
            let after = &rest[at + key.len()..];
            if !before.ends_with("extern \"C\"") {
                panic!(
                    "{file}: a __global__ function without extern \"C\" (the launchers find kernels by their C name)"
                );
            }
            let open = after
                .find('(')
                .unwrap_or_else(|| panic!("{file}: kernel without '('"));
            let head = after[..open].split_whitespace().collect::<Vec<_>>();
            let name = match head.as_slice() {
                ["void", name] => name.to_string(),
                _ => panic!(
                    "{file}: cannot read the kernel head '{}'",
                    after[..open].trim()
                ),
            };
            let close = open
                + matching_paren(&after[open..])
                    .unwrap_or_else(|| panic!("{file}: kernel {name}: unbalanced parentheses"));
            let list = &after[open + 1..close];
            let params = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && *p != "void")
                .map(|p| self.parse_param(file, &name, p))
                .collect();
            let text = format!(
                "{name}({})",
                list.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            self.kernels.push(KernelSig {
                name,
                module: module.to_string(),
                params,
                text,
            });
            rest = &after[close..];
        }
    }

    fn parse_param(&self, file: &str, kernel: &str, p: &str) -> Param {
        let toks: Vec<String> = tokens(p)
            .into_iter()
            .filter(|t| t != "__grid_constant__" && t != "__restrict__")
            .collect();
        let bad = || -> ! { panic!("{file}: kernel {kernel}: unsupported parameter '{p}'") };
        let name = toks.last().cloned().unwrap_or_else(|| bad());
        if !is_ident(&name) {
            bad();
        }
        let ty_toks = &toks[..toks.len() - 1];
        let stars = ty_toks.iter().filter(|t| *t == "*").count();
        // `const T*` = pointer to const; a const after the '*' would be a const pointer.
        let star_at = ty_toks.iter().position(|t| t == "*");
        let is_const = ty_toks[..star_at.unwrap_or(ty_toks.len())]
            .iter()
            .any(|t| t == "const");
        let words: Vec<&str> = ty_toks
            .iter()
            .map(String::as_str)
            .filter(|t| *t != "const" && *t != "*")
            .collect();
        let ty = match (stars, Scalar::parse(&words)) {
            (0, Some(s)) => ParamType::Value(s),
            (1, Some(s)) if is_const => ParamType::ConstPtr(s),
            (1, Some(s)) => ParamType::MutPtr(s),
            (0, None) if words.len() == 1 && self.structs.iter().any(|s| s.name == words[0]) => {
                ParamType::Struct(words[0].to_string())
            }
            _ => bad(),
        };
        Param { name, ty }
    }
}

fn tokens(s: &str) -> Vec<String> {
    s.replace('*', " * ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn is_type_word(t: &str) -> bool {
    matches!(
        t,
        "const"
            | "int"
            | "unsigned"
            | "signed"
            | "long"
            | "float"
            | "double"
            | "size_t"
            | "uint64_t"
            | "__nv_bfloat16"
    )
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The byte index of `word` as a whole word in `s`.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(word) {
        let at = from + i;
        let before_ok = at == 0 || !is_ident_char(s.as_bytes()[at - 1]);
        let end = at + word.len();
        let after_ok = end >= s.len() || !is_ident_char(s.as_bytes()[end]);
        if before_ok && after_ok {
            return Some(at);
        }
        from = end;
    }
    None
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The index of the ')' matching the '(' at s[0].
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}
