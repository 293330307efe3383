//! End to end: search a tiny supernet, train its genotype from `genotype.json` for a few
//! epochs, evaluate `model.safetensors`; training resumes bitwise (CPU) with the auxiliary
//! head, drop-path and augmentation on; a NaN keeps the last checkpoint; bad options and
//! files are errors that name them; the CLI does search -> train -> eval.
//!
//! On every device (`test_device!`): a training run with the auxiliary head, drop-path and
//! augmentation, stopped after an epoch and resumed, gives the uninterrupted run's metrics,
//! checkpoint and model (bit for bit on the CPU and the simulation, 1e-4 on a GPU), and the
//! final model evaluates to the last epoch's test metrics on the device.

mod common;

use common::{assert_reproduced, device_kind, safetensors_outputs, tmp_dir, Outputs};
use nasrs::data::{synthetic, Augment, Dataset};
use nasrs::io::{load_safetensors, save_safetensors};
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig};
use nasrs::nas::evaluate::{evaluate, load_network};
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{SearchRun, SearchRunConfig};
use nasrs::nas::train_run::{
    Progress, Silent, TrainEpochMetrics, TrainHyper, TrainRun, TrainRunConfig, TrainStepStats,
    CHECKPOINT, MODEL,
};
use nasrs::nas::{Genotype, SearchConfig};
use nasrs::{Backend, Cpu, Error};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-train-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn train_config(genotype: Genotype, epochs: usize, aux: bool, c: usize) -> TrainRunConfig {
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
    }
}

