//! ONNX export of the MBConv network: an EfficientNet-B0-shaped architecture at width 0.25
//! (SE on every block, expansion 1 and 6, kernels 3 and 5) and a searched-space one without
//! SE and with kernel 7, each trained one short epoch on the bundled MNIST subset, exported,
//! structurally checked (input, output, metadata, batch-norm epsilon 1e-3), and under
//! `NASRS_ONNX_TESTS=1` checked by onnx's checker and ONNX Runtime against `nasrs eval`'s
//! logits (1e-4).

#[path = "common/cli.rs"]
mod cli;
#[path = "common/onnx.rs"]
mod onnx;

use cli::{data, ok};
use nasrs::nas::onnx::proto::ModelProto;
use onnx::{check_with_onnx_runtime, eval_logits, python, s};
use prost::Message;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-onnx-mbconv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn mbconv_networks_trained_on_the_bundled_data_match_onnx_runtime() {
    let dir = tmp("run");
    let py = python();
    for (name, arch) in [
        ("b0", "b0"),
        ("k7", "e1k7l1-e3k7l1-e6k3l2se-e4k7l2-e6k5l3-e3k7l3se-e1k5l2"),
    ] {
        let run = dir.join(name);
        let data = data();
        ok(&[
            "train",
            "--space",
            "mbconv",
            "--arch",
            arch,
            "--width-mult",
            "0.25",
            "--data",
            &data,
            "--dataset",
            "mnist",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--train-limit",
            "64",
            "--test-limit",
            "32",
            "--device",
            "cpu",
            "--out",
            s(&run),
        ]);
        let model = run.join("model.safetensors");
        let logits = dir.join(format!("{name}-logits.safetensors"));
        eval_logits(&model, &logits);
        let out = dir.join(format!("{name}.onnx"));
        let printed = ok(&[
            "export",
            "onnx",
            "--checkpoint",
            s(&model),
            "--out",
            s(&out),
            "--batch",
            "dynamic",
        ]);
        assert!(printed.contains("images float32"), "{printed}");
        let m = ModelProto::decode(&*std::fs::read(&out).unwrap()).unwrap();
        let meta = |k: &str| {
            m.metadata_props
                .iter()
                .find(|p| p.key() == k)
                .map(|p| p.value().to_string())
        };
        assert_eq!(meta("nasrs.network").as_deref(), Some("mbconv"));
        assert!(meta("nasrs.arch").is_some_and(|a| !a.is_empty()));
        let graph = m.graph.as_ref().unwrap();
        let bns: Vec<_> = graph
            .node
            .iter()
            .filter(|n| n.op_type() == "BatchNormalization")
            .collect();
        assert!(!bns.is_empty());
        for n in bns {
            assert_eq!(n.attribute[0].f(), 1e-3, "{}", n.name());
        }
        let has = |op: &str| graph.node.iter().any(|n| n.op_type() == op);
        assert!(has("Sigmoid") && has("Mul") && has("GlobalAveragePool"));
        if let Some(py) = &py {
            let r = check_with_onnx_runtime(py, &out, &logits);
            assert!(r["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{r}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
