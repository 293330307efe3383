//! `nasrs model`: the parameter counts of every network kind through the binary (the eval
//! network's against the DARTS paper's 3.3M for DARTS_V2 at C=36, L=20, the NB201 network's
//! against the NB201 table).

use std::process::Command;

fn model(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .arg("model")
        .args(args)
        .arg("--json")
        .output()
        .expect("run nasrs");
    assert!(
        out.status.success(),
        "nasrs model {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn eval_network_counts_match_darts() {
    let v = model(&["--kind", "eval", "--genotype", "DARTS_V2"]);
    assert_eq!(v["weights"], 3_349_342);
    assert_eq!(v["channels"], 36);
    assert_eq!(v["layers"], 20);
    // The auxiliary head is counted apart, as the paper leaves it out.
    let aux = model(&["--kind", "eval", "--genotype", "DARTS_V2", "--auxiliary"]);
    assert_eq!(aux["weights"], 3_349_342);
    assert!(aux["weights_with_auxiliary"].as_u64() > Some(3_349_342));
    let modules = v["modules"].as_array().expect("modules");
    let sum: u64 = modules
        .iter()
        .map(|m| m["weights"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, 3_349_342);
    assert_eq!(modules.len(), 22, "stem, 20 cells, classifier");
    assert!(v["forward_flops"].as_u64() > Some(0));
    // FLOPs per module: every module computes, and they add up to the forward's.
    let flops: Vec<u64> = modules
        .iter()
        .map(|m| m["forward_flops"].as_u64().unwrap_or(0))
        .collect();
    assert!(flops.iter().all(|&f| f > 0), "{flops:?}");
    assert_eq!(Some(flops.iter().sum::<u64>()), v["forward_flops"].as_u64());
}

#[test]
fn search_network_counts_are_unchanged() {
    let v = model(&["--kind", "search", "--channels", "16", "--layers", "8"]);
    assert_eq!(v["weights"], 1_930_618);
    assert_eq!(v["arch_parameters"], 224);
}

#[test]
fn nb201_network_counts_match_the_table() {
    let skip = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|";
    let v = model(&["--kind", "nb201", "--arch", skip]);
    assert_eq!(v["weights"], 73_306, "NB201's params_m 0.073306");
    assert_eq!(v["channels"], 16);
    assert_eq!(v["layers"], 5);
    assert_eq!(v["arch"], skip);
    let modules = v["modules"].as_array().expect("modules");
    // stem, the two residual blocks (skip cells hold no weights), lastact, classifier.
    let names: Vec<&str> = modules
        .iter()
        .filter_map(|m| m["module"].as_str())
        .collect();
    assert_eq!(
        names,
        ["stem", "cells.5", "cells.11", "lastact", "classifier"]
    );
    // 2 FLOPs per multiply-add, the fused ReLUs counted: above NB201's 7.78305 M MACs x 2.
    assert!(v["forward_flops"].as_u64() > Some(2 * 7_783_050));
    let best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    assert_eq!(
        model(&["--kind", "nb201", "--arch", best])["weights"],
        1_288_506
    );
}

#[test]
fn absurd_model_sizes_are_refused() {
    let arch = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|";
    for args in [
        &["--kind", "search", "--channels", "18446744073709551615"][..],
        &["--kind", "eval", "--layers", "18446744073709551615"],
        &[
            "--kind",
            "nb201",
            "--arch",
            arch,
            "--channels",
            "18446744073709551615",
        ],
        &[
            "--kind",
            "nb201",
            "--arch",
            arch,
            "--layers",
            "18446744073709551615",
        ],
        &["--kind", "nb201", "--arch", arch, "--channels", "100000000"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nasrs"))
            .arg("model")
            .args(args)
            .output()
            .expect("run nasrs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{err}"
        );
    }
}
