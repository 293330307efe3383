//! The kernel ABI as build.rs reads it from `kernels/*.cu`: integer `#define`s, the structs
//! passed by value, and every `extern "C" __global__` signature; and the code generated
//! from it: the typed Rust launchers with their `#[repr(C)]` struct twins (`kernels.rs`)
//! and, for the `cuda-sim` build, one C++ trampoline per kernel that unpacks the driver's
//! `kernelParams` array and runs the kernel through the host simulation.
//!
//! The parser knows exactly the C subset the kernels use for their interface (scalar
//! types, pointers, fixed arrays whose sizes are integer expressions of `#define`s) and
//! panics with the file and declaration on anything else, so an unsupported signature is
//! a build error, not a silently wrong launcher.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A scalar C type the interface uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    Bf16,
}

impl Scalar {
    fn parse(words: &[&str]) -> Option<Scalar> {
        Some(match words {
            ["int"] | ["signed"] | ["signed", "int"] => Scalar::I32,
            ["unsigned"] | ["unsigned", "int"] => Scalar::U32,
            ["long", "long"] | ["long", "long", "int"] => Scalar::I64,
            ["unsigned", "long", "long"] | ["size_t"] | ["uint64_t"] => Scalar::U64,
            ["float"] => Scalar::F32,
            ["double"] => Scalar::F64,
            ["__nv_bfloat16"] => Scalar::Bf16,
            _ => return None,
        })
    }
    fn rust(self) -> &'static str {
        match self {
            Scalar::I32 => "i32",
            Scalar::U32 => "u32",
            Scalar::I64 => "i64",
            Scalar::U64 => "u64",
            Scalar::F32 => "f32",
            Scalar::F64 => "f64",
            Scalar::Bf16 => "half::bf16",
        }
    }
    fn c(self) -> &'static str {
        match self {
            Scalar::I32 => "int",
            Scalar::U32 => "unsigned",
            Scalar::I64 => "long long",
            Scalar::U64 => "unsigned long long",
            Scalar::F32 => "float",
            Scalar::F64 => "double",
            Scalar::Bf16 => "__nv_bfloat16",
        }
    }
    fn size(self) -> usize {
        match self {
            Scalar::Bf16 => 2,
            Scalar::I32 | Scalar::U32 | Scalar::F32 => 4,
            Scalar::I64 | Scalar::U64 | Scalar::F64 => 8,
        }
    }
}

/// A kernel parameter's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamType {
    Value(Scalar),
    /// `const T*`
    ConstPtr(Scalar),
    /// `T*`
    MutPtr(Scalar),
    /// A struct by value (`__grid_constant__` or not).
    Struct(String),
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
}

#[derive(Clone, Debug)]
pub struct KernelSig {
    pub name: String,
    /// The `.cu` file stem (the CUDA module), e.g. "elementwise".
    pub module: String,
    pub params: Vec<Param>,
    /// The signature as written (whitespace collapsed), for the launcher's doc comment.
    pub text: String,
}

/// A struct field: a scalar or a device pointer (an address), possibly a fixed array.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    /// None: a pointer (8 bytes).
    pub scalar: Option<Scalar>,
    pub count: Option<usize>,
}

impl Field {
    fn elem_size(&self) -> usize {
        self.scalar.map_or(8, Scalar::size)
    }
}

#[derive(Clone, Debug)]
pub struct StructDef {
    pub name: String,
    pub file: String,
    pub fields: Vec<Field>,
}

impl StructDef {
    /// C's layout on every target we build for (natural alignment): (size, field offsets).
    pub fn layout(&self) -> (usize, Vec<usize>) {
        let mut off = 0usize;
        let mut align = 1usize;
        let mut offsets = Vec::new();
        for f in &self.fields {
            let a = f.elem_size();
            align = align.max(a);
            off = off.div_ceil(a) * a;
            offsets.push(off);
            off += a * f.count.unwrap_or(1);
        }
        (off.div_ceil(align) * align, offsets)
    }
}

/// Everything read from kernels/.
#[derive(Default, Debug)]
pub struct Abi {
    pub defines: BTreeMap<String, i64>,
    pub structs: Vec<StructDef>,
    pub kernels: Vec<KernelSig>,
}

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

fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "box", "yield", "drv", "cfg",
];

fn rust_ident(name: &str) -> String {
    if RUST_KEYWORDS.contains(&name) {
        format!("{name}_")
    } else {
        name.to_string()
    }
}

impl ParamType {
    fn rust(&self) -> String {
        match self {
            ParamType::Value(s) => s.rust().to_string(),
            ParamType::ConstPtr(s) => format!("Dev<'_, {}>", s.rust()),
            ParamType::MutPtr(s) => format!("DevMut<'_, {}>", s.rust()),
            ParamType::Struct(n) => n.clone(),
        }
    }
    /// The C type a trampoline reads the argument value as.
    fn c(&self) -> String {
        match self {
            ParamType::Value(s) => s.c().to_string(),
            ParamType::ConstPtr(s) => format!("const {}*", s.c()),
            ParamType::MutPtr(s) => format!("{}*", s.c()),
            ParamType::Struct(n) => n.clone(),
        }
    }
}

