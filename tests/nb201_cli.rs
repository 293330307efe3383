//! `nasrs train --space nb201` end to end through the binary, on the bundled MNIST subset
//! (data/mnist-10k) at tiny sizes: a run, resumed after its first epoch, writes the
//! checkpoint and model bytes of the uninterrupted run; `nasrs eval` reads the NB201
//! checkpoint by its metadata; flags the NB201 space has no use for are one-line errors.

#[path = "common/cli.rs"]
mod cli;

use cli::{data, nasrs, ok, refused};
use std::path::{Path, PathBuf};

const ARCH: &str =
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-nb201-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `nasrs train --space nb201` on 64 MNIST images, C=4, one cell per stage.
fn train(out: &Path, epochs: &str, extra: &[&str]) -> String {
    let data = data();
    let args = [
        "train",
        "--space",
        "nb201",
        "--arch",
        ARCH,
        "--data",
        &data,
        "--dataset",
        "mnist",
        "--epochs",
        epochs,
        "--batch",
        "16",
        "--channels",
        "4",
        "--layers",
        "1",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&[&args[..], extra].concat())
}

fn metrics_without_seconds(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["seconds"] = 0.into();
            v
        })
        .collect()
}

#[test]
fn train_resume_and_eval_an_nb201_network() {
    let dir = tmp("run");
    let (whole, resumed) = (dir.join("whole"), dir.join("resumed"));
    let printed = train(&whole, "2", &[]);
    assert!(printed.contains("final test accuracy"), "{printed}");
    train(&resumed, "1", &[]);
    train(&resumed, "2", &["--resume"]);
    for f in ["checkpoint.safetensors", "model.safetensors", "config.json"] {
        let (a, b) = (
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(resumed.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs between the whole and the resumed run");
    }
    let history = metrics_without_seconds(&whole);
    assert_eq!(history.len(), 2);
    assert_eq!(history, metrics_without_seconds(&resumed));
    assert_eq!(history[0]["lr"], 0.1, "NB201's learning rate");
    assert_eq!(history[0]["drop_prob"], 0.0);
    assert!(history[0]["train_aux_loss"].is_null());
    // The run's config: NB201's recipe and the cell.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["arch"], ARCH);
    assert_eq!(config["model"]["cells_per_stage"], 1);
    assert_eq!(config["hyper"]["nesterov"], true);
    assert_eq!(config["hyper"]["weight_decay"], 5e-4);
    assert_eq!(config["hyper"]["grad_clip"], 0.0);

    // eval reads the space from the file: the model and the checkpoint alike.
    let data = data();
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        let path = whole.join(file);
        let out = ok(&[
            "eval",
            "--checkpoint",
            path.to_str().unwrap(),
            "--data",
            &data,
            "--device",
            "cpu",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["space"], "nb201", "{out}");
        assert_eq!(v["dataset"], "mnist");
        assert_eq!(v["model"]["arch"], ARCH);
        assert!(v["test"]["count"].as_u64() > Some(0));
        assert!((0.0..=1.0).contains(&v["test"]["accuracy"].as_f64().unwrap()));
    }
    let model = whole.join("model.safetensors");
    let model = model.to_str().unwrap();
    let out = ok(&[
        "eval",
        "--checkpoint",
        model,
        "--data",
        &data,
        "--device",
        "cpu",
    ]);
    assert!(out.contains("confusion matrix"), "{out}");
    // A genotype makes no sense for an NB201 file.
    refused(
        &[
            "eval",
            "--checkpoint",
            model,
            "--genotype",
            "DARTS_V2",
            "--device",
            "cpu",
        ],
        "--genotype",
    );
    // Resuming it as a DARTS run is refused, naming the space to use.
    let resumed = resumed.to_str().unwrap();
    let out = nasrs(&[
        "train",
        "--genotype",
        "DARTS_V2",
        "--data",
        &data,
        "--epochs",
        "3",
        "--channels",
        "2",
        "--layers",
        "3",
        "--train-limit",
        "64",
        "--device",
        "cpu",
        "--out",
        resumed,
        "--resume",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--space nb201"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_the_nb201_space_has_no_use_for_are_refused() {
    let base = ["train", "--space", "nb201", "--device", "cpu"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    refused(&with(&base, &[]), "--arch");
    refused(&with(&base, &["--arch", "|nor_conv_3x3~0|"]), "--arch");
    refused(
        &with(&base, &["--arch", ARCH, "--auxiliary"]),
        "--auxiliary",
    );
    refused(
        &with(&base, &["--arch", ARCH, "--drop-path", "0.2"]),
        "--drop-path",
    );
    refused(
        &with(&base, &["--arch", ARCH, "--genotype", "DARTS_V2"]),
        "--genotype",
    );
    refused(
        &["train", "--space", "nas101", "--device", "cpu"],
        "--space",
    );
    refused(&["train", "--arch", ARCH, "--device", "cpu"], "--arch");
    refused(&["train", "--device", "cpu"], "--genotype");
}
