//! `nasrs train --space mbconv` end to end through the binary, on the bundled MNIST subset
//! (data/mnist-10k, 28x28x1) at width 0.25: a run, resumed after its first epoch, writes the
//! checkpoint and model bytes of the uninterrupted run; `nasrs eval` reads the MBConv
//! checkpoint by its metadata; `--arch b1` takes the scaling table's row; flags the MBConv
//! space has no use for are one-line errors.

#[path = "common/cli.rs"]
mod cli;

use cli::{data, nasrs, refused};
use std::path::{Path, PathBuf};

const ARCH: &str = "e1k3l1se-e3k5l1-e4k7l1se-e6k3l2-e3k7l2se-e4k5l3-e6k7l1se";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-mbconv-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ok(args: &[&str]) -> (String, String) {
    let out = nasrs(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "nasrs {args:?}: {err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

/// `nasrs train --space mbconv` on 64 MNIST images at width 0.25, depth 0.5.
fn train(out: &Path, arch: &str, epochs: &str, extra: &[&str]) -> (String, String) {
    let data = data();
    let args = [
        "train",
        "--space",
        "mbconv",
        "--arch",
        arch,
        "--data",
        &data,
        "--epochs",
        epochs,
        "--batch",
        "16",
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

const SMALL: &[&str] = &["--width-mult", "0.25", "--depth-mult", "0.5"];

#[test]
fn train_resume_and_eval_an_mbconv_network() {
    let dir = tmp("run");
    let (whole, resumed) = (dir.join("whole"), dir.join("resumed"));
    let (printed, _) = train(&whole, ARCH, "2", SMALL);
    assert!(printed.contains("final test accuracy"), "{printed}");
    train(&resumed, ARCH, "1", SMALL);
    train(&resumed, ARCH, "2", &[SMALL, &["--resume"]].concat());
    for f in ["checkpoint.safetensors", "model.safetensors", "config.json"] {
        let (a, b) = (
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(resumed.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs between the whole and the resumed run");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["arch"], ARCH);
    assert_eq!(config["model"]["width_mult"], 0.25);
    assert_eq!(config["model"]["in_channels"], 1);
    assert_eq!(config["model"]["bn_momentum"], 0.1);
    assert_eq!(config["model"]["bn_eps"], 1e-3);
    assert_eq!(config["hyper"]["drop_path"], 0.2);

    let data = data();
    let model = whole.join("model.safetensors");
    let (out, _) = ok(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        &data,
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["space"], "mbconv", "{out}");
    assert_eq!(v["model"]["arch"], ARCH);
    assert!((0.0..=1.0).contains(&v["test"]["accuracy"].as_f64().unwrap()));
    refused(
        &[
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--genotype",
            "DARTS_V2",
            "--device",
            "cpu",
        ],
        "--genotype",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn arch_b1_takes_the_scaling_tables_row() {
    let dir = tmp("b1");
    // One step of B1 at width 0.25 (the flag overrides the row's 1.0): its depth 1.1 and
    // dropout 0.2 come from data/efficientnet/scaling.csv.
    let (_, err) = train(&dir, "b1", "1", &["--width-mult", "0.25"]);
    assert!(err.contains("width 0.25 depth 1.1"), "{err}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["depth_mult"], 1.1);
    assert_eq!(config["model"]["dropout"], 0.2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_the_mbconv_space_has_no_use_for_are_refused() {
    let base = [
        "train", "--space", "mbconv", "--arch", "b0", "--device", "cpu",
    ];
    for (extra, flag) in [
        (&["--channels", "8"][..], "--channels"),
        (&["--layers", "2"][..], "--layers"),
        (&["--auxiliary"][..], "--auxiliary"),
        (&["--genotype", "DARTS_V2"][..], "--genotype"),
    ] {
        refused(&[&base[..], extra].concat(), flag);
    }
    refused(&["train", "--space", "mbconv", "--device", "cpu"], "--arch");
    refused(
        &[
            "train", "--space", "mbconv", "--arch", "b9", "--device", "cpu",
        ],
        "--arch",
    );
    refused(
        &[
            "train", "--space", "mbconv", "--arch", "e1k3", "--device", "cpu",
        ],
        "--arch",
    );
    refused(
        &[
            "train",
            "--space",
            "mbconv",
            "--arch",
            "b0",
            "--width-mult",
            "0",
            "--device",
            "cpu",
        ],
        "--width-mult",
    );
    refused(
        &[
            "train",
            "--genotype",
            "DARTS_V2",
            "--width-mult",
            "0.5",
            "--device",
            "cpu",
        ],
        "--width-mult",
    );
}
