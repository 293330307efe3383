//! End to end: a tiny SPOS run (DARTS space) trains the supernet and searches it, writing its
//! run folder; stopping after an epoch and resuming gives the uninterrupted run's checkpoint
//! and search bit for bit (CPU); the CLI runs it on the bundled MNIST subset and the
//! architecture it prints is one `nasrs train --genotype` reads.

mod common;

use common::tmp_dir;
use nasrs::data::synthetic;
use nasrs::nas::run_dir::Start;
use nasrs::nas::spos::run::{SearchRecord, SposRun, SposRunConfig, SposSearch, CHECKPOINT};
use nasrs::nas::spos::{EvolutionConfig, PathLimits, Sampling, SposHyper};
use nasrs::nas::{Genotype, SearchConfig};
use nasrs::Cpu;
use std::path::Path;
use std::process::Command;

fn config(epochs: usize, sampling: Sampling) -> SposRunConfig {
    SposRunConfig {
        space: "darts".into(),
        dataset: "synthetic".into(),
        model: SearchConfig::darts(2, 3, 3, 1),
        hyper: SposHyper::default(),
        sampling,
        epochs,
        batch: 8,
        seed: 4,
        train_portion: 0.5,
        train_limit: None,
        augment: false,
        search: SposSearch::Evolution(EvolutionConfig {
            population: 4,
            parents: 2,
            mutations: 2,
            crossovers: 2,
            mutation_prob: 0.2,
            generations: 2,
        }),
        recalibration_batches: 1,
        limits: PathLimits::default(),
    }
}

fn run(dir: &Path, cfg: SposRunConfig, resume: bool) -> nasrs::Result<f64> {
    let data = synthetic(48, 1, 8, 8, 3, 9)?;
    let best = SposRun::new(Cpu::new(), cfg, dir)?.run(&data, Start::from_flags(resume, false)?)?;
    Ok(best.score)
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn resumed_run_equals_the_uninterrupted_one() {
    for sampling in [Sampling::Uniform, Sampling::Fair] {
        let full = tmp_dir("spos_e2e", &format!("spos-full-{sampling:?}"));
        let split = tmp_dir("spos_e2e", &format!("spos-split-{sampling:?}"));
        let score = run(&full, config(2, sampling), false).unwrap();
        assert!((0.0..=1.0).contains(&score));
        run(&split, config(1, sampling), false).unwrap();
        run(&split, config(2, sampling), true).unwrap();
        for f in [CHECKPOINT, "search.jsonl", "best.json", "genotype.py"] {
            assert_eq!(read(&full, f), read(&split, f), "{f} ({sampling:?})");
        }
        let text = String::from_utf8(read(&full, "search.jsonl")).unwrap();
        let records: Vec<SearchRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(records.len() >= 4, "{}", records.len());
        let best: Genotype = serde_json::from_slice(&read(&full, "best.json")).unwrap();
        let top = records
            .iter()
            .fold(&records[0], |b, r| if r.score > b.score { r } else { b });
        assert_eq!(best, serde_json::from_value(top.arch.clone()).unwrap());
        assert!(full.join("search.svg").exists());
        assert_eq!(
            String::from_utf8(read(&full, "metrics.jsonl"))
                .unwrap()
                .lines()
                .count(),
            2
        );
    }
}

/// With a parameter range, every path trained and scored lies in it.
#[test]
fn every_path_searched_lies_in_the_parameter_range() {
    use nasrs::backend::counting::Counting;
    use nasrs::nas::space::darts::{DartsArch, DartsSpace};
    use nasrs::nas::space::SearchSpace;
    use nasrs::nas::SearchNetwork;
    let cfg = config(1, Sampling::Uniform);
    let twin = SearchNetwork::new(&Counting::new(), cfg.model.clone(), 0).unwrap();
    let mut rng = nasrs::Rng::new(3);
    let mut sizes: Vec<usize> = (0..200)
        .map(|_| {
            twin.path_weights(&DartsSpace::default().sample(&mut rng))
                .unwrap()
        })
        .collect();
    sizes.sort_unstable();
    let (lo, hi) = (sizes[40], sizes[120]);
    let dir = tmp_dir("spos_e2e", "range");
    run(
        &dir,
        SposRunConfig {
            limits: PathLimits {
                params: Some((lo as u64, hi as u64)),
                flops: None,
            },
            ..cfg
        },
        false,
    )
    .unwrap();
    let text = String::from_utf8(read(&dir, "search.jsonl")).unwrap();
    for line in text.lines() {
        let r: SearchRecord = serde_json::from_str(line).unwrap();
        let g: Genotype = serde_json::from_value(r.arch).unwrap();
        let n = twin
            .path_weights(&DartsArch::from_genotype(&g).unwrap())
            .unwrap();
        assert!((lo..=hi).contains(&n), "{n} outside {lo}..={hi}");
        assert_eq!(r.weights, n as u64);
        // FLOPs are measured whether or not they are limited.
        assert!(r.flops > 0, "{line}");
    }
}

#[test]
fn the_cli_searches_the_bundled_data_and_its_result_trains() {
    let out = tmp_dir("spos_e2e", "cli");
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let run = Command::new(bin)
        .args([
            "search",
            "spos",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--channels",
            "2",
            "--layers",
            "3",
            "--train-limit",
            "96",
            "--population",
            "4",
            "--parents",
            "2",
            "--mutations",
            "2",
            "--crossovers",
            "2",
            "--generations",
            "2",
            "--recalibration-batches",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed: Genotype = serde_json::from_slice(&run.stdout).unwrap();
    let saved: Genotype = serde_json::from_slice(&read(&out, "best.json")).unwrap();
    assert_eq!(printed, saved);
    // The architecture trains from scratch (one tiny epoch).
    let train_out = tmp_dir("spos_e2e", "cli-train");
    let train = Command::new(bin)
        .args([
            "train",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--channels",
            "4",
            "--layers",
            "3",
            "--train-limit",
            "64",
            "--genotype",
        ])
        .arg(out.join("best.json"))
        .arg("--out")
        .arg(&train_out)
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    // A bad choice is refused naming the flag.
    let bad = Command::new(bin)
        .args(["search", "spos", "--sampling", "sometimes", "--out"])
        .arg(tmp_dir("spos_e2e", "cli-bad"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--sampling"));
}
