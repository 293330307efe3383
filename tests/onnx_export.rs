//! `nasrs export onnx` end to end through the binary: networks trained for a short run on the
//! bundled MNIST subset (DARTS_V2's evaluation network; NB201 cells whose nodes only `none`
//! edges reach) and the PyTorch DARTS fixture (every primitive, PyTorch's own logits) are
//! exported, read back here (inputs, outputs, metadata, operators), then checked by the real
//! consumers: `tools/check_onnx.py` runs `onnx.checker.check_model` and ONNX Runtime, whose
//! logits must be within 1e-4 of `nasrs eval --logits`'s on the same images. And what
//! export refuses: an existing --out without --force (left byte for byte), a damaged or
//! foreign checkpoint (nothing written), bad --batch, --opset and --image-size values.
//!
//! The Python checks need `onnx`, `onnxruntime` and `numpy`: the interpreter is
//! `$NASRS_ONNX_PYTHON`, else `.onnx-venv/bin/python` in the crate, else `python3`. With
//! `NASRS_ONNX_TESTS=1` (CI, `.ci/run`) a missing package fails the test; without it the
//! Python part is skipped, saying why, and the Rust-side checks still run.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/onnx.rs"]
mod onnx;

use cli::{data, ok, refused};
use nasrs::nas::onnx::proto::ModelProto;
use onnx::{check_with_onnx_runtime, eval_logits, manifest, python, s};
use prost::Message;
use std::path::{Path, PathBuf};

const ARCH_ZERO_NODE: &str =
    "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|";
const ARCH_ALL_NONE: &str = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-onnx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A short training run on 64 bundled MNIST images (`extra` picks the network).
fn train(out: &Path, extra: &[&str]) -> PathBuf {
    let data = data();
    let args = [
        "train",
        "--data",
        &data,
        "--dataset",
        "mnist",
        "--epochs",
        "1",
        "--batch",
        "16",
        "--channels",
        "4",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
        "--device",
        "cpu",
        "--out",
        s(out),
    ];
    ok(&[&args[..], extra].concat());
    out.join("model.safetensors")
}

/// The model file, decoded, with the inputs, outputs and metadata every export has.
fn inspect(path: &Path, batch: &str, image: [i64; 3], classes: i64) -> ModelProto {
    use nasrs::nas::onnx::proto::tensor_shape_proto::dimension::Value;
    let model = ModelProto::decode(&*std::fs::read(path).unwrap()).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let dims = |v: &nasrs::nas::onnx::proto::ValueInfoProto| -> Vec<String> {
        let Some(nasrs::nas::onnx::proto::type_proto::Value::TensorType(t)) =
            &v.r#type.as_ref().unwrap().value
        else {
            panic!("not a tensor")
        };
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                Value::DimValue(n) => n.to_string(),
                Value::DimParam(p) => p.clone(),
            })
            .collect()
    };
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.output.len(), 1);
    assert_eq!(graph.input[0].name.as_deref(), Some("images"));
    assert_eq!(graph.output[0].name.as_deref(), Some("logits"));
    let [c, h, w] = image.map(|v| v.to_string());
    assert_eq!(dims(&graph.input[0]), [batch.to_string(), c, h, w]);
    assert_eq!(
        dims(&graph.output[0]),
        [batch.to_string(), classes.to_string()]
    );
    let keys: Vec<&str> = model.metadata_props.iter().map(|p| p.key()).collect();
    for k in ["nasrs.version", "nasrs.network", "nasrs.model"] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert!(keys.contains(&"nasrs.genotype") || keys.contains(&"nasrs.arch"));
    // Eval mode: no auxiliary head, no training-only op.
    assert!(graph
        .initializer
        .iter()
        .all(|t| !t.name().starts_with("auxiliary")));
    const OPS: &[&str] = &[
        "Conv",
        "BatchNormalization",
        "Relu",
        "MaxPool",
        "AveragePool",
        "Add",
        "Sum",
        "Concat",
        "Slice",
        "Shape",
        "ConstantOfShape",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
    ];
    for n in &graph.node {
        assert!(OPS.contains(&n.op_type()), "unexpected op {}", n.op_type());
    }
    model
}

