//! Latency lookup tables (`nas::latency`, `nasrs latency`): a table built at a tiny scale has
//! one entry per piece the MBConv space produces there (every architecture's blocks found),
//! finite positive times, round-trips through its file, and predicts stem + blocks + head
//! exactly; a table of another scale is refused naming the signature it lacks. Through the
//! binary: build and check run and report finite errors; bad flags and an existing --out
//! are refused. Timings' magnitudes are not asserted (the machine is shared and noisy).

#[path = "common/cli.rs"]
mod cli;

use cli::{nasrs, ok, refused};
use nasrs::nas::latency::{
    arch_pieces, build_table, space_pieces, LatencyTable, PieceSpec, Protocol, Scale,
};
use nasrs::nas::space::mbconv::{MbConvArch, MbConvSpace};
use nasrs::nas::space::SearchSpace;
use nasrs::{Cpu, Rng};
use std::path::PathBuf;
use std::sync::OnceLock;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-latency-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny() -> Scale {
    Scale {
        batch: 2,
        size: 16,
        width_mult: 0.25,
        depth_mult: 1.0,
        in_channels: 1,
        classes: 10,
    }
}

/// The tiny table, built once for the library tests.
fn table() -> &'static LatencyTable {
    static TABLE: OnceLock<LatencyTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let proto = Protocol {
            warmup: 0,
            repeats: 2,
            flush_mib: 0,
        };
        build_table(&Cpu::new(), &tiny(), proto, 0, |_, _, _| {}).unwrap()
    })
}

#[test]
fn the_enumeration_counts_first_and_repeated_blocks() {
    // 7 stages x (first block + repeated block) x 3 kernels x 4 expansions x 2 SE = 336; at
    // width 0.25 stage 0's first block (stride 1, 8 -> 8 channels, after an 8-channel stem)
    // is its repeated block: 24 fewer. Plus the stem and the head.
    let pieces = space_pieces(&tiny()).unwrap();
    assert_eq!(pieces.len(), 336 - 24 + 2);
    let stems = pieces
        .iter()
        .filter(|p| matches!(p.spec, PieceSpec::Stem { .. }))
        .count();
    let heads = pieces
        .iter()
        .filter(|p| matches!(p.spec, PieceSpec::Head { .. }))
        .count();
    assert_eq!((stems, heads), (1, 1));
    // At depth 0.5 stages 0 and 6 (at most 2 layers -> 1) lose their repeated blocks, and
    // stage 0's first block no longer coincides with one.
    let half = Scale {
        depth_mult: 0.5,
        ..tiny()
    };
    assert_eq!(space_pieces(&half).unwrap().len(), 5 * 48 + 2 * 24 + 2);
}

#[test]
fn a_table_covers_every_architecture_and_predicts_the_sum() {
    let t = table();
    let pieces = space_pieces(&tiny()).unwrap();
    assert_eq!(t.blocks.len() + 2, pieces.len());
    let timings = t.blocks.values().chain([&t.stem.timing, &t.head.timing]);
    for timing in timings {
        for v in [
            timing.median_ms,
            timing.mean_ms,
            timing.p10_ms,
            timing.p90_ms,
        ] {
            assert!(v.is_finite() && v > 0.0, "{timing:?}");
        }
        assert!(timing.min_ms <= timing.median_ms && timing.median_ms <= timing.max_ms);
        assert_eq!(timing.runs, 2);
    }
    assert_eq!(t.scale, tiny());
    assert!(t.device.starts_with("cpu"));
    let space = MbConvSpace::default();
    let mut rng = Rng::new(7);
    let mut archs = vec![MbConvArch::b0()];
    archs.extend((0..50).map(|_| space.sample(&mut rng)));
    for arch in &archs {
        let p = t.predict(arch).unwrap();
        let mut sum = 0.0;
        for piece in arch_pieces(&tiny(), arch).unwrap() {
            sum += match piece.spec {
                PieceSpec::Stem { .. } => t.stem.timing.median_ms,
                PieceSpec::Head { .. } => t.head.timing.median_ms,
                PieceSpec::Block(_) => t.blocks[&piece.key].median_ms,
            };
        }
        assert_eq!(p.total_ms, p.stem_ms + p.blocks_ms + p.head_ms);
        assert!(
            (p.total_ms - sum).abs() <= 1e-12 * sum,
            "{} vs {sum}",
            p.total_ms
        );
        assert_eq!(p.stem_ms, t.stem.timing.median_ms);
        assert_eq!(p.head_ms, t.head.timing.median_ms);
    }
    // B0 at depth 1: 16 blocks.
    assert_eq!(t.predict(&MbConvArch::b0()).unwrap().blocks, 16);
}

