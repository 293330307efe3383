//! End to end: search a tiny supernet, train its genotype from `genotype.json` for a few
//! epochs, evaluate `model.safetensors`, through the library and through the CLI (search ->
//! train -> eval, on synthetic data and on the bundled MNIST subset). Resuming is in
//! `tests/train_resume.rs`, refused options and files in `tests/train_refusals.rs`; the
//! helpers they share are in common/train.rs.

mod common;

use common::train::{metrics, tmp, train_config};
use nasrs::data::synthetic;
use nasrs::io::load_safetensors;
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::eval_model::resolve_genotype;
use nasrs::nas::evaluate::{evaluate, load_network};
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{SearchRun, SearchRunConfig};
use nasrs::nas::train_run::{Silent, TrainRun, CHECKPOINT, MODEL};
use nasrs::nas::SearchConfig;
use nasrs::Cpu;
use std::path::Path;
use std::process::Command;

#[test]
fn search_then_train_its_genotype_then_evaluate_the_checkpoint() {
    let (train, test) = (
        synthetic(48, 1, 8, 8, 3, 9).unwrap(),
        synthetic(24, 1, 8, 8, 3, 10).unwrap(),
    );
    let search_dir = tmp("search");
    let mut model = SearchConfig::darts(2, 3, 3, 1);
    model.steps = 2;
    model.multiplier = 2;
    let cfg = SearchRunConfig {
        dataset: "synthetic".into(),
        model,
        hyper: DartsHyper::default(),
        epochs: 1,
        batch: 8,
        seed: 4,
        train_portion: 0.5,
        train_limit: None,
        augment: false,
    };
    let searched = SearchRun::new(Cpu::new(), cfg, &search_dir)
        .unwrap()
        .run(&train, Start::New, &mut nasrs::nas::search_run::Silent)
        .unwrap();
    // The genotype file the search wrote is what training reads.
    let genotype = resolve_genotype(search_dir.join("genotype.json").to_str().unwrap()).unwrap();
    assert_eq!(genotype, searched);
    assert_eq!(genotype.normal.len(), 4, "2 nodes, 2 ops each");

    let dir = tmp("train");
    let history = TrainRun::new(
        Cpu::new(),
        train_config(genotype.clone(), 3, false, 1),
        &dir,
    )
    .unwrap()
    .run(&train, &test, Start::New, &mut Silent)
    .unwrap();
    for f in [
        "config.json",
        "metrics.jsonl",
        "curves.svg",
        CHECKPOINT,
        MODEL,
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    assert_eq!(history.len(), 3);
    assert_eq!(metrics(&dir).len(), 3);
    // Cosine learning rate from 0.025 towards 0; drop-path 0.2 * epoch / epochs.
    assert_eq!(history[0].lr, 0.025);
    assert!(history[2].lr < history[1].lr && history[1].lr < history[0].lr);
    assert_eq!(history[0].drop_prob, 0.0);
    assert!((history[2].drop_prob - 0.2 * 2.0 / 3.0).abs() < 1e-12);
    assert!(history.iter().all(|m| m.train_loss.is_finite()
        && m.train_aux_loss.is_none()
        && (0.0..=1.0).contains(&m.test_acc)));
    let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 4);

    // The final model evaluates to the last epoch's test accuracy and loss.
    let be = Cpu::new();
    let (mut net, meta) = load_network(&be, &dir.join(MODEL), None).unwrap();
    assert_eq!(meta.model.genotype, genotype);
    assert_eq!(meta.dataset.as_deref(), Some("synthetic"));
    let report = evaluate(&be, &mut net, &test, 8).unwrap();
    let last = history.last().unwrap();
    assert_eq!(report.accuracy, last.test_acc);
    assert!((report.loss - last.test_loss).abs() < 1e-9);
    assert_eq!(report.count, test.n);
    let total: usize = report.confusion.iter().flatten().sum();
    assert_eq!(total, test.n);
    let _ = std::fs::remove_dir_all(&search_dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_search_train_eval() {
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let dir = tmp("cli");
    let s = dir.join("search");
    let t = dir.join("train");
    let ok = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "nasrs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "search",
        "darts",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--batch",
        "16",
        "--channels",
        "2",
        "--layers",
        "3",
        "--nodes",
        "2",
        "--train-limit",
        "64",
        "--device",
        "cpu",
        "--out",
        s.to_str().unwrap(),
    ]);
    let genotype = s.join("genotype.json");
    let out = ok(&[
        "train",
        "--genotype",
        genotype.to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--batch",
        "16",
        "--channels",
        "4",
        "--layers",
        "3",
        "--auxiliary",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--device",
        "cpu",
        "--out",
        t.to_str().unwrap(),
    ]);
    assert!(out.contains("final test accuracy"), "{out}");
    let model = t.join(MODEL);
    let logits = dir.join("logits.safetensors");
    let out = ok(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--logits",
        logits.to_str().unwrap(),
        "--logits-count",
        "4",
    ]);
    assert!(
        out.contains("test accuracy") && out.contains("confusion matrix"),
        "{out}"
    );
    assert_eq!(out.matches("  class ").count(), 10, "{out}");
    let (l, _) = load_safetensors(&logits).unwrap();
    assert_eq!(l["logits"].shape, vec![4, 10]);
    assert_eq!(l["images"].shape, vec![4, 3, 32, 32]);
    // Bad flags: a one-line error naming the flag, exit code 2.
    let out = Command::new(bin)
        .args(["train", "--genotype", "NOPE", "--device", "cpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--genotype"));
    let out = Command::new(bin)
        .args([
            "bench",
            "train",
            "--device",
            "cpu",
            "--channels",
            "2",
            "--layers",
            "3",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["config"]["auxiliary"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The path on the bundled MNIST subset (data/mnist-10k): search a tiny supernet,
/// train its genotype for a few epochs, evaluate the checkpoint.
#[test]
fn bundled_mnist_search_train_eval() {
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k");
    let data = data.to_str().unwrap();
    let dir = tmp("mnist");
    let (s, t) = (dir.join("search"), dir.join("train"));
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "nasrs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let search = [
        "search",
        "darts",
        "--data",
        data,
        "--dataset",
        "mnist",
        "--epochs",
        "1",
        "--batch",
        "16",
        "--channels",
        "2",
        "--layers",
        "3",
        "--train-limit",
        "128",
        "--device",
        "cpu",
        "--out",
    ];
    let printed = run(&[&search[..], &[s.to_str().unwrap()]].concat());
    assert!(
        printed.contains("\"normal\""),
        "the search prints its genotype: {printed}"
    );
    let genotype = s.join("genotype.json");
    let train = [
        "train",
        "--genotype",
        genotype.to_str().unwrap(),
        "--data",
        data,
        "--dataset",
        "mnist",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--channels",
        "4",
        "--layers",
        "3",
        "--train-limit",
        "512",
        "--test-limit",
        "256",
        "--device",
        "cpu",
        "--out",
        t.to_str().unwrap(),
    ];
    let out = run(&train);
    assert!(out.contains("final test accuracy"), "{out}");
    let history = metrics(&t);
    assert_eq!(history.len(), 3);
    assert!(
        history[2].train_loss < history[0].train_loss,
        "training loss did not fall: {history:?}"
    );
    let model = t.join(MODEL);
    let out = run(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        data,
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("2004 test images") || out.contains("test accuracy"),
        "{out}"
    );
    assert!(out.contains("confusion matrix"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