fn metrics(dir: &Path) -> Vec<TrainEpochMetrics> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut m: TrainEpochMetrics = serde_json::from_str(l).unwrap();
            m.seconds = 0.0; // wall time is the one thing allowed to differ
            m
        })
        .collect()
}

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
    let searched = SearchRun::new(Cpu::<f32>::new(), cfg, &search_dir)
        .unwrap()
        .run(&train, Start::New, &mut nasrs::nas::search_run::Silent)
        .unwrap();
    // The genotype file the search wrote is what training reads.
    let genotype = resolve_genotype(search_dir.join("genotype.json").to_str().unwrap()).unwrap();
    assert_eq!(genotype, searched);
    assert_eq!(genotype.normal.len(), 4, "2 nodes, 2 ops each");

    let dir = tmp("train");
    let history = TrainRun::new(
        Cpu::<f32>::new(),
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
    let be = Cpu::<f32>::new();
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

fn cifar_like() -> (Dataset, Dataset) {
    (
        synthetic(24, 3, 32, 32, 3, 1).unwrap(),
        synthetic(8, 3, 32, 32, 3, 2).unwrap(),
    )
}

fn aux_config(epochs: usize) -> TrainRunConfig {
    let mut c = train_config(Genotype::builtin("DARTS_V2").unwrap(), epochs, true, 3);
    c.model.channels = 2;
    c.augment = Augment::cifar(Some(16));
    c
}

fn run_aux(dir: &Path, cfg: TrainRunConfig, resume: bool) -> nasrs::Result<Vec<TrainEpochMetrics>> {
    let (train, test) = cifar_like();
    TrainRun::new(Cpu::<f32>::new(), cfg, dir)?.run(
        &train,
        &test,
        Start::from_flags(resume, false)?,
        &mut Silent,
    )
}

#[test]
fn resume_is_bitwise_identical_with_auxiliary_drop_path_and_augmentation() {
    let full = tmp("full");
    let m_full = run_aux(&full, aux_config(3), false).unwrap();
    assert!(m_full.iter().all(|m| m.train_aux_loss.is_some()));
    let split = tmp("split");
    run_aux(&split, aux_config(1), false).unwrap();
    run_aux(&split, aux_config(3), true).unwrap();
    // Killed at the start of epoch 2 (the checkpoint of epoch 1 written, drop-path already
    // drawing masks), then resumed with the same options.
    let killed = tmp("killed");
    struct Kill;
    impl Progress<TrainStepStats, TrainEpochMetrics> for Kill {
        fn epoch_start(&mut self, epoch: usize, _: usize, _: usize) {
            assert!(epoch < 2, "killed");
        }
    }
    let (train, test) = cifar_like();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        TrainRun::new(Cpu::<f32>::new(), aux_config(3), &killed)
            .unwrap()
            .run(&train, &test, Start::New, &mut Kill)
    }));
    assert!(r.is_err(), "the run was not killed");
    assert_eq!(metrics(&killed).len(), 2);
    run_aux(&killed, aux_config(3), true).unwrap();
    for dir in [&split, &killed] {
        assert_eq!(metrics(&full), metrics(dir), "metrics differ after resume");
        for f in [CHECKPOINT, MODEL] {
            let (a, ma) = load_safetensors(&full.join(f)).unwrap();
            let (b, mb) = load_safetensors(&dir.join(f)).unwrap();
            assert_eq!(a, b, "{f} differs after resume");
            assert!(
                std::fs::read(full.join(f)).unwrap() == std::fs::read(dir.join(f)).unwrap(),
                "{f}: bytes differ after resume"
            );
            assert_eq!(ma.get("nasrs.model"), mb.get("nasrs.model"));
        }
    }
    // num_batches_tracked: 3 epochs of 24 / 8 = 3 steps.
    let (t, _) = load_safetensors(&full.join(MODEL)).unwrap();
    assert_eq!(
        t["auxiliary_head.features.6.num_batches_tracked"].data,
        vec![9.0]
    );
    assert_eq!(t["stem.1.num_batches_tracked"].data, vec![9.0]);
    // Drop-path draws from its own stream: another seed gives another run.
    let other = tmp("other");
    let mut cfg = aux_config(1);
    cfg.seed = 6;
    let m_other = run_aux(&other, cfg, false).unwrap();
    assert_ne!(m_other[0].train_loss, m_full[0].train_loss);
    for d in [&full, &split, &killed, &other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn resume_with_different_options_is_refused() {
    let dir = tmp("mismatch");
    run_aux(&dir, aux_config(1), false).unwrap();
    let mut other = aux_config(2);
    other.hyper.drop_path = 0.3;
    let err = run_aux(&dir, other, true).unwrap_err().to_string();
    assert!(
        err.contains("--resume") && err.contains(CHECKPOINT),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tmp("nan");
    run_aux(&dir, aux_config(1), false).unwrap();
    let path = dir.join(CHECKPOINT);
    let (mut t, meta) = load_safetensors(&path).unwrap();
    // Finite, but it overflows the logits (a NaN in the file would be refused at load).
    t.get_mut("classifier.weight").unwrap().data[0] = f32::MAX;
    // The I64 counters are read back as f32 and written as such here; nasrs reads either.
    save_safetensors(&path, &t, meta).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = run_aux(&dir, aux_config(2), true).unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("epoch 1") && msg.contains("last good checkpoint"),
        "{msg}"
    );
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "checkpoint was touched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auxiliary_head_on_the_wrong_image_size_is_refused_up_front() {
    let train = synthetic(16, 1, 28, 28, 3, 1).unwrap();
    let dir = tmp("aux28");
    let cfg = train_config(Genotype::builtin("DARTS_V2").unwrap(), 1, true, 1);
    let err = TrainRun::new(Cpu::<f32>::new(), cfg, &dir)
        .unwrap()
        .run(&train, &train, Start::New, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--auxiliary") && err.contains("28x28"),
        "{err}"
    );
    assert!(!dir.join(CHECKPOINT).exists());
}

#[test]
fn bad_genotypes_and_checkpoints_name_the_culprit() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let err = resolve_genotype("DARTS_V9").unwrap_err().to_string();
    assert!(
        err.contains("--genotype") && err.contains("DARTS_V9"),
        "{err}"
    );
    let g = dir.join("genotype.json");
    std::fs::write(&g, "{\"normal\": 3}").unwrap();
    let err = resolve_genotype(g.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("genotype.json"), "{err}");
    // A node reading a state that does not exist yet.
    let mut bad = Genotype::builtin("DARTS_V2").unwrap();
    bad.normal[0].1 = 4;
    std::fs::write(&g, serde_json::to_string(&bad).unwrap()).unwrap();
    let err = resolve_genotype(g.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("genotype.json") && err.contains("state 4"),
        "{err}"
    );
    // A checkpoint of another shape.
    let be = Cpu::<f32>::new();
    let run = tmp("shape");
    run_aux(&run, aux_config(1), false).unwrap();
    let (t, _) = load_safetensors(&run.join(MODEL)).unwrap();
    let p = dir.join("bare.safetensors");
    save_safetensors(&p, &t, Default::default()).unwrap();
    let err = load_network(&be, &p, None).err().unwrap().to_string();
    assert!(err.contains("--genotype"), "{err}");
    // Bare state_dict + the wrong genotype: names differ, the file is named.
    let err = load_network(&be, &p, Genotype::builtin("DARTS_V1"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bare.safetensors"), "{err}");
    // ... and with the right one it loads, shape inferred.
    let (net, m) = load_network(&be, &p, Genotype::builtin("DARTS_V2")).unwrap();
    assert!(m.model.auxiliary && m.model.channels == 2 && m.model.layers == 3);
    assert_eq!(net.bn_batches, 3);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&run);
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

/// Losses and accuracies of every epoch, named by epoch.
fn train_metric_outputs(metrics: &[TrainEpochMetrics]) -> Outputs {
    let mut out = Outputs::default();
    for m in metrics {
        let e = m.epoch;
        for (name, v) in [
            ("lr", m.lr),
            ("drop_prob", m.drop_prob),
            ("train_loss", m.train_loss),
            ("train_aux_loss", m.train_aux_loss.unwrap_or(f64::NAN)),
            ("train_acc", m.train_acc),
            ("test_loss", m.test_loss),
            ("test_acc", m.test_acc),
        ] {
            out.scalar(format!("{e}.{name}"), v);
        }
    }
    out
}

/// DARTS_V2 (C=2, 3 cells, auxiliary head, drop-path, CIFAR augmentation with cutout) on 24
/// 32x32 images, batch 8, for two epochs: uninterrupted, and stopped after the first then
/// resumed, on `be`.
fn train_resume_reproduces_the_run<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let (train, test) = cifar_like();
    let run = |dir: &Path, epochs: usize, resume: bool| {
        TrainRun::new(be.clone(), aux_config(epochs), dir)?.run(
            &train,
            &test,
            Start::from_flags(resume, false)?,
            &mut Silent,
        )
    };
    let kind = format!("{:?}", device_kind(be));
    let (full, split) = (
        tmp_dir("train-e2e", &format!("{kind}-full")),
        tmp_dir("train-e2e", &format!("{kind}-split")),
    );
    let history = run(&full, 2, false)?;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|m| m.train_aux_loss.is_some()));
    run(&split, 1, false)?;
    run(&split, 2, true)?;
    assert_reproduced(
        be,
        "metrics after resume",
        &train_metric_outputs(&metrics(&split)),
        &train_metric_outputs(&metrics(&full)),
    );
    for f in [CHECKPOINT, MODEL] {
        let (a, b) = (
            safetensors_outputs(&full.join(f)),
            safetensors_outputs(&split.join(f)),
        );
        assert_reproduced(be, &format!("{f} after resume"), &b, &a);
    }
    // The final model, loaded on the device, evaluates to the last epoch's test metrics.
    let (mut net, _) = load_network(be, &full.join(MODEL), None)?;
    let report = evaluate(be, &mut net, &test, 8)?;
    let last = history.last().expect("two epochs");
    assert_eq!(report.accuracy, last.test_acc);
    assert!((report.loss - last.test_loss).abs() <= 1e-6 * last.test_loss.abs());
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&split);
    Ok(())
}

test_device!(
    train_resume_is_identical_on_the_device,
    train_resume_reproduces_the_run
);