/// `$OUT_DIR/kernels.rs`: the kernel table, the integer constants, the struct twins (with
/// their layout asserted against C's), one typed launcher per kernel, and, with `sim`, the
/// simulation's entry points in kernel order.
pub fn rust_code(abi: &Abi, fatbin_modules: Option<&[String]>, sim: bool) -> String {
    let mut o = String::new();
    let k = &abi.kernels;
    o.push_str(
        "// @generated by build.rs from kernels/*.cu (build/kernel_abi.rs). Do not edit.\n\n",
    );
    o.push_str("/// Every kernel in `kernels/*.cu`, in file then source order.\n");
    o.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Kernel {\n");
    for s in k {
        let _ = writeln!(o, "    /// `kernels/{}.cu`: `{}`", s.module, s.text);
        let _ = writeln!(o, "    {},", camel(&s.name));
    }
    o.push_str("}\n\nimpl Kernel {\n    pub const ALL: &'static [Kernel] = &[\n");
    for s in k {
        let _ = writeln!(o, "        Kernel::{},", camel(&s.name));
    }
    o.push_str("    ];\n");
    // One `match self` per property, an arm per kernel.
    let mut match_fn = |doc: &str, sig: &str, value: &dyn Fn(&KernelSig) -> String| {
        let _ = writeln!(
            o,
            "    /// {doc}\n    pub fn {sig} {{\n        match self {{"
        );
        for s in k {
            let _ = writeln!(o, "            Kernel::{} => {},", camel(&s.name), value(s));
        }
        o.push_str("        }\n    }\n");
    };
    match_fn(
        "The `extern \"C\"` name.",
        "name(self) -> &'static str",
        &|s| format!("\"{}\"", s.name),
    );
    match_fn(
        "The `.cu` file stem: the CUDA module it is loaded from.",
        "module(self) -> &'static str",
        &|s| format!("\"{}\"", s.module),
    );
    match_fn(
        "The size in bytes of each parameter, in order (what a graph copies at capture).",
        "param_sizes(self) -> &'static [usize]",
        &|s| {
            let sizes: Vec<String> = s
                .params
                .iter()
                .map(|p| match &p.ty {
                    ParamType::Value(sc) => sc.size().to_string(),
                    ParamType::ConstPtr(_) | ParamType::MutPtr(_) => "8".to_string(),
                    ParamType::Struct(n) => abi
                        .structs
                        .iter()
                        .find(|st| &st.name == n)
                        .map_or(0, |st| st.layout().0)
                        .to_string(),
                })
                .collect();
            format!("&[{}]", sizes.join(", "))
        },
    );
    o.push_str("    /// Whether the kernel exists only in the host simulation (the deliberately wrong\n    /// variants of kernels/sim/faults.cu), not in the GPU fatbin.\n    pub fn sim_only(self) -> bool {\n        self.module() == \"faults\"\n    }\n    /// The position in [`Kernel::ALL`].\n    pub fn index(self) -> usize {\n        self as usize\n    }\n}\n\n");

    o.push_str("/// The integer `#define`s of kernels/ (launch sizes, table capacities).\n#[allow(dead_code)]\npub mod consts {\n");
    for (name, v) in &abi.defines {
        let _ = writeln!(o, "    pub const {name}: usize = {v};");
    }
    o.push_str("}\n\n");

    for st in &abi.structs {
        let (size, offsets) = st.layout();
        let _ = writeln!(
            o,
            "/// `struct {}` in `{}`, generated field for field (pointers as device addresses).",
            st.name, st.file
        );
        o.push_str("#[repr(C)]\n#[derive(Clone, Copy, Debug)]\n#[allow(dead_code)]\n");
        let _ = writeln!(o, "pub struct {} {{", st.name);
        for f in &st.fields {
            let elem = f.scalar.map_or("DevAddr", Scalar::rust);
            let ty = match f.count {
                Some(n) => format!("[{elem}; {n}]"),
                None => elem.to_string(),
            };
            let _ = writeln!(o, "    pub {}: {ty},", rust_ident(&f.name));
        }
        o.push_str("}\n");
        let _ = writeln!(o, "impl {} {{\n    /// Every field zero (null pointers).\n    #[allow(dead_code)]\n    pub fn zeroed() -> Self {{\n        {} {{", st.name, st.name);
        for f in &st.fields {
            let zero = match f.scalar {
                Some(Scalar::F32) | Some(Scalar::F64) => "0.0",
                Some(Scalar::Bf16) => "half::bf16::ZERO",
                _ => "0",
            };
            let v = match f.count {
                Some(n) => format!("[{zero}; {n}]"),
                None => zero.to_string(),
            };
            let _ = writeln!(o, "            {}: {v},", rust_ident(&f.name));
        }
        o.push_str("        }\n    }\n}\n");
        let _ = writeln!(
            o,
            "// C's layout, computed by build.rs and asserted in the C++ build too.\nconst _: () = assert!(std::mem::size_of::<{}>() == {size});",
            st.name
        );
        for (f, off) in st.fields.iter().zip(&offsets) {
            let _ = writeln!(
                o,
                "const _: () = assert!(std::mem::offset_of!({}, {}) == {off});",
                st.name,
                rust_ident(&f.name)
            );
        }
        o.push('\n');
    }

    for s in k {
        let _ = writeln!(o, "/// Launches `{}` (`kernels/{}.cu`).\n///\n/// # Safety\n/// Every pointer argument must address memory valid for everything the kernel reads and\n/// writes with this launch configuration.", s.text, s.module);
        o.push_str("#[allow(clippy::too_many_arguments, dead_code)]\n");
        let _ = write!(
            o,
            "pub unsafe fn {}(drv: &dyn Driver, cfg: LaunchConfig",
            s.name
        );
        for p in &s.params {
            let _ = write!(o, ", mut {}: {}", rust_ident(&p.name), p.ty.rust());
        }
        let _ = writeln!(
            o,
            ") -> Result<()> {{\n    let mut params: [*mut c_void; {}] = [",
            s.params.len()
        );
        for p in &s.params {
            let _ = writeln!(
                o,
                "        std::ptr::addr_of_mut!({}).cast::<c_void>(),",
                rust_ident(&p.name)
            );
        }
        let _ = writeln!(
            o,
            "    ];\n    // SAFETY: `params` matches the C signature (generated from it); the caller\n    // vouches for the addresses.\n    unsafe {{ drv.launch(Kernel::{}, &cfg, &mut params) }}\n}}\n",
            camel(&s.name)
        );
    }

    if let Some(mods) = fatbin_modules {
        o.push_str("/// (module, fatbin) for every kernels/*.cu, compiled by nvcc in build.rs.\n#[cfg(feature = \"cuda\")]\npub static FATBINS: &[(&str, &[u8])] = &[\n");
        for m in mods {
            let _ = writeln!(
                o,
                "    (\"{m}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{m}.fatbin\"))),"
            );
        }
        o.push_str("];\n\n");
    }
    if sim {
        o.push_str("/// The host simulation's entry point of every kernel, in [`Kernel::ALL`] order: each\n/// unpacks `kernelParams` as its C signature says and runs the grid (build/kernel_abi.rs).\n#[cfg(feature = \"cuda-sim\")]\npub mod sim_entry {\n    use super::super::driver::sim::SimEntry;\n    extern \"C\" {\n");
        for s in k {
            let _ = writeln!(o, "        fn nasrs_sim_launch_{}(cfg: *const super::super::driver::sim::SimLaunchCfg, params: *mut *mut std::ffi::c_void) -> i32;", s.name);
        }
        o.push_str("    }\n    pub static ENTRIES: &[SimEntry] = &[\n");
        for s in k {
            let _ = writeln!(o, "        nasrs_sim_launch_{},", s.name);
        }
        o.push_str("    ];\n}\n");
    }
    o
}

/// The C++ translation unit of one module for the simulation: the `.cu` itself (the sim
/// header is force-included), the layout of every struct asserted against build.rs's, and
/// one `extern "C"` trampoline per kernel.
pub fn sim_unit(abi: &Abi, cu_path: &str, module: &str) -> String {
    let mut o = String::new();
    o.push_str("// @generated by build.rs (build/kernel_abi.rs). Do not edit.\n");
    let _ = writeln!(o, "#include \"{cu_path}\"\n#include <cstddef>\n");
    for st in &abi.structs {
        // Only structs this unit can see: common.cuh's, and the module's own.
        if !(st.file.ends_with(".cuh") || st.file.ends_with(&format!("/{module}.cu"))) {
            continue;
        }
        let (size, offsets) = st.layout();
        let _ = writeln!(
            o,
            "static_assert(sizeof({0}) == {size}, \"{0}: C size differs from the Rust twin's\");",
            st.name
        );
        for (f, off) in st.fields.iter().zip(&offsets) {
            let _ = writeln!(
                o,
                "static_assert(offsetof({0}, {1}) == {off}, \"{0}.{1}: C offset differs from the Rust twin's\");",
                st.name, f.name
            );
        }
    }
    for s in abi.kernels.iter().filter(|s| s.module == module) {
        let _ = writeln!(
            o,
            "\nextern \"C\" int nasrs_sim_launch_{0}(const nasrs_sim_launch_cfg* cfg, void** params) {{\n    return nasrs_sim_run(\"{0}\", cfg, [](void* ctx) {{\n        void** p = static_cast<void**>(ctx);\n        (void)p;\n        {0}(",
            s.name
        );
        for (i, p) in s.params.iter().enumerate() {
            let sep = if i + 1 < s.params.len() { "," } else { "" };
            let _ = writeln!(o, "            *static_cast<{}*>(p[{i}]){sep}", p.ty.c());
        }
        o.push_str("        );\n    }, params);\n}\n");
    }
    o
}
