//! End to end: a tiny DARTS search on synthetic data writes its run folder; stopping after an
//! epoch and resuming reproduces the uninterrupted run bitwise (CPU); a NaN stops the run and
//! keeps the last good checkpoint.
//!
//! On every device (`test_device!`): a search stopped after an epoch and resumed gives the
//! uninterrupted run's genotype, metrics and checkpoint (bit for bit on the CPU and the
//! simulation, 1e-4 on a GPU). With the simulation compiled in, the CLI: `nasrs search darts
//! --device cuda-sim` writes the genotype.json of `--device cpu` and per-epoch metrics within
//! 1e-4, and `nasrs selftest --device cuda-sim` passes.

mod common;

use common::{assert_reproduced, device_kind, safetensors_outputs, tmp_dir, Outputs};
use nasrs::data::synthetic;
use nasrs::io::{load_safetensors, save_safetensors};
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{EpochMetrics, SearchRun, SearchRunConfig, Silent, CHECKPOINT};
use nasrs::nas::SearchConfig;
use nasrs::{Backend, Cpu, Error};
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
    SearchRun::new(Cpu::new(), cfg, dir)?.run(
        &train,
        Start::from_flags(resume, false)?,
        &mut Silent,
    )
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
        assert!(
            std::fs::read(full.join(CHECKPOINT)).unwrap()
                == std::fs::read(split.join(CHECKPOINT)).unwrap(),
            "order {order}: checkpoint bytes differ after resume"
        );
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
    let path = dir.join(CHECKPOINT);
    let (mut t, meta) = load_safetensors(&path).unwrap();
    // A NaN in the file is refused at load, naming the tensor.
    t.get_mut("classifier.weight").unwrap().data[0] = f32::NAN;
    save_safetensors(&path, &t, meta.clone()).unwrap();
    let err = run(&dir, config(2, 1), true).unwrap_err();
    assert!(matches!(err, Error::BadFile { .. }), "{err}");
    assert!(err.to_string().contains("classifier.weight"), "{err}");
    // A finite weight that overflows: the resumed epoch produces a non-finite loss.
    t.get_mut("classifier.weight").unwrap().data[0] = f32::MAX;
    save_safetensors(&path, &t, meta).unwrap();
    let before = std::fs::read(&path).unwrap();
    let metrics_before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let err = run(&dir, config(2, 1), true).unwrap_err();
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

/// Losses, accuracies and softmax(alpha) of every epoch, named by epoch.
fn metric_outputs(metrics: &[EpochMetrics]) -> Outputs {
    let mut out = Outputs::default();
    for m in metrics {
        let e = m.epoch;
        for (name, v) in [
            ("lr", m.lr),
            ("train_loss", m.train_loss),
            ("train_acc", m.train_acc),
            ("arch_loss", m.arch_loss),
            ("valid_loss", m.valid_loss),
            ("valid_acc", m.valid_acc),
        ] {
            out.scalar(format!("{e}.{name}"), v);
        }
        for (cell, alphas) in [("normal", &m.alphas_normal), ("reduce", &m.alphas_reduce)] {
            let flat = alphas.iter().flatten().map(|&a| a as f32).collect();
            out.push(format!("{e}.alphas_{cell}"), flat);
        }
    }
    out
}

/// A first-order search for two epochs, uninterrupted and stopped after the first then
/// resumed, on `be` (C=2, 3 cells of 2 nodes, 32 synthetic 8x8 images: two iterations of
/// batch 8 per epoch).
fn resume_reproduces_the_run<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let train = synthetic(32, 1, 8, 8, 3, 9)?;
    let search = |dir: &Path, epochs: usize, resume: bool| {
        SearchRun::new(be.clone(), config(epochs, 1), dir)?.run(
            &train,
            Start::from_flags(resume, false)?,
            &mut Silent,
        )
    };
    let kind = format!("{:?}", device_kind(be));
    let (full, split) = (
        tmp_dir("search-e2e", &format!("{kind}-full")),
        tmp_dir("search-e2e", &format!("{kind}-split")),
    );
    let g_full = search(&full, 2, false)?;
    search(&split, 1, false)?;
    assert_eq!(metrics(&split).len(), 1);
    let g_split = search(&split, 2, true)?;
    assert_eq!(g_full, g_split, "genotype after resume");
    let (m_full, m_split) = (metrics(&full), metrics(&split));
    assert_eq!(m_full.len(), 2);
    assert!(m_full.iter().all(|m| m.train_loss.is_finite()));
    assert!(m_full
        .iter()
        .zip(&m_split)
        .all(|(a, b)| a.genotype == b.genotype));
    let what = "metrics after resume";
    assert_reproduced(
        be,
        what,
        &metric_outputs(&m_split),
        &metric_outputs(&m_full),
    );
    let (a, b) = (
        safetensors_outputs(&full.join(CHECKPOINT)),
        safetensors_outputs(&split.join(CHECKPOINT)),
    );
    assert_reproduced(be, "checkpoint after resume", &b, &a);
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&split);
    Ok(())
}

