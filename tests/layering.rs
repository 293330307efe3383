//! The shape of the source tree, checked (ARCHITECTURE.md): no module imports from a layer
//! above it, no backend imports another backend, and no source file outgrows one job (in
//! `src/`, and in the tests, the build script, the examples and the kernels).
//!
//! Layers, bottom up (a module may use its own layer's module and any lower one):
//! error < shape, rng, host < io, data < backend < tensor < autograd < optim < nas <
//! bench_model, device < bench; the binary (`src/main.rs`, `src/cli/`) sits on top.

use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("shape", 1),
    ("rng", 1),
    ("host", 1),
    ("io", 2),
    ("data", 2),
    ("backend", 3),
    ("tensor", 4),
    ("autograd", 5),
    ("optim", 6),
    ("nas", 7),
    ("bench_model", 8),
    ("device", 8),
    ("bench", 9),
];

/// The backends proper: none of them may use another (shared code lives in `backend/`).
const BACKENDS: &[&str] = &["cpu", "cuda", "counting"];

/// The crate root's re-exports (`crate::Cpu`), by the module they come from.
const ROOT_EXPORTS: &[(&str, &str, Option<&str>)] = &[
    ("Cpu", "backend", Some("cpu")),
    ("Backend", "backend", None),
    ("Element", "backend", None),
    ("Error", "error", None),
    ("Result", "error", None),
    ("Rng", "rng", None),
    ("Conv2dSpec", "shape", None),
    ("Nchw", "shape", None),
    ("Pool2dSpec", "shape", None),
    ("Shape", "shape", None),
    ("Tensor", "tensor", None),
];

/// Unit tests that check a backend against the CPU reference (compiled only for tests).
const TEST_ONLY: &[&str] = &["src/backend/cuda/sim_faults.rs"];

/// Files over this many lines hold more than one job: split them.
const MAX_LINES: usize = 600;

/// Files still over [`MAX_LINES`], each with the most lines it may have until it is split
/// (a ratchet: shrink these numbers, never raise them; remove a line once under the limit).
const OVERSIZED: &[(&str, usize)] = &[];

/// Where the line limit applies besides `src/` (whose Rust files it covers too): folders,
/// walked recursively, or single files, with the extensions checked in them.
const OTHER_SOURCES: &[(&str, &[&str])] = &[
    ("tests", &["rs"]),
    ("build", &["rs"]),
    ("build.rs", &["rs"]),
    ("examples", &["rs"]),
    ("kernels", &["cu", "cuh", "h", "cpp", "sh"]),
];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, r)| r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    files_with(dir, &["rs"], out);
}

/// Every file under `dir` (recursively; `dir` itself if it is a file) whose extension is
/// one of `exts`.
fn files_with(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        if dir
            .extension()
            .is_some_and(|e| exts.iter().any(|x| e == *x))
        {
            out.push(dir.to_path_buf());
        }
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        files_with(&entry.expect("entry").path(), exts, out);
    }
}

/// `src/backend/cpu/conv.rs` -> ["backend", "cpu", "conv"].
fn components(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path in the code of `text` (comments skipped): (a, b).
fn crate_paths(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let word = |s: &str| {
                s.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            };
            let a = word(after);
            let b = after[a.len()..]
                .strip_prefix("::")
                .map(word)
                .filter(|b| !b.is_empty());
            if !a.is_empty() {
                out.push((a.clone(), b));
            }
            rest = &after[a.len()..];
        }
    }
    out
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let root = src_root();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let parts = components(&root, file);
        let Some(top) = parts.first() else { continue };
        if top == "main" || top == "cli" || top == "lib" {
            continue; // the binary and the crate root see everything
        }
        let own = rank(top)
            .unwrap_or_else(|| panic!("{}: module {top} has no layer in LAYERS", file.display()));
        let own_backend = (top == "backend")
            .then(|| parts.get(1).cloned())
            .flatten()
            .filter(|b| BACKENDS.contains(&b.as_str()));
        if TEST_ONLY.iter().any(|t| file.ends_with(t)) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (a, b) in crate_paths(&text) {
            let (a, b) = match ROOT_EXPORTS.iter().find(|(name, ..)| *name == a) {
                Some(&(_, module, sub)) => (module.to_string(), sub.map(str::to_string)),
                None => (a, b),
            };
            let Some(r) = rank(&a) else {
                wrong.push(format!("{}: crate::{a} is in no layer", file.display()));
                continue;
            };
            if a != *top && r >= own {
                wrong.push(format!(
                    "{}: {top} (layer {own}) uses crate::{a} (layer {r})",
                    file.display()
                ));
            }
            if let (Some(mine), "backend", Some(b)) = (&own_backend, a.as_str(), &b) {
                if BACKENDS.contains(&b.as_str()) && b != mine {
                    wrong.push(format!(
                        "{}: backend {mine} uses backend {b}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_outgrows_one_job() {
    let root = src_root();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, exts) in OTHER_SOURCES {
        files_with(&manifest.join(path), exts, &mut files);
    }
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(manifest)
            .expect("in the crate")
            .to_string_lossy()
            .into_owned();
        let lines = std::fs::read_to_string(file).expect("read").lines().count();
        let limit = OVERSIZED
            .iter()
            .find(|(f, _)| *f == rel)
            .map_or(MAX_LINES, |&(_, n)| n);
        if lines > limit {
            wrong.push(format!("{rel}: {lines} lines (limit {limit})"));
        }
    }
    for (f, _) in OVERSIZED {
        if !manifest.join(f).exists() {
            wrong.push(format!(
                "{f}: listed in OVERSIZED but gone; remove the line"
            ));
        }
    }
    assert!(wrong.is_empty(), "files to split:\n{}", wrong.join("\n"));
}

#[test]
fn the_path_scanner_sees_code_not_comments() {
    let found = crate_paths(
        "use crate::nas::darts::Darts; // crate::bench is a comment\nlet x = crate::Cpu::new();",
    );
    assert_eq!(
        found,
        vec![
            ("nas".to_string(), Some("darts".to_string())),
            ("Cpu".to_string(), Some("new".to_string()))
        ]
    );
}
