//! The ranking study (`nas::spos::study`, `nasrs study ranking`): a tiny study on each space
//! gives one result per (variant, seed) with correlations that are the rank correlations of
//! its own scores, the same numbers when run again (seeded), and the CLI writes its files and
//! refuses to replace a study without `--force`.

mod common;

use common::tmp_dir;
use nasrs::data::synthetic;
use nasrs::nas::nb201_model::Nb201SupernetConfig;
use nasrs::nas::ranking::{kendall_tau, spearman_rho};
use nasrs::nas::spos::study::{ranking_study, RankingStudyConfig};
use nasrs::nas::spos::{Sampling, SposHyper, SupernetConfig};
use nasrs::nas::SearchConfig;
use nasrs::Cpu;
use std::process::Command;

fn config<M>(space: &str, model: M) -> RankingStudyConfig<M> {
    RankingStudyConfig {
        space: space.into(),
        dataset: "synthetic".into(),
        model,
        archs: 4,
        arch_seed: 3,
        standalone_seeds: 2,
        seeds: vec![1, 2],
        samplings: vec![Sampling::Uniform, Sampling::Fair],
        supernet_epochs: 1,
        standalone_epochs: 1,
        batch: 8,
        train_limit: None,
        hyper: SposHyper::default(),
        recalibration_batches: 1,
    }
}

fn check<M: SupernetConfig>(cfg: RankingStudyConfig<M>) {
    let data = synthetic(48, 1, 8, 8, 3, 9).unwrap();
    let study = ranking_study(&Cpu::new(), &cfg, &data, &mut |_| {}).unwrap();
    assert_eq!(study.archs.len(), 4);
    // 2 samplings x 2 seeds x (with, without recalibration).
    assert_eq!(study.runs.len(), 8);
    assert_eq!(study.summary.len(), 4);
    let truth: Vec<f64> = study.archs.iter().map(|a| a.standalone).collect();
    for a in &study.archs {
        assert_eq!(a.standalone_runs.len(), 2);
        assert!((a.standalone - (a.standalone_runs[0] + a.standalone_runs[1]) / 2.0).abs() < 1e-12);
    }
    let first: Vec<f64> = study.archs.iter().map(|a| a.standalone_runs[0]).collect();
    let second: Vec<f64> = study.archs.iter().map(|a| a.standalone_runs[1]).collect();
    let ceiling = kendall_tau(&first, &second).unwrap();
    assert_eq!(study.standalone_tau.unwrap().to_bits(), ceiling.to_bits());
    for r in &study.runs {
        assert_eq!(r.scores.len(), 4);
        let tau = kendall_tau(&r.scores, &truth).unwrap();
        let rho = spearman_rho(&r.scores, &truth).unwrap();
        assert!(
            tau.to_bits() == r.kendall_tau.to_bits(),
            "{tau} {}",
            r.kendall_tau
        );
        assert!(rho.to_bits() == r.spearman_rho.to_bits());
    }
    for s in &study.summary {
        assert_eq!(s.seeds, 2);
    }
    let again = ranking_study(&Cpu::new(), &cfg, &data, &mut |_| {}).unwrap();
    for (a, b) in study.runs.iter().zip(&again.runs) {
        assert_eq!(a.scores, b.scores, "{}", a.variant);
    }
}

#[test]
fn a_tiny_nb201_study_is_consistent_and_seeded() {
    check(config(
        "nb201",
        Nb201SupernetConfig {
            channels: 2,
            cells_per_stage: 1,
            classes: 3,
            in_channels: 1,
        },
    ));
}

#[test]
fn a_tiny_darts_study_is_consistent_and_seeded() {
    check(config(
        "darts",
        SearchConfig::darts(2, 3, 3, 1).ops(nasrs::nas::Primitive::ALL.to_vec()),
    ));
}

#[test]
fn the_cli_writes_the_study_and_keeps_it() {
    let out = tmp_dir("spos_study", "cli");
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let args = [
        "study",
        "ranking",
        "--space",
        "nb201",
        "--archs",
        "3",
        "--seeds",
        "1",
        "--sampling",
        "uniform",
        "--supernet-epochs",
        "1",
        "--standalone-epochs",
        "1",
        "--batch",
        "16",
        "--channels",
        "2",
        "--train-limit",
        "64",
        "--recalibration-batches",
        "1",
        "--out",
    ];
    let run = Command::new(bin).args(args).arg(&out).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(printed.contains("Kendall tau"), "{printed}");
    let study: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(study["runs"].as_array().unwrap().len(), 2);
    assert!(out.join("ranking.svg").exists());
    let before = std::fs::read(out.join("study.json")).unwrap();
    let again = Command::new(bin).args(args).arg(&out).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(out.join("study.json")).unwrap(), before);
    let bad = Command::new(bin)
        .args(["study", "ranking", "--sampling", "often", "--out"])
        .arg(tmp_dir("spos_study", "bad"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--sampling"));
}
