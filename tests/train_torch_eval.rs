//! The evaluation network against PyTorch DARTS (fixtures by tools/check_eval_checkpoint.py):
//! - a PyTorch `state_dict` saved as safetensors (every primitive, trained BN statistics,
//!   I64 `num_batches_tracked`) loads through `load_network` with only the genotype given,
//!   and its eval-mode logits match PyTorch's (f32 and f64 backends);
//! - with the auxiliary head, a training-mode forward matches PyTorch's logits, auxiliary
//!   logits and updated BN running statistics (weights from a formula both sides compute).
//!
//! Tolerance: 1e-4 relative to the tensor's largest magnitude.

mod common;

use nasrs::autograd::Tape;
use nasrs::backend::{Backend, Element};
use nasrs::io::{load_safetensors, HostTensor};
use nasrs::nas::eval_model::{EvalConfig, EvalNetwork};
use nasrs::nas::evaluate::{eval_logits, load_network, save_network};
use nasrs::nas::{Genotype, Mode};
use nasrs::{Cpu, Rng, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn close(what: &str, got: &[f64], want: &[f32]) {
    common::assert_close_values(what, got, want, 1e-4);
}

fn io() -> (BTreeMap<String, HostTensor>, HashMap<String, String>) {
    load_safetensors(&fixture("eval_net.safetensors")).unwrap()
}

fn eval_case<B: Backend>(be: B) {
    let (t, meta) = io();
    let case: serde_json::Value = serde_json::from_str(&meta["eval"]).unwrap();
    let genotype: Genotype = serde_json::from_value(case["genotype"].clone()).unwrap();
    let path = fixture("eval_net_torch.safetensors");
    let (mut net, m) = load_network(&be, &path, Some(genotype.clone())).unwrap();
    // Everything but the genotype was read off the PyTorch weights.
    assert_eq!(
        m.model,
        EvalConfig {
            genotype,
            channels: 4,
            layers: 5,
            classes: 10,
            in_channels: 3,
            auxiliary: false
        }
    );
    assert_eq!(net.bn_batches, 3, "num_batches_tracked");
    let x = &t["eval.x"];
    let xs: Vec<B::Elem> = x
        .data
        .iter()
        .map(|&v| B::Elem::from_f64(v as f64))
        .collect();
    let images = Tensor::from_host(&be, &xs, x.shape.as_slice()).unwrap();
    let logits = eval_logits(&be, &mut net, &images).unwrap();
    close("eval logits", &logits, &t["eval.logits"].data);

    // Saved by nasrs and loaded back (now with metadata, no genotype needed): same logits,
    // and the file holds exactly PyTorch's state_dict names.
    // One folder per device and element type: the f32 and f64 cases run in parallel and
    // each removes its folder at the end.
    let dir = std::env::temp_dir().join(format!(
        "nasrs-torch-eval-{}-{}",
        std::process::id(),
        be.device_name().replace([' ', '(', ')', ','], "_")
    ));
    let saved = dir.join("net.safetensors");
    save_network(
        &be,
        &net,
        Some("synthetic"),
        &saved,
        BTreeMap::new(),
        HashMap::new(),
    )
    .unwrap();
    let (ours, _) = load_safetensors(&saved).unwrap();
    let (theirs, _) = load_safetensors(&path).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (k, v) in &theirs {
        assert_eq!(ours[k].shape, v.shape, "{k}");
    }
    let (mut back, m2) = load_network(&be, &saved, None).unwrap();
    assert_eq!(m2.dataset.as_deref(), Some("synthetic"));
    assert_eq!(back.bn_batches, 3);
    assert_eq!(eval_logits(&be, &mut back, &images).unwrap(), logits);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pytorch_state_dict_loads_and_eval_logits_match_f32() {
    eval_case(Cpu::new());
}

#[test]
fn pytorch_state_dict_loads_and_eval_logits_match_f64() {
    eval_case(Cpu::<f64>::with_element());
}

/// tools/check_eval_checkpoint.py `formula_value`.
fn formula_value(name: &str, shape: &[usize]) -> Vec<f64> {
    let numel: usize = shape.iter().product();
    let phase = 0.11 * (name.bytes().map(|b| b as u64).sum::<u64>() % 97) as f64;
    (0..numel)
        .map(|i| {
            let s = (0.37 * i as f64 + phase).sin();
            let v = if name.ends_with(".running_mean") {
                0.1 * s
            } else if name.ends_with(".running_var") {
                1.0 + 0.5 * s.abs()
            } else if shape.len() >= 2 {
                s / ((numel / shape[0]) as f64).sqrt()
            } else if name.ends_with(".weight") {
                1.0 + 0.2 * s
            } else {
                0.1 * s
            };
            v as f32 as f64
        })
        .collect()
}

#[test]
fn auxiliary_head_training_forward_matches_pytorch() {
    let (t, _) = io();
    let be: Cpu = Cpu::new();
    let config = EvalConfig {
        genotype: Genotype::builtin("DARTS_V1").unwrap(),
        channels: 4,
        layers: 3,
        classes: 10,
        in_channels: 3,
        auxiliary: true,
    };
    let mut net = EvalNetwork::new(&be, config, 0).unwrap();
    for store in [&mut net.weights, &mut net.buffers] {
        for id in store.ids().collect::<Vec<_>>() {
            let name = store.name(id).to_string();
            let shape = store.get(id).shape.clone();
            let v = formula_value(&name, shape.dims());
            store
                .set(id, Tensor::from_f64(&be, &v, shape).unwrap())
                .unwrap();
        }
    }
    let x = &t["aux_train.x"];
    let mut tape = Tape::new(be.clone());
    let xv = tape.constant(Tensor::from_host(&be, &x.data, x.shape.as_slice()).unwrap());
    let (logits, aux) = net
        .run(&mut tape, xv, Mode::WEIGHT_STEP, 0.0, &mut Rng::new(0))
        .unwrap();
    let aux = aux.expect("training mode with an auxiliary head returns auxiliary logits");
    close(
        "logits",
        &tape.value(logits).unwrap().to_f64(&be).unwrap(),
        &t["aux_train.logits"].data,
    );
    close(
        "auxiliary logits",
        &tape.value(aux).unwrap().to_f64(&be).unwrap(),
        &t["aux_train.logits_aux"].data,
    );
    assert_eq!(net.bn_batches, 1);
    let mut checked = 0;
    for id in net.buffers.ids() {
        let name = net.buffers.name(id);
        let want = &t[&format!("aux_train.{name}")];
        close(name, &net.buffers.get(id).to_f64(&be).unwrap(), &want.data);
        checked += 1;
    }
    let in_fixture = t
        .keys()
        .filter(|k| k.starts_with("aux_train.") && k.contains(".running_"))
        .count();
    assert_eq!(
        checked, in_fixture,
        "every BN of the PyTorch network, no more"
    );
    assert!(checked >= 38, "the auxiliary head's BNs are among them");
    // Eval mode gives no auxiliary logits.
    let mut tape = Tape::new(be.clone());
    let xv = tape.constant(Tensor::from_host(&be, &x.data, x.shape.as_slice()).unwrap());
    let (_, aux) = net
        .run(&mut tape, xv, Mode::EVAL, 0.2, &mut Rng::new(0))
        .unwrap();
    assert!(aux.is_none());
}