#[test]
fn a_table_round_trips_and_refuses_another_scale() {
    let t = table();
    let path = tmp("round-trip").join("table.json");
    t.save(&path).unwrap();
    assert_eq!(&LatencyTable::load(&path).unwrap(), t);
    let bigger = Scale { size: 32, ..tiny() };
    let err = t
        .predict_at(&MbConvArch::b0(), &bigger)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no entry for `stem in1 out8 @ [1,32,32]`"),
        "{err}"
    );
    let wider = Scale {
        width_mult: 0.5,
        ..tiny()
    };
    let err = t
        .predict_at(&MbConvArch::b0(), &wider)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no entry for `stem in1 out16"), "{err}");
    let batch = Scale { batch: 4, ..tiny() };
    let err = t
        .predict_at(&MbConvArch::b0(), &batch)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--batch"), "{err}");
    // A block missing from a damaged table is named.
    let mut damaged = t.clone();
    let b0_pieces = arch_pieces(&tiny(), &MbConvArch::b0()).unwrap();
    let key = b0_pieces[3].key.clone();
    damaged.blocks.remove(&key);
    let err = damaged.predict(&MbConvArch::b0()).unwrap_err().to_string();
    assert!(err.contains(&key), "{err}");
    // Not a table, or another version.
    std::fs::write(&path, "{\"format\": \"other\"}").unwrap();
    let err = LatencyTable::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a latency table"), "{err}");
}

const TINY: &[&str] = &[
    "--space",
    "mbconv",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--batch",
    "2",
    "--size",
    "16",
    "--width-mult",
    "0.25",
    "--in-channels",
    "1",
    "--classes",
    "10",
    "--warmup",
    "1",
    "--repeats",
    "2",
];

/// `latency build` at the tiny scale into `out`, with `extra` flags replacing or adding
/// to [`TINY`]'s (clap refuses a flag given twice).
fn build_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["latency", "build", "--out", out];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    args
}

#[test]
fn the_cli_builds_and_checks_a_table() {
    let dir = tmp("cli");
    let table = dir.join("table.json");
    let table = table.to_str().unwrap();
    let text = ok(&build_args(table, &[]));
    assert!(text.contains("312 blocks + stem + head"), "{text}");
    let t = LatencyTable::load(std::path::Path::new(table)).unwrap();
    assert_eq!(t.blocks.len(), 312);
    assert_eq!((t.warmup, t.repeats), (1, 2));
    assert!(t.device.starts_with("cpu (1 threads"), "{}", t.device);

    let report = dir.join("report.json");
    let report = report.to_str().unwrap();
    let check = [
        "latency",
        "check",
        "--table",
        table,
        "--samples",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        report,
    ];
    let text = ok(&check);
    assert_eq!(
        text.lines().filter(|l| l.contains('%')).count(),
        4,
        "{text}"
    );
    assert!(text.contains("3 networks, mean |relative error|"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let (p, m, e) = (
            row["predicted_ms"].as_f64().unwrap(),
            row["measured"]["median_ms"].as_f64().unwrap(),
            row["relative_error"].as_f64().unwrap(),
        );
        assert!(p > 0.0 && m > 0.0 && e.is_finite());
        assert!((e - (p - m) / m).abs() < 1e-12);
    }
    for key in ["mean_abs_relative_error", "worst_abs_relative_error"] {
        assert!(json[key].as_f64().unwrap().is_finite(), "{key}");
    }
    // --json prints the same report.
    let mut with_json = check[..8].to_vec();
    with_json.extend(["--threads", "1", "--json"]);
    let printed: serde_json::Value = serde_json::from_str(&ok(&with_json)).unwrap();
    assert_eq!(printed["rows"].as_array().unwrap().len(), 3);

    // Refusals: the existing report and table untouched without --force.
    let before = std::fs::read(table).unwrap();
    refused(&build_args(table, &[]), "--out");
    assert_eq!(std::fs::read(table).unwrap(), before);
    let before = std::fs::read(report).unwrap();
    refused(&check, "--out");
    assert_eq!(std::fs::read(report).unwrap(), before);
    // Another image size or width than the table's: the missing signature is named.
    let mut other = check[..8].to_vec();
    other.extend(["--threads", "1", "--size", "32"]);
    refused(&other, "no entry for `stem in1 out8 @ [1,32,32]`");
    let mut other = check[..8].to_vec();
    other.extend(["--threads", "1", "--width-mult", "0.5"]);
    refused(&other, "no entry for `stem");
    let mut other = check[..8].to_vec();
    other.extend(["--threads", "1", "--batch", "3"]);
    refused(&other, "--batch");
    // Another thread count than the table's.
    let mut other = check[..8].to_vec();
    other.extend(["--threads", "2"]);
    refused(&other, "--device");
    let mut other = check[..8].to_vec();
    other.extend(["--threads", "1", "--samples", "0"]);
    refused(&other, "--samples");
    // Not a table.
    refused(
        &["latency", "check", "--table", report, "--device", "cpu"],
        "not a latency table",
    );
    // --force replaces it.
    ok(&build_args(
        table,
        &["--force", "--repeats", "1", "--flush-mib", "1"],
    ));
    let t = LatencyTable::load(std::path::Path::new(table)).unwrap();
    assert_eq!((t.repeats, t.flush_mib), (1, 1));
    assert_eq!(t.blocks.len(), 312);
}

#[test]
fn the_cli_refuses_bad_flags_before_measuring() {
    let dir = tmp("bad");
    let out = dir.join("t.json");
    let out = out.to_str().unwrap();
    for (flag, value) in [
        ("--size", "0"),
        ("--batch", "0"),
        ("--repeats", "0"),
        ("--width-mult", "0"),
        ("--depth-mult", "0"),
        ("--classes", "0"),
        ("--threads", "0"),
        ("--flush-mib", "100000"),
    ] {
        refused(&build_args(out, &[flag, value]), flag);
    }
    refused(&build_args(out, &["--space", "nb201"]), "--space");
    refused(&build_args(out, &["--depth-mult", "nan"]), "--depth-mult");
    refused(&build_args(out, &["--device", "tpu"]), "tpu");
    assert!(!std::path::Path::new(out).exists());
    // A missing table.
    let out = nasrs(&["latency", "check", "--table", "/nonexistent/t.json"]);
    assert_eq!(out.status.code(), Some(2));
}
