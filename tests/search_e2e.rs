//! End to end: a tiny DARTS search on synthetic data writes its run folder; stopping after an
//! epoch and resuming reproduces the uninterrupted run bitwise (CPU); a NaN stops the run and
//! keeps the last good checkpoint.

use nasrs::data::synthetic;
use nasrs::io::{load_safetensors, save_safetensors};
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::search_run::{EpochMetrics, SearchRun, SearchRunConfig, Silent, CHECKPOINT};
use nasrs::nas::SearchConfig;
use nasrs::{Cpu, Error};
use std::path::Path;

fn config(epochs: usize, order: u8) -> SearchRunConfig {
    let mut model = SearchConfig::darts(2, 3, 3, 1);
    model.steps = 2;
    model.multiplier = 2;
    SearchRunConfig {
        dataset: "synthetic".into(),
        model,
        hyper: DartsHyper {
            order,
            ..DartsHyper::default()
        },
        epochs,
        batch: 8,
        seed: 4,
        train_portion: 0.5,
        train_limit: None,
        augment: false,
    }
}

fn run(dir: &Path, cfg: SearchRunConfig, resume: bool) -> nasrs::Result<nasrs::nas::Genotype> {
    let train = synthetic(48, 1, 8, 8, 3, 9).unwrap();
    SearchRun::new(Cpu::<f32>::new(), cfg, dir)?.run(&train, resume, &mut Silent)
}

fn metrics(dir: &Path) -> Vec<EpochMetrics> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut m: EpochMetrics = serde_json::from_str(l).unwrap();
            m.seconds = 0.0; // wall time is the one thing allowed to differ
            m
        })
        .collect()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn search_writes_its_run_folder_and_resume_is_bitwise_identical() {
    for order in [1u8, 2] {
        let full = tmp(&format!("full{order}"));
        let g_full = run(&full, config(3, order), false).unwrap();
        for f in [
            "config.json",
            "metrics.jsonl",
            "genotype.json",
            "alphas.svg",
            "cells.svg",
            CHECKPOINT,
        ] {
            assert!(full.join(f).is_file(), "missing {f}");
        }
        // BN counters as PyTorch's state_dict has them: one per weight step (3 epochs x 3).
        let (ck, _) = load_safetensors(&full.join(CHECKPOINT)).unwrap();
        assert_eq!(
            ck["cells.0.preprocess0.op.2.num_batches_tracked"].data,
            vec![9.0]
        );
        let m_full = metrics(&full);
        assert_eq!(m_full.len(), 3);
        assert!(m_full
            .iter()
            .all(|m| m.train_loss.is_finite() && m.valid_acc >= 0.0));
        // The alphas moved and are recorded per epoch.
        assert_ne!(m_full[0].alphas_normal, m_full[2].alphas_normal);
        assert_eq!(m_full[0].alphas_normal.len(), 5); // 2 nodes => 2 + 3 edges

        // "Killed" after one epoch (its checkpoint written), then resumed to the end.
        let split = tmp(&format!("split{order}"));
        run(&split, config(1, order), false).unwrap();
        let g_resumed = run(&split, config(3, order), true).unwrap();
        assert_eq!(
            g_full, g_resumed,
            "order {order}: genotype differs after resume"
        );
        assert_eq!(
            m_full,
            metrics(&split),
            "order {order}: metrics differ after resume"
        );
        let (a, _) = load_safetensors(&full.join(CHECKPOINT)).unwrap();
        let (b, _) = load_safetensors(&split.join(CHECKPOINT)).unwrap();
        assert_eq!(a, b, "order {order}: final checkpoints differ");
        let _ = std::fs::remove_dir_all(&full);
        let _ = std::fs::remove_dir_all(&split);
    }
}

#[test]
fn resume_with_different_options_is_refused() {
    let dir = tmp("mismatch");
    run(&dir, config(1, 1), false).unwrap();
    let mut other = config(2, 1);
    other.batch = 4;
    let err = run(&dir, other, true).unwrap_err().to_string();
    assert!(
        err.contains("--resume") && err.contains("checkpoint"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tmp("nan");
    run(&dir, config(1, 1), false).unwrap();
    // Poison one weight in the checkpoint: the resumed epoch produces a NaN loss.
    let path = dir.join(CHECKPOINT);
    let (mut t, meta) = load_safetensors(&path).unwrap();
    t.get_mut("classifier.weight").unwrap().data[0] = f32::NAN;
    save_safetensors(&path, &t, meta).unwrap();
    let before = std::fs::read(&path).unwrap();
    let metrics_before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let err = run(&dir, config(2, 1), true).unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("NaN") && msg.contains("epoch 1") && msg.contains("last good checkpoint"),
        "{msg}"
    );
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "checkpoint was touched"
    );
    assert_eq!(
        metrics_before,
        std::fs::read(dir.join("metrics.jsonl")).unwrap(),
        "metrics were touched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_checkpoint_names_the_file() {
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(CHECKPOINT), b"not a checkpoint").unwrap();
    let err = run(&dir, config(1, 1), true).unwrap_err().to_string();
    assert!(err.contains(CHECKPOINT), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
