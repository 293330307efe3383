//! What the training-run tests (`tests/train_*.rs`) share: fresh run folders, a small
//! training configuration, the metrics a run wrote, and a CIFAR-like run with the auxiliary
//! head, drop-path and augmentation on.

use nasrs::data::{synthetic, Augment, Dataset};
use nasrs::nas::eval_model::EvalConfig;
use nasrs::nas::run_dir::Start;
use nasrs::nas::train_run::{Silent, TrainEpochMetrics, TrainHyper, TrainRun, TrainRunConfig};
use nasrs::nas::Genotype;
use nasrs::Cpu;
use std::path::{Path, PathBuf};

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-train-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn train_config(genotype: Genotype, epochs: usize, aux: bool, c: usize) -> TrainRunConfig {
    TrainRunConfig {
        dataset: "synthetic".into(),
        model: EvalConfig {
            genotype,
            channels: 4,
            layers: 3,
            classes: 3,
            in_channels: c,
            auxiliary: aux,
        },
        hyper: TrainHyper::default(),
        epochs,
        batch: 8,
        seed: 5,
        augment: Augment::none(),
        train_limit: None,
        test_limit: None,
        resolution: None,
    }
}

pub fn metrics(dir: &Path) -> Vec<TrainEpochMetrics> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut m: TrainEpochMetrics = serde_json::from_str(l).unwrap();
            m.seconds = 0.0; // wall time is the one thing allowed to differ
            m
        })
        .collect()
}

pub fn cifar_like() -> (Dataset, Dataset) {
    (
        synthetic(24, 3, 32, 32, 3, 1).unwrap(),
        synthetic(8, 3, 32, 32, 3, 2).unwrap(),
    )
}

pub fn aux_config(epochs: usize) -> TrainRunConfig {
    let mut c = train_config(Genotype::builtin("DARTS_V2").unwrap(), epochs, true, 3);
    c.model.channels = 2;
    c.augment = Augment::cifar(Some(16));
    c
}

pub fn run_aux(
    dir: &Path,
    cfg: TrainRunConfig,
    resume: bool,
) -> nasrs::Result<Vec<TrainEpochMetrics>> {
    let (train, test) = cifar_like();
    TrainRun::new(Cpu::new(), cfg, dir)?.run(
        &train,
        &test,
        Start::from_flags(resume, false)?,
        &mut Silent,
    )
}
