//! Compound scaling (`nas::scaling`, `nasrs scale search|apply`): the grid keeps exactly the
//! points within the tolerance, its endpoints included; apply's rounding (phi = 0 is the
//! base, known per-stage values at phi = 2, B0 scaled to B2's multipliers has torchvision's
//! B2 parameter count); a scale search of three candidates end to end on the bundled MNIST,
//! resumed without re-running anything, applied at phi = 1 and trained; bad flags and files
//! refused with exit code 2 and a one-line error naming them.

#[path = "common/cli.rs"]
mod cli;

use cli::{data, nasrs, ok, refused};
use nasrs::backend::counting::Counting;
use nasrs::nas::mbconv_model::{MbConvConfig, MbConvNetwork};
use nasrs::nas::scaling::apply::apply;
use nasrs::nas::scaling::base::{read_base, ScalingBase};
use nasrs::nas::scaling::search::ScalingReport;
use nasrs::nas::scaling::{Coefficients, Grid};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-scaling-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn b0() -> ScalingBase {
    read_base("b0").unwrap()
}

#[test]
fn the_grid_keeps_exactly_the_points_within_tolerance() {
    for (step, tolerance) in [(0.1, 0.1), (0.05, 0.1), (0.1, 0.05), (0.05, 0.02)] {
        let grid = Grid {
            step,
            tolerance,
            ..Grid::default()
        };
        let kept = grid.candidates().unwrap();
        assert!(!kept.is_empty());
        assert!(kept
            .iter()
            .all(|c| (c.product() - 2.0).abs() <= tolerance + 1e-9));
        // Brute force over the same integer grid: nothing within tolerance is left out.
        let axis = |lo: f64, hi: f64| {
            let n = ((hi - lo) / step).round() as usize;
            (0..=n).map(move |i| ((lo + i as f64 * step) * 1e9).round() / 1e9)
        };
        let mut all = Vec::new();
        for alpha in axis(1.0, 2.0) {
            for beta in axis(1.0, 1.5) {
                for gamma in axis(1.0, 1.5) {
                    let c = Coefficients { alpha, beta, gamma };
                    if (c.product() - 2.0).abs() <= tolerance + 1e-9 {
                        all.push(c);
                    }
                }
            }
        }
        assert_eq!(kept, all, "step {step} tolerance {tolerance}");
    }
    assert_eq!(Grid::default().candidates().unwrap().len(), 21);
}

#[test]
fn the_grid_includes_its_endpoints() {
    // A tolerance past the largest product keeps every point.
    let grid = Grid {
        step: 0.1,
        tolerance: 100.0,
        ..Grid::default()
    };
    let all = grid.candidates().unwrap();
    assert_eq!(all.len(), 11 * 6 * 6);
    let values = |f: fn(&Coefficients) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    assert_eq!(values(|c| c.gamma), [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]);
    assert_eq!(values(|c| c.alpha).first(), Some(&1.0));
    assert_eq!(values(|c| c.alpha).last(), Some(&2.0));
    // A step that does not divide the range stops inside it.
    let coarse = Grid {
        step: 0.4,
        tolerance: 100.0,
        ..Grid::default()
    };
    let alphas: Vec<f64> = coarse
        .candidates()
        .unwrap()
        .iter()
        .map(|c| c.alpha)
        .collect();
    assert!(alphas.iter().all(|&a| a == 1.0 || a == 1.4 || a == 1.8));
}

#[test]
fn phi_zero_is_the_base() {
    let base = ScalingBase {
        width_mult: 0.5,
        depth_mult: 0.8,
        ..b0()
    };
    let c = Coefficients {
        alpha: 1.2,
        beta: 1.1,
        gamma: 1.15,
    };
    let net = apply(&base, 28, c, 0.0, 10, 1).unwrap();
    assert_eq!(
        (net.width_mult, net.depth_mult, net.resolution),
        (0.5, 0.8, 28)
    );
    let cfg = MbConvConfig {
        width_mult: 0.5,
        depth_mult: 0.8,
        ..MbConvConfig::new(nasrs::nas::space::mbconv::MbConvArch::b0(), 10, 1)
    };
    let want = MbConvNetwork::new(&Counting::new(), cfg, 0)
        .unwrap()
        .num_weights();
    assert_eq!(net.params, want);
}

