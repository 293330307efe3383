//! What a hostile or careless user types, through the `nasrs` binary: no command loses a
//! file it did not create, none panics or is killed for memory, NaN and damaged files are
//! named, and every message points at the flag or file at fault (README "Reliability").
//!
//! Each case runs the real binary on the bundled MNIST subset at a tiny size (C=2, 3 cells,
//! 64 images: well under a second per run).

use nasrs::io::{load_safetensors, save_safetensors, HostTensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs `nasrs args...` (with `--data` of the bundled set where `with_data`).
fn nasrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("start nasrs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean refusal: exit code 2 (usage or input error), a one-line `error:` that
/// contains every one of `needles`, no panic.
fn refused(o: &Output, needles: &[&str]) -> String {
    let err = text(o);
    assert_eq!(o.status.code(), Some(2), "expected exit code 2: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
    line.to_string()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "nasrs failed: {}", text(o));
}

const TINY: &[(&str, &str)] = &[("--channels", "2"), ("--layers", "3"), ("--epochs", "1")];

/// `args`, then the `TINY` sizes `extra` does not set, then `extra`.
fn with_tiny<'a>(mut args: Vec<&'a str>, extra: &[&'a str]) -> Vec<&'a str> {
    for &(flag, value) in TINY {
        if !extra.contains(&flag) {
            args.extend_from_slice(&[flag, value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

fn search(out: &Path, extra: &[&str]) -> Output {
    let d = data();
    let mut args = vec!["search", "darts", "--data", d.to_str().unwrap()];
    args.extend_from_slice(&["--train-limit", "64", "--device", "cpu", "--out"]);
    args.push(out.to_str().unwrap());
    nasrs(&with_tiny(args, extra))
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let d = data();
    let mut args = vec![
        "train",
        "--genotype",
        "DARTS_V2",
        "--data",
        d.to_str().unwrap(),
    ];
    args.extend_from_slice(&["--batch", "32", "--train-limit", "64", "--test-limit", "32"]);
    args.extend_from_slice(&["--device", "cpu", "--out", out.to_str().unwrap()]);
    nasrs(&with_tiny(args, extra))
}

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    files.sort();
    files
}

fn names(dir: &Path) -> Vec<String> {
    snapshot(dir).into_iter().map(|(n, _)| n).collect()
}

// ---- data loss --------------------------------------------------------------------------

#[test]
fn eval_never_writes_its_logits_over_an_input_or_an_existing_file() {
    let dir = tmp("logits");
    let run = dir.join("run");
    ok(&train(&run, &[]));
    let model = run.join("model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let d = data();
    let eval = |logits: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "--checkpoint", model.to_str().unwrap()];
        args.extend_from_slice(&["--data", d.to_str().unwrap(), "--device", "cpu"]);
        args.extend_from_slice(&["--logits", logits.to_str().unwrap()]);
        args.extend_from_slice(extra);
        nasrs(&args)
    };
    // Its own input, even with --force, and through a hard link.
    refused(
        &eval(&model, &[]),
        &["--logits", "model.safetensors", "input"],
    );
    refused(&eval(&model, &["--force"]), &["--logits", "input"]);
    let link = dir.join("link.safetensors");
    std::fs::hard_link(&model, &link).unwrap();
    refused(&eval(&link, &["--force"]), &["--logits", "input"]);
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the model was touched"
    );
    // A file it did not create: only with --force.
    let other = dir.join("notes.safetensors");
    std::fs::write(&other, b"keep me").unwrap();
    refused(
        &eval(&other, &[]),
        &["--logits", "notes.safetensors", "--force"],
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    ok(&eval(&other, &["--force"]));
    let (t, _) = load_safetensors(&other).unwrap();
    assert_eq!(t["logits"].shape, vec![16, 10]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_run_never_replaces_an_earlier_one_without_force() {
    let dir = tmp("folders");
    for (kind, out) in [("search", dir.join("s")), ("train", dir.join("t"))] {
        let go = |extra: &[&str]| {
            if kind == "search" {
                search(&out, extra)
            } else {
                train(&out, extra)
            }
        };
        ok(&go(&[]));
        let before = snapshot(&out);
        let line = refused(&go(&[]), &["already holds a run", "--resume", "--force"]);
        assert!(line.contains(out.to_str().unwrap()), "{line}");
        // A different option changes nothing either.
        refused(&go(&["--seed", "7"]), &["already holds a run"]);
        assert_eq!(
            snapshot(&out),
            before,
            "{kind}: the earlier run was touched"
        );
        refused(&go(&["--resume", "--force"]), &["--force", "--resume"]);
        // --force replaces it, and the folder is one consistent run afterwards.
        ok(&go(&["--force", "--seed", "7"]));
        let config = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(config.contains("\"seed\": 7"), "{config}");
        assert_eq!(
            snapshot(&out)
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>(),
            before.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        );
    }
    // A folder holding files nasrs did not write is not a run folder.
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), b"...").unwrap();
    refused(&search(&foreign, &[]), &["not empty", "thesis.tex"]);
    refused(&search(&foreign, &["--resume"]), &["not empty"]);
    refused(&search(&foreign, &["--force"]), &["not empty"]);
    // Nor does a training run replace a search run (genotype.json would stay behind).
    let searched = dir.join("s");
    let before = snapshot(&searched);
    refused(
        &train(&searched, &["--force"]),
        &["not empty", "genotype.json"],
    );
    assert_eq!(snapshot(&searched), before);
    assert_eq!(names(&foreign), vec!["thesis.tex"]);
    // --out naming a file.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    refused(&search(&file, &[]), &["--out", "is a file"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_run_leaves_its_folder_consistent() {
    let dir = tmp("consistent");
    // A run that fails in its first epoch (the weights blow up) writes nothing.
    let fresh = dir.join("fresh");
    let o = search(&fresh, &["--lr", "1e30"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(
        err.contains("loss is NaN at epoch 0") && err.contains("no epoch finished"),
        "{err}"
    );
    assert_eq!(names(&fresh), Vec::<String>::new());
    // A loss that explodes to finite absurd values is reported too, not searched on.
    let o = search(&dir.join("diverged"), &["--lr", "100"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(
        err.contains("diverged") && err.contains("at epoch 0"),
        "{err}"
    );
    // With --force over an earlier run, the earlier run stays whole until the new one has
    // saved an epoch: a failure before that loses nothing, and no config.json of the failed
    // run sits beside the old checkpoint.
    let run = dir.join("run");
    ok(&train(&run, &[]));
    let before = snapshot(&run);
    let o = train(&run, &["--force", "--lr", "1e30"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(snapshot(&run), before, "the earlier run was touched");
    // The earlier run still evaluates.
    let d = data();
    ok(&nasrs(&[
        "eval",
        "--checkpoint",
        run.join("model.safetensors").to_str().unwrap(),
        "--data",
        d.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stale_temp_files_of_a_killed_write_are_removed() {
    let dir = tmp("stale");
    let run = dir.join("run");
    ok(&search(&run, &[]));
    // What a kill inside `atomic_write` leaves (no process has pid 4194303 here).
    let stale = [
        ".checkpoint.safetensors.4194303.tmp",
        ".metrics.jsonl.4194303.tmp",
    ];
    for s in stale {
        std::fs::write(run.join(s), b"half").unwrap();
    }
    ok(&search(&run, &["--resume", "--epochs", "2"]));
    let left = names(&run);
    assert!(
        stale.iter().all(|s| !left.contains(&s.to_string())),
        "{left:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- sizes --------------------------------------------------------------------------------

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let dir = tmp("sizes");
    for (flag, value) in [
        ("--channels", "18446744073709551615"),
        ("--channels", "4294967296"),
        ("--channels", "100000"),
        ("--layers", "1000000"),
        ("--nodes", "100000"),
    ] {
        let out = dir.join(format!("{}{value}", &flag[2..]));
        let d = data();
        let o = nasrs(&[
            "search",
            "darts",
            "--data",
            d.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
            flag,
            value,
        ]);
        let line = refused(&o, &[]);
        assert!(
            line.contains("needs about") && line.contains("available")
                || line.contains("overflows"),
            "{flag} {value}: {line}"
        );
        assert!(
            !out.exists() || names(&out).is_empty(),
            "{flag} {value} wrote files"
        );
    }
    for channels in ["4294967296", "100000"] {
        let line = refused(&train(&dir.join("train"), &["--channels", channels]), &[]);
        assert!(
            line.contains("needs about") || line.contains("overflows"),
            "{line}"
        );
    }
    let o = search(&dir.join("batch"), &["--batch", "18446744073709551615"]);
    refused(&o, &["--batch", "larger than"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trained model whose file is altered by `alter` (tensors, metadata), saved as
/// `name` in `dir`; returns its path.
fn altered_model(
    dir: &Path,
    name: &str,
    alter: impl FnOnce(
        &mut std::collections::BTreeMap<String, HostTensor>,
        &mut HashMap<String, String>,
    ),
) -> PathBuf {
    let run = dir.join(format!("run-{name}"));
    if !run.join("model.safetensors").exists() {
        ok(&train(&run, &[]));
    }
    let (mut t, mut meta) = load_safetensors(&run.join("model.safetensors")).unwrap();
    alter(&mut t, &mut meta);
    let path = dir.join(name);
    save_safetensors(&path, &t, meta).unwrap();
    path
}

fn eval_file(path: &Path, extra: &[&str]) -> Output {
    let d = data();
    let mut args = vec!["eval", "--checkpoint", path.to_str().unwrap()];
    args.extend_from_slice(&["--data", d.to_str().unwrap(), "--device", "cpu"]);
    args.extend_from_slice(extra);
    nasrs(&args)
}

#[test]
fn checkpoints_claiming_huge_networks_are_refused() {
    let dir = tmp("claims");
    let huge_meta = altered_model(&dir, "huge.safetensors", |_, meta| {
        let m = meta.get_mut("nasrs.model").unwrap();
        *m = m.replace("\"channels\":2", "\"channels\":1000000000");
    });
    refused(
        &eval_file(&huge_meta, &[]),
        &["huge.safetensors", "stem.0.weight"],
    );
    // A bare PyTorch-style state_dict naming cell 99999999.
    let far_cell = altered_model(&dir, "far.safetensors", |t, meta| {
        meta.clear();
        let w = t["cells.0.preprocess0.op.1.weight"].clone();
        t.insert("cells.99999999.preprocess0.op.1.weight".into(), w);
    });
    refused(
        &eval_file(&far_cell, &["--genotype", "DARTS_V2", "--dataset", "mnist"]),
        &["far.safetensors", "cells"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- NaN and invalid values ---------------------------------------------------------------

#[test]
fn damaged_values_in_a_checkpoint_are_named() {
    let dir = tmp("values");
    let nan = altered_model(&dir, "nan.safetensors", |t, _| {
        t.get_mut("classifier.weight").unwrap().data[3] = f32::NAN;
    });
    refused(
        &eval_file(&nan, &[]),
        &["nan.safetensors", "classifier.weight", "NaN"],
    );
    let inf = altered_model(&dir, "inf.safetensors", |t, _| {
        t.get_mut("stem.0.weight").unwrap().data[0] = f32::NEG_INFINITY;
    });
    refused(
        &eval_file(&inf, &[]),
        &["inf.safetensors", "stem.0.weight", "inf"],
    );
    let var = altered_model(&dir, "var.safetensors", |t, _| {
        t.get_mut("stem.1.running_var").unwrap().data[1] = -0.5;
    });
    refused(
        &eval_file(&var, &[]),
        &["var.safetensors", "stem.1.running_var", "negative"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- exact resume ------------------------------------------------------------------------

#[test]
fn options_with_long_floats_resume_exactly() {
    let dir = tmp("floats");
    let run = dir.join("run");
    let lr = [
        "--lr",
        "0.12479683740135217",
        "--arch-lr",
        "0.00031415926535897933",
    ];
    ok(&search(&run, &lr));
    let mut more = lr.to_vec();
    more.extend_from_slice(&["--resume", "--epochs", "2"]);
    ok(&search(&run, &more));
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_float_written_reads_back_exactly() {
    // Values whose shortest decimal form parses one ulp off without exact parsing.
    let mut rng = nasrs::Rng::new(11);
    for _ in 0..20_000 {
        let v = f64::from_bits(rng.next_u64() >> 2) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
        if !v.is_finite() {
            continue;
        }
        let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back.to_bits(), v.to_bits(), "{v:e}");
    }
}

// ---- messages -------------------------------------------------------------------------------

/// An MNIST-layout folder of `side x side` images.
fn tiny_images(dir: &Path, side: usize) -> PathBuf {
    use std::io::Write;
    let d = dir.join(format!("img{side}"));
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, n) in [("train", 64u32), ("t10k", 16)] {
        let mut images = vec![0, 0, 8, 3];
        for v in [n, side as u32, side as u32] {
            images.extend_from_slice(&v.to_be_bytes());
        }
        images.extend((0..n as usize * side * side).map(|i| (i * 7 % 256) as u8));
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&n.to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        for (kind, bytes) in [("images-idx3", images), ("labels-idx1", labels)] {
            let f = std::fs::File::create(d.join(format!("{prefix}-{kind}-ubyte.gz"))).unwrap();
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap();
        }
    }
    d
}

#[test]
fn messages_name_what_the_user_did() {
    let dir = tmp("messages");
    for side in [1, 3] {
        let images = tiny_images(&dir, side);
        let o = nasrs(&[
            "search",
            "darts",
            "--data",
            images.to_str().unwrap(),
            "--device",
            "cpu",
            "--train-limit",
            "64",
            "--epochs",
            "1",
            "--out",
            dir.join(format!("o{side}")).to_str().unwrap(),
        ]);
        refused(&o, &[&format!("{side}x{side} images"), "--layers"]);
    }
    let o = search(&dir.join("none"), &["--ops", "none"]);
    refused(&o, &["--ops", "none"]);
    let s = dir.join("search");
    ok(&search(&s, &[]));
    let o = eval_file(&s.join("checkpoint.safetensors"), &[]);
    refused(&o, &["search checkpoint", "nasrs train"]);
    let _ = std::fs::remove_dir_all(&dir);
}