test_device!(resume_is_identical_on_the_device, resume_reproduces_the_run);

/// `nasrs search darts` on the bundled MNIST subset (C=2, 3 cells, one epoch of 64 images:
/// one iteration of batch 32) with `--device cpu` and `--device cuda-sim`, run side by side:
/// the same genotype.json, and per-epoch losses and alphas within 1e-4.
#[cfg(feature = "cuda-sim")]
#[test]
fn cli_search_on_cuda_sim_matches_the_cpu() {
    use nasrs::nas::Genotype;
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k");
    let dirs = [
        tmp_dir("search-e2e", "cli-cpu"),
        tmp_dir("search-e2e", "cli-sim"),
    ];
    let children: Vec<_> = ["cpu", "cuda-sim"]
        .iter()
        .zip(&dirs)
        .map(|(device, dir)| {
            let child = Command::new(bin)
                .args(["search", "darts", "--data"])
                .arg(&data)
                .args(["--channels", "2", "--layers", "3", "--epochs", "1"])
                .args(["--train-limit", "64", "--device", device, "--out"])
                .arg(dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nasrs");
            (device, child)
        })
        .collect();
    for (device, child) in children {
        let out = child.wait_with_output().expect("wait for nasrs");
        assert!(
            out.status.success(),
            "nasrs search darts --device {device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |dir: &Path| -> Genotype {
        let text = std::fs::read_to_string(dir.join("genotype.json")).expect("genotype.json");
        serde_json::from_str(&text).expect("a genotype")
    };
    assert_eq!(
        read(&dirs[1]),
        read(&dirs[0]),
        "genotype.json, cuda-sim vs cpu"
    );
    let (sim, cpu) = (metrics(&dirs[1]), metrics(&dirs[0]));
    assert_eq!(sim.len(), 1);
    assert_eq!(cpu.len(), 1);
    for (what, s, c) in [
        ("train_loss", sim[0].train_loss, cpu[0].train_loss),
        ("arch_loss", sim[0].arch_loss, cpu[0].arch_loss),
        ("valid_loss", sim[0].valid_loss, cpu[0].valid_loss),
    ] {
        let rel = (s - c).abs() / c.abs();
        println!("{what}: cuda-sim {s} cpu {c} (relative {rel:.2e})");
        assert!(rel <= 1e-4, "{what}: cuda-sim {s} vs cpu {c}");
    }
    assert_eq!(sim[0].train_acc, cpu[0].train_acc);
    assert_eq!(sim[0].valid_acc, cpu[0].valid_acc);
    let (s, c) = (metric_outputs(&sim), metric_outputs(&cpu));
    for cell in ["alphas_normal", "alphas_reduce"] {
        let name = format!("0.{cell}");
        let e = nasrs::backend::selftest::max_error(
            s.get(&name).expect("alphas"),
            c.get(&name).expect("alphas"),
        );
        assert!(e <= 1e-4, "{cell}: {e:e}");
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `nasrs selftest --device cuda-sim`: every parity row passes, exit code 0.
#[cfg(feature = "cuda-sim")]
#[test]
fn cli_selftest_on_cuda_sim_passes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(["selftest", "--device", "cuda-sim"])
        .output()
        .expect("run nasrs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nasrs selftest --device cuda-sim: {stderr}"
    );
    assert!(stderr.contains("cuda-sim"), "{stderr}");
}
