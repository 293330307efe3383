//! What the trial-runner tests share (`tests/trial_runner.rs`, `tests/slurm_search.rs`,
//! included by path): the binary, fresh folders, tiny trial flags, and a search's journal
//! read back as its proposals and its finished trials (wall-clock seconds left out: the one
//! thing a resumed run may not reproduce).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Trials that take a fraction of a second: 48 bundled MNIST images (24 trained on, 24 held
/// out), one epoch, C=2, one cell per stage, on the CPU.
pub const TINY: &[&str] = &[
    "--epochs",
    "1",
    "--channels",
    "2",
    "--layers",
    "1",
    "--train-limit",
    "48",
    "--batch",
    "8",
    "--device",
    "cpu",
];

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-trials-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn nasrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(args)
        .output()
        .expect("run nasrs")
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The journal's complete lines (a run killed mid-append may leave a torn last one).
fn events(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("journal.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The proposed architectures, in trial order.
pub fn proposals(run: &Path) -> Vec<String> {
    events(run)
        .into_iter()
        .filter(|e| e["event"] == "proposed")
        .map(|e| e["arch"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The finished trials, in trial order, without their seconds.
pub fn finished(run: &Path) -> Vec<serde_json::Value> {
    let mut f: Vec<serde_json::Value> = events(run)
        .into_iter()
        .filter(|e| e["event"] == "finished")
        .map(|mut e| {
            if let Some(o) = e.as_object_mut() {
                o.remove("seconds");
            }
            e
        })
        .collect();
    f.sort_by_key(|e| e["trial"].as_u64());
    f
}

/// The journaled strategy states, by the number of scores told (each appears once).
pub fn states(run: &Path) -> Vec<serde_json::Value> {
    let mut s: Vec<serde_json::Value> = events(run)
        .into_iter()
        .filter(|e| e["event"] == "state")
        .collect();
    s.sort_by_key(|e| e["observed"].as_u64());
    s
}
