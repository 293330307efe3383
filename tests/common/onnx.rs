//! The ONNX export's consumer checks, shared by the export tests: nasrs eval's logits of
//! test images, the Python interpreter with onnx and onnxruntime (required under
//! `NASRS_ONNX_TESTS=1`, else a skip saying why), and `tools/check_onnx.py` run on a model.

#![allow(dead_code)]

use super::cli::{data, ok};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `nasrs eval --logits`: 16 test images and nasrs' eval-mode logits of them.
pub fn eval_logits(model: &Path, out: &Path) {
    let data = data();
    ok(&[
        "eval",
        "--checkpoint",
        s(model),
        "--data",
        &data,
        "--logits",
        s(out),
        "--logits-count",
        "16",
        "--device",
        "cpu",
    ]);
}

/// The interpreter for tools/check_onnx.py, or None (saying why) when it lacks the packages
/// and the ONNX checks are not required.
pub fn python() -> Option<PathBuf> {
    let required = std::env::var("NASRS_ONNX_TESTS").is_ok_and(|v| v == "1");
    let venv = manifest().join(".onnx-venv/bin/python");
    let py = std::env::var_os("NASRS_ONNX_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if venv.exists() {
                venv
            } else {
                "python3".into()
            }
        });
    let probe = Command::new(&py)
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output();
    match probe {
        Ok(o) if o.status.success() => Some(py),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                !required,
                "NASRS_ONNX_TESTS=1 but {} cannot import onnx, onnxruntime and numpy: {why}",
                py.display()
            );
            eprintln!(
                "skipped: the ONNX Runtime checks ({} lacks onnx/onnxruntime: {why}; set \
                 NASRS_ONNX_PYTHON or NASRS_ONNX_TESTS=1)",
                py.display()
            );
            None
        }
    }
}

/// tools/check_onnx.py: the checker, then ONNX Runtime's logits against `logits`' (1e-4).
pub fn check_with_onnx_runtime(py: &Path, model: &Path, logits: &Path) -> serde_json::Value {
    let out = Command::new(py)
        .arg(manifest().join("tools/check_onnx.py"))
        .args(["--model", s(model), "--logits", s(logits), "--tol", "1e-4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_onnx.py {}: {}{}",
        model.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", line.trim());
    serde_json::from_str(line.trim()).unwrap()
}