#[test]
fn b0_at_b2s_multipliers_has_torchvisions_b2_parameter_count() {
    // torchvision's efficientnet_b2 (width 1.1, depth 1.2) at 1000 classes; the published
    // table's resolution is 260, compound scaling's round(224 * 1.15) = 258.
    let c = Coefficients {
        alpha: 1.2,
        beta: 1.1,
        gamma: 1.15,
    };
    let net = apply(&b0(), 224, c, 1.0, 1000, 3).unwrap();
    assert_eq!(
        (net.width_mult, net.depth_mult, net.resolution),
        (1.1, 1.2, 258)
    );
    assert_eq!(net.params, 9_109_994);
    let table = MbConvNetwork::new(
        &Counting::new(),
        MbConvConfig::efficientnet("b2", 1000, 3).unwrap(),
        0,
    )
    .unwrap();
    assert_eq!(net.params, table.num_weights());
}

#[test]
fn phi_two_rounds_as_efficientnet() {
    let c = Coefficients {
        alpha: 1.2,
        beta: 1.1,
        gamma: 1.15,
    };
    let net = apply(&b0(), 224, c, 2.0, 1000, 3).unwrap();
    // 1.2^2 and 1.1^2 exactly, not 1.4399999999999999.
    assert_eq!((net.depth_mult, net.width_mult), (1.44, 1.21));
    assert_eq!(net.resolution, 296); // round(224 * 1.3225) = round(296.24)
    let layers: Vec<usize> = net.stages.iter().map(|s| s.layers).collect();
    assert_eq!(layers, [2, 3, 3, 5, 5, 6, 2]); // ceil([1, 2, 2, 3, 3, 4, 1] * 1.44)
    let channels: Vec<usize> = net.stages.iter().map(|s| s.channels).collect();
    // make_divisible(c * 1.21): 19.36 -> 24 (16 is under 90%), 29.04 -> 32, ...
    assert_eq!(channels, [24, 32, 48, 96, 136, 232, 384]);
    assert_eq!((net.stem_channels, net.head_channels), (40, 1536));
    // A product of 2.0449 per phi: the FLOPs about double (up to the rounding).
    let flops: Vec<f64> = [0.0, 1.0, 2.0]
        .iter()
        .map(|&phi| apply(&b0(), 224, c, phi, 1000, 3).unwrap().flops as f64)
        .collect();
    for w in flops.windows(2) {
        assert!((1.6..2.6).contains(&(w[1] / w[0])), "{flops:?}");
    }
    let e = apply(&b0(), 224, c, -1.0, 10, 1).unwrap_err().to_string();
    assert!(e.contains("--phi"), "{e}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn attempts(run: &Path) -> usize {
    std::fs::read_dir(run.join("trials"))
        .unwrap()
        .map(|t| std::fs::read_dir(t.unwrap().path()).unwrap().count())
        .sum()
}

#[test]
fn a_scale_search_is_resumed_applied_and_trained() {
    let dir = tmp("e2e");
    // A best.json as `nasrs search ... --space mbconv --evaluator train` writes it.
    let best = write(
        &dir,
        "best.json",
        r#"{"space": "mbconv", "arch": "e1k3l1se-e3k5l1-e4k7l1se-e6k3l2-e3k7l2se-e4k5l3-e6k7l1se",
            "trial": 3, "valid_acc": 0.5}"#,
    );
    let run = dir.join("run");
    let run_s = run.to_string_lossy().into_owned();
    let (d, batch) = (data(), "8");
    // alpha * gamma^2 (beta fixed at 1) within 0.15 of 2: (1, 1.4), (1.1, 1.3), (1.2, 1.3).
    let args = [
        "scale",
        "search",
        "--base",
        &best,
        "--base-width",
        "0.25",
        "--alpha-range",
        "1,1.2",
        "--beta-range",
        "1",
        "--gamma-range",
        "1.2,1.4",
        "--step",
        "0.1",
        "--tolerance",
        "0.15",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--batch",
        batch,
        "--device",
        "cpu",
        "--data",
        &d,
        "--workers",
        "2",
        "--out",
        &run_s,
    ];
    let stdout = ok(&args);
    let report = ScalingReport::read(&run.join("scaling.json")).unwrap();
    let coefficients: Vec<(f64, f64, f64)> = report
        .candidates
        .iter()
        .map(|c| (c.alpha, c.beta, c.gamma))
        .collect();
    assert_eq!(
        coefficients,
        [(1.0, 1.0, 1.4), (1.1, 1.0, 1.3), (1.2, 1.0, 1.3)]
    );
    assert_eq!(report.base_resolution, 28);
    let resolutions: Vec<usize> = report.candidates.iter().map(|c| c.resolution).collect();
    assert_eq!(resolutions, [39, 36, 36]);
    let accs: Vec<f64> = report
        .candidates
        .iter()
        .map(|c| c.valid_acc.unwrap())
        .collect();
    let best_acc = accs.iter().cloned().fold(f64::MIN, f64::max);
    let first_best = accs.iter().position(|&a| a == best_acc).unwrap();
    let chosen = report.chosen.clone().unwrap();
    assert_eq!(
        chosen.trial,
        first_best + 1,
        "the best, the earliest on a tie"
    );
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["alpha"].as_f64(), Some(chosen.alpha));
    assert_eq!(printed["gamma"].as_f64(), Some(chosen.gamma));
    // --resume of a finished search re-runs nothing and gives the same candidates.
    let journal = std::fs::read(run.join("journal.jsonl")).unwrap();
    assert_eq!(attempts(&run), 3);
    let mut resume = args.to_vec();
    resume.push("--resume");
    ok(&resume);
    assert_eq!(attempts(&run), 3);
    assert_eq!(std::fs::read(run.join("journal.jsonl")).unwrap(), journal);
    assert_eq!(
        ScalingReport::read(&run.join("scaling.json")).unwrap(),
        report
    );
    // A new search over the finished one is refused; a resume with another grid too.
    refused(&args, "--resume");
    let mut other = resume.clone();
    other[15] = "0.2"; // another --tolerance
    refused(&other, "--resume");
    // Applied at phi = 1: the chosen candidate's network, trained end to end.
    let scaled = dir.join("scaled.json");
    let scaled_s = scaled.to_string_lossy().into_owned();
    let coeffs = run.join("scaling.json").to_string_lossy().into_owned();
    ok(&[
        "scale",
        "apply",
        "--coefficients",
        &coeffs,
        "--phi",
        "1",
        "--out",
        &scaled_s,
    ]);
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&scaled).unwrap()).unwrap();
    assert_eq!(net["resolution"].as_u64(), Some(chosen.resolution as u64));
    assert_eq!(net["width_mult"].as_f64(), Some(chosen.width_mult));
    assert_eq!(net["params"].as_u64(), Some(chosen.params as u64));
    refused(
        &[
            "scale",
            "apply",
            "--coefficients",
            &coeffs,
            "--phi",
            "1",
            "--out",
            &scaled_s,
        ],
        "--out",
    );
    let train = dir.join("train").to_string_lossy().into_owned();
    ok(&[
        "train",
        "--space",
        "mbconv",
        "--scaled",
        &scaled_s,
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--test-limit",
        "64",
        "--batch",
        batch,
        "--device",
        "cpu",
        "--data",
        &d,
        "--out",
        &train,
    ]);
    let config = std::fs::read_to_string(dir.join("train/config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["resolution"].as_u64(),
        Some(chosen.resolution as u64)
    );
    refused(
        &[
            "train", "--space", "mbconv", "--scaled", &scaled_s, "--arch", "b0",
        ],
        "--arch",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_and_files_are_refused() {
    let dir = tmp("bad");
    let d = data();
    let search = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "scale", "search", "--base", "b0", "--device", "cpu", "--data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(d.clone());
        v.push("--out".into());
        v.push(dir.join("never").to_string_lossy().into_owned());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let refuse = |extra: &[&str], what: &str| {
        let v = search(extra);
        refused(&v.iter().map(String::as_str).collect::<Vec<_>>(), what);
    };
    refuse(&["--tolerance", "0"], "--tolerance");
    refuse(&["--tolerance", "-0.1"], "--tolerance");
    refuse(&["--step", "0"], "--step");
    refuse(&["--alpha-range", "2,1"], "--alpha-range");
    refuse(&["--beta-range", "0.5,1"], "--beta-range");
    refuse(&["--gamma-range", "x"], "--gamma-range");
    // No grid point within the tolerance: an empty search.
    refuse(
        &[
            "--alpha-range",
            "1",
            "--beta-range",
            "1",
            "--gamma-range",
            "1",
            "--tolerance",
            "0.5",
        ],
        "--tolerance",
    );
    refuse(&["--epochs", "0"], "--epochs");
    refuse(&["--workers", "0"], "--workers");
    assert!(
        !dir.join("never").exists(),
        "a refused search writes nothing"
    );
    let nb201 = write(
        &dir,
        "nb201.json",
        r#"{"space": "nb201", "arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"}"#,
    );
    refused(&["scale", "search", "--base", &nb201], "nb201.json");
    refused(
        &[
            "scale",
            "apply",
            "--base",
            &nb201,
            "--alpha",
            "1.2",
            "--beta",
            "1.1",
            "--gamma",
            "1.15",
            "--phi",
            "1",
            "--base-resolution",
            "28",
        ],
        "nb201.json",
    );
    let missing = dir.join("nope.json").to_string_lossy().into_owned();
    refused(&["scale", "search", "--base", &missing], "nope.json");
    refused(
        &[
            "scale", "apply", "--base", &missing, "--alpha", "1.2", "--beta", "1.1", "--gamma",
            "1.15", "--phi", "1",
        ],
        "nope.json",
    );
    let garbage = write(&dir, "arch.txt", "e9k3l1\n");
    refused(&["scale", "search", "--base", &garbage], "arch.txt");
    fn apply<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "scale", "apply", "--base", "b0", "--alpha", "1.2", "--beta", "1.1",
        ];
        v.extend_from_slice(extra);
        v
    }
    refused(
        &apply(&["--gamma", "1.15", "--phi", "-1", "--base-resolution", "28"]),
        "--phi",
    );
    refused(
        &apply(&["--gamma", "1.15", "--phi", "1"]),
        "--base-resolution",
    );
    refused(
        &apply(&["--phi", "1", "--base-resolution", "28"]),
        "--gamma",
    );
    refused(
        &apply(&["--gamma", "0.9", "--phi", "1", "--base-resolution", "28"]),
        "--gamma",
    );
    refused(
        &apply(&["--gamma", "1.15", "--phi", "1", "--base-resolution", "0"]),
        "--resolution",
    );
    refused(
        &["scale", "apply", "--coefficients", &missing, "--phi", "1"],
        "nope.json",
    );
    // An arch string file is a base; printed without --out.
    let arch = write(
        &dir,
        "b0.txt",
        "e1k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se\n",
    );
    let out = ok(&[
        "scale",
        "apply",
        "--base",
        &arch,
        "--alpha",
        "1.2",
        "--beta",
        "1.1",
        "--gamma",
        "1.15",
        "--phi",
        "1",
        "--base-resolution",
        "224",
        "--classes",
        "1000",
        "--in-channels",
        "3",
    ]);
    let net: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(net["params"].as_u64(), Some(9_109_994));
    for side in ["0", "100000"] {
        refused(
            &[
                "train",
                "--space",
                "mbconv",
                "--arch",
                "b0",
                "--resolution",
                side,
                "--data",
                &d,
            ],
            "--resolution",
        );
    }
    assert!(nasrs(&["scale", "apply", "--alpha", "1"]).status.code() == Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
