//! The MBConv search space (`nas::space::mbconv`): its decisions and size, EfficientNet-B0
//! expressed in it, the canonical string, JSON and decision forms round-tripping for sampled
//! architectures, bad strings refused with the stage at fault; a training trial of an mbconv
//! architecture; and multi-trial search over it through the binary (`--evaluator train`
//! runs, `--evaluator table` is refused naming the flag).

use nasrs::nas::mbconv_model::{MbConvConfig, MbConvNetwork};
use nasrs::nas::multi_trial::trial::{run_trial, TrialSpec, TrialStatus};
use nasrs::nas::space::mbconv::{MbConvArch, MbConvSpace, BASE_LAYERS};
use nasrs::nas::space::SearchSpace;
use nasrs::{Cpu, Rng};
use std::path::Path;
use std::process::Command;

const B0: &str = "e1k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se";

#[test]
fn b0_is_expressible_and_has_b0s_parameters() {
    let space = MbConvSpace::default();
    let b0 = space.parse("b0").unwrap();
    assert_eq!(b0, MbConvArch::b0());
    assert_eq!(space.to_string(&b0), B0);
    assert_eq!(space.parse(B0).unwrap(), b0);
    let layers: Vec<usize> = b0.stages.iter().map(|s| s.layers).collect();
    assert_eq!(layers, BASE_LAYERS);
    assert!(b0.stages.iter().all(|s| s.se));
    let net = MbConvNetwork::new(
        &nasrs::backend::counting::Counting::new(),
        MbConvConfig::new(b0, 1000, 3),
        0,
    )
    .unwrap();
    assert_eq!(net.num_weights(), 5_288_548);
}

#[test]
fn decisions_and_size() {
    let space = MbConvSpace::default();
    assert_eq!(space.name(), "mbconv");
    assert_eq!(space.choices().len(), 28);
    // Stages with one B0 block choose 1 or 2 layers, the others base - 1, base, base + 1.
    assert_eq!(&space.choices()[..4], &[3, 4, 2, 2]);
    assert_eq!(&space.choices()[4..8], &[3, 4, 3, 2]);
    assert_eq!(space.size(), 72u128.pow(5) * 48 * 48);
    assert_eq!(space.decision_name(6), "stage 1 layers");
}

#[test]
fn sampled_architectures_round_trip_every_form() {
    let space = MbConvSpace::default();
    let mut rng = Rng::new(15);
    for _ in 0..200 {
        let a = space.sample(&mut rng);
        assert_eq!(space.decode(&space.encode(&a)).unwrap(), a);
        assert_eq!(space.parse(&space.to_string(&a)).unwrap(), a);
        assert_eq!(space.from_json(&space.to_json(&a)).unwrap(), a);
        let m = space.mutate(&a, &mut rng);
        let differ = space
            .encode(&a)
            .iter()
            .zip(space.encode(&m))
            .filter(|(x, y)| **x != *y)
            .count();
        assert_eq!(differ, 1);
        assert!(a.stages.iter().all(|s| s.layers >= 1));
    }
}

#[test]
fn bad_strings_name_the_stage() {
    let space = MbConvSpace::default();
    for (text, want) in [
        ("e1k3l1se", "1 stages"),
        (
            "e2k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se",
            "expansion 2",
        ),
        (
            "e1k9l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se",
            "kernel 9",
        ),
        (
            "e1k3l0se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se",
            "0 layers",
        ),
        (
            "e1k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l6se-e6k3l1se",
            "stage 5",
        ),
        (
            "e1k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-x",
            "stage 6",
        ),
        (
            "e1k3lXse-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se",
            "not a number",
        ),
    ] {
        let err = space.parse(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
    assert!(space.from_json(&serde_json::json!({"arch": 3})).is_err());
}

fn data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k")
}

#[test]
fn a_training_trial_trains_an_mbconv_arch() {
    let spec = TrialSpec {
        space: "mbconv".into(),
        arch: "e1k3l1-e3k5l1se-e4k7l1-e6k3l2se-e3k5l2-e4k3l3se-e6k7l1".into(),
        channels: 1,
        layers: 1,
        width_mult: Some(0.25),
        depth_mult: Some(0.5),
        resolution: None,
        dataset: "mnist".into(),
        data: data(),
        train_limit: 64,
        valid_fraction: 0.5,
        epochs: 2,
        batch: 8,
        seed: 3,
        device: "cpu".into(),
        threads: None,
    };
    let r = run_trial(&Cpu::<f32>::new(), &spec).unwrap();
    assert_eq!(r.status, TrialStatus::Ok);
    assert_eq!(r.curve.len(), 2);
    assert!((0.0..=1.0).contains(&r.valid_acc.unwrap()));
    let bad = TrialSpec {
        arch: "e1k3l1".into(),
        ..spec
    };
    let err = run_trial(&Cpu::<f32>::new(), &bad).unwrap_err().to_string();
    assert!(err.contains("field 'arch'"), "{err}");
}

fn nasrs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(args)
        .output()
        .expect("run nasrs")
}

#[test]
fn multi_trial_search_runs_on_mbconv_with_training_trials() {
    let out = std::env::temp_dir().join(format!("nasrs-mbconv-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let data = data();
    let common = [
        "--space",
        "mbconv",
        "--budget",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        "48",
        "--batch",
        "8",
        "--device",
        "cpu",
        "--width-mult",
        "0.25",
        "--depth-mult",
        "0.5",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let mut args = vec!["search", "random", "--evaluator", "train"];
    args.extend(common);
    let o = nasrs(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let best: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the best as JSON");
    let arch = best["arch"].as_str().expect("an arch string");
    MbConvSpace::default().parse(arch).unwrap();

    let o = nasrs(&[
        "search",
        "random",
        "--space",
        "mbconv",
        "--evaluator",
        "table",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--evaluator") && err.contains("mbconv"),
        "{err}"
    );
    let mut args = vec![
        "search",
        "random",
        "--evaluator",
        "train",
        "--channels",
        "4",
    ];
    args.extend(common);
    let o = nasrs(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--channels"), "{err}");
    let _ = std::fs::remove_dir_all(&out);
}