#[test]
fn darts_v2_trained_on_the_bundled_data_matches_onnx_runtime() {
    let dir = tmp("darts");
    let model = train(
        &dir.join("run"),
        &["--genotype", "DARTS_V2", "--layers", "3"],
    );
    let logits = dir.join("logits.safetensors");
    eval_logits(&model, &logits);
    let py = python();
    // A symbolic batch at the default opset, a fixed batch at the lowest and highest opsets.
    for (batch, opset) in [("dynamic", "17"), ("1", "13"), ("8", "21")] {
        let out = dir.join(format!("b{batch}-o{opset}.onnx"));
        let printed = ok(&[
            "export",
            "onnx",
            "--checkpoint",
            s(&model),
            "--out",
            s(&out),
            "--batch",
            batch,
            "--opset",
            opset,
        ]);
        assert!(printed.contains("images float32") && printed.contains("logits float32"));
        let shown = if batch == "dynamic" { "batch" } else { batch };
        let m = inspect(&out, shown, [1, 28, 28], 10);
        assert_eq!(m.opset_import[0].version(), opset.parse::<i64>().unwrap());
        let meta = |k: &str| {
            m.metadata_props
                .iter()
                .find(|p| p.key() == k)
                .unwrap()
                .value()
        };
        assert_eq!(meta("nasrs.network"), "darts-eval");
        assert_eq!(meta("nasrs.dataset"), "mnist");
        assert_eq!(meta("nasrs.version"), env!("CARGO_PKG_VERSION"));
        let g: nasrs::nas::Genotype = serde_json::from_str(meta("nasrs.genotype")).unwrap();
        assert_eq!(g, nasrs::nas::Genotype::builtin("DARTS_V2").unwrap());
        if let Some(py) = &py {
            let r = check_with_onnx_runtime(py, &out, &logits);
            assert!(r["max_abs_diff"].as_f64().unwrap() <= 1e-4);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nb201_networks_with_zero_nodes_match_onnx_runtime() {
    let py = python();
    for (name, arch) in [("zero-node", ARCH_ZERO_NODE), ("all-none", ARCH_ALL_NONE)] {
        let dir = tmp(name);
        let model = train(
            &dir.join("run"),
            &["--space", "nb201", "--arch", arch, "--layers", "1"],
        );
        let logits = dir.join("logits.safetensors");
        eval_logits(&model, &logits);
        let out = dir.join("model.onnx");
        ok(&[
            "export",
            "onnx",
            "--checkpoint",
            s(&model),
            "--out",
            s(&out),
            "--batch",
            "4",
        ]);
        let m = inspect(&out, "4", [1, 28, 28], 10);
        let arch_meta = m
            .metadata_props
            .iter()
            .find(|p| p.key() == "nasrs.arch")
            .unwrap();
        assert_eq!(arch_meta.value(), arch);
        if let Some(py) = &py {
            check_with_onnx_runtime(py, &out, &logits);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The PyTorch DARTS fixture (no nasrs metadata; every primitive, stride-2 skips included;
/// BN statistics after three training forwards) against PyTorch's own eval-mode logits.
#[test]
fn a_pytorch_state_dict_exports_and_matches_pytorch_logits() {
    use nasrs::io::{load_safetensors, save_safetensors, HostTensor};
    let fixtures = manifest().join("tests/fixtures");
    let (t, meta) = load_safetensors(&fixtures.join("eval_net.safetensors")).unwrap();
    let case: serde_json::Value = serde_json::from_str(&meta["eval"]).unwrap();
    let dir = tmp("torch");
    let genotype = dir.join("genotype.json");
    std::fs::write(&genotype, case["genotype"].to_string()).unwrap();
    let checkpoint = fixtures.join("eval_net_torch.safetensors");
    let out = dir.join("model.onnx");
    let base = [
        "export",
        "onnx",
        "--checkpoint",
        s(&checkpoint),
        "--out",
        s(&out),
    ];
    // The genotype cannot be read off the weights, nor the image size off a bare state_dict.
    refused(&[&base[..], &["--image-size", "16"]].concat(), "--genotype");
    refused(
        &[&base[..], &["--genotype", s(&genotype)]].concat(),
        "--image-size",
    );
    assert!(!out.exists());
    let args = [
        "--genotype",
        s(&genotype),
        "--image-size",
        "16",
        "--batch",
        "dynamic",
    ];
    ok(&[&base[..], &args].concat());
    inspect(&out, "batch", [3, 16, 16], 10);
    let pairs = [("images", "eval.x"), ("logits", "eval.logits")];
    let reference: std::collections::BTreeMap<String, HostTensor> = pairs
        .iter()
        .map(|(to, from)| (to.to_string(), t[*from].clone()))
        .collect();
    let logits = dir.join("pytorch-logits.safetensors");
    save_safetensors(&logits, &reference, Default::default()).unwrap();
    if let Some(py) = python() {
        check_with_onnx_runtime(&py, &out, &logits);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_refuses_what_it_cannot_write_or_read_and_leaves_files_alone() {
    let dir = tmp("refusals");
    let model = train(
        &dir.join("run"),
        &["--genotype", "DARTS_V2", "--layers", "3"],
    );
    let out = dir.join("model.onnx");
    let base = [
        "export",
        "onnx",
        "--checkpoint",
        s(&model),
        "--out",
        s(&out),
    ];
    // An existing file is kept byte for byte without --force, replaced with it.
    std::fs::write(&out, b"not mine to overwrite").unwrap();
    refused(&base, "--force");
    assert_eq!(std::fs::read(&out).unwrap(), b"not mine to overwrite");
    ok(&[&base[..], &["--force"]].concat());
    inspect(&out, "1", [1, 28, 28], 10);
    // Never over the checkpoint itself, even with --force.
    let over_input = [
        "export",
        "onnx",
        "--checkpoint",
        s(&model),
        "--out",
        s(&model),
        "--force",
    ];
    refused(&over_input, "--out");
    // Bad values name their flag; nothing is written.
    let fresh = dir.join("fresh.onnx");
    let with = |flag: &str, v: &str| -> Vec<String> {
        [
            "export",
            "onnx",
            "--checkpoint",
            s(&model),
            "--out",
            s(&fresh),
            flag,
            v,
        ]
        .map(String::from)
        .to_vec()
    };
    for (flag, v) in [
        ("--batch", "0"),
        ("--batch", "many"),
        ("--opset", "12"),
        ("--opset", "22"),
        ("--image-size", "0"),
        ("--image-size", "28x"),
        // The reduction cells need even sides.
        ("--image-size", "27"),
    ] {
        let args = with(flag, v);
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
        assert!(!fresh.exists(), "{flag} {v} wrote {}", fresh.display());
    }
    // A damaged checkpoint, a missing one and a search checkpoint: errors naming the file.
    let damaged = dir.join("damaged.safetensors");
    std::fs::write(
        &damaged,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    )
    .unwrap();
    let missing = dir.join("missing.safetensors");
    let data = data();
    let search = dir.join("search");
    ok(&[
        "search",
        "darts",
        "--data",
        &data,
        "--dataset",
        "mnist",
        "--epochs",
        "1",
        "--train-limit",
        "32",
        "--batch",
        "16",
        "--channels",
        "2",
        "--layers",
        "3",
        "--device",
        "cpu",
        "--out",
        s(&search),
    ]);
    let supernet = search.join("checkpoint.safetensors");
    refused(
        &[
            "export",
            "onnx",
            "--checkpoint",
            s(&supernet),
            "--out",
            s(&fresh),
        ],
        "search checkpoint",
    );
    assert!(!fresh.exists());
    for bad in [&damaged, &missing] {
        refused(
            &["export", "onnx", "--checkpoint", s(bad), "--out", s(&fresh)],
            s(bad),
        );
        assert!(!fresh.exists());
    }
    // No temp file is left beside the output either.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The library API without files: DARTS_V2 at the paper's C=36, L=20 on 32x32 CIFAR images,
/// its graph holding every weight the paper counts plus the BN statistics, nothing more.
#[test]
fn the_library_exports_a_network_in_memory() {
    use nasrs::nas::eval_model::{EvalConfig, EvalNetwork};
    use nasrs::nas::onnx::{export, BatchDim, ExportOptions};
    let cpu = nasrs::Cpu::new();
    let cfg = EvalConfig {
        genotype: nasrs::nas::Genotype::builtin("DARTS_V2").unwrap(),
        channels: 36,
        layers: 20,
        classes: 10,
        in_channels: 3,
        auxiliary: true,
    };
    let net = EvalNetwork::new(&cpu, cfg, 0).unwrap();
    let opts = ExportOptions {
        batch: BatchDim::Dynamic,
        ..ExportOptions::default()
    };
    let e = export(&cpu, &net, Some("cifar10"), &opts, "in memory").unwrap();
    assert_eq!(e.input_shape, ["batch", "3", "32", "32"]);
    assert_eq!(e.output_shape, ["batch", "10"]);
    let stats: usize = net.buffers.shapes().map(|(_, s)| s.numel()).sum();
    let aux_stats: usize = net
        .buffers
        .shapes()
        .filter(|(n, _)| n.starts_with("auxiliary"))
        .map(|(_, s)| s.numel())
        .sum();
    assert_eq!(e.elements, net.num_weights() + stats - aux_stats);
    let input = e
        .model
        .metadata_props
        .iter()
        .find(|p| p.key() == "nasrs.input")
        .unwrap();
    assert!(input.value().contains("0.4913"), "{}", input.value());
    // The auxiliary head (trained at 32x32 only) is not exported, so it limits no size.
    let larger = ExportOptions {
        image_size: Some((64, 64)),
        ..ExportOptions::default()
    };
    let e = export(&cpu, &net, Some("cifar10"), &larger, "in memory").unwrap();
    assert_eq!(e.input_shape, ["1", "3", "64", "64"]);
    // The options are checked by the library too, naming the flag.
    let bad = ExportOptions {
        opset: 9,
        ..ExportOptions::default()
    };
    let err = export(&cpu, &net, Some("cifar10"), &bad, "in memory")
        .err()
        .unwrap();
    assert!(err.to_string().contains("--opset"), "{err}");
}

/// `nasrs bench eval`: the forward `nasrs eval` runs, timed (the figure BENCHMARKS.md sets
/// beside ONNX Runtime's latency of the exported model).
#[test]
fn bench_eval_times_a_trained_networks_forward() {
    let dir = tmp("bench");
    let model = train(
        &dir.join("run"),
        &["--genotype", "DARTS_V2", "--layers", "3"],
    );
    let out = ok(&[
        "bench",
        "eval",
        "--checkpoint",
        s(&model),
        "--device",
        "cpu",
        "--batch",
        "2",
        "--size",
        "28",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["forward_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["samples"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
