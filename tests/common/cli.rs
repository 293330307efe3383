//! Running the `nasrs` binary from a test: its output, a run that must succeed, a run that
//! must be refused with a one-line error naming the fault, and the bundled data's folder.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `nasrs args`, its status and output captured.
pub fn nasrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(args)
        .output()
        .expect("run nasrs")
}

/// `nasrs args`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = nasrs(args);
    assert!(
        out.status.success(),
        "nasrs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nasrs args`, which must exit with code 2 and a one-line error naming `what`.
pub fn refused(args: &[&str], what: &str) {
    let out = nasrs(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "nasrs {args:?}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(what) && !err.contains("panicked"),
        "nasrs {args:?}: {err}"
    );
}

/// The bundled MNIST subset's folder.
pub fn data() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/mnist-10k")
        .to_string_lossy()
        .into_owned()
}
