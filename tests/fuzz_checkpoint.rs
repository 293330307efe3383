//! Hostile safetensors checkpoints never panic `load_safetensors` or `load_network`: a saved
//! evaluation network, mutated (header length, JSON structure and text, the nasrs model
//! record, tensor dtypes, shapes, offsets and names, the metadata, NaN/Inf data, the data
//! length), must load or give an error naming the file, and a network that loads must run;
//! metadata that describes another network is a bad file found before the network is built.
//! The harness, the allocation cap and the mutations are shared (common/fuzz.rs,
//! common/mutate.rs).

mod common;

use common::fuzz::{
    install_panic_hook, no_exception, panic_text, set_case_label, small_config, CappedAlloc, Fuzz,
    TempDir,
};
use common::mutate::{
    hostile_value, mutate_bytes, mutate_json, mutate_json_text, pick, U64_EXTREMES,
};
use nasrs::io::load_safetensors;
use nasrs::nas::eval_model::EvalNetwork;
use nasrs::nas::evaluate::{eval_logits, load_network, save_network};
use nasrs::nas::genotype::Genotype;
use nasrs::{Cpu, Error, Rng, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};

// The allocation cap (common/fuzz.rs): a size taken from a header unchecked aborts the run.
#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Splits a safetensors file into its header JSON object and its data, if it still has them.
fn split_safetensors(b: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let end = n.checked_add(8).filter(|&e| e <= b.len())?;
    let header: Value = serde_json::from_slice(&b[8..end]).ok()?;
    header.is_object().then(|| (header, b[end..].to_vec()))
}

fn join_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(data);
    b
}

/// The names of the tensors a safetensors header lists.
fn tensor_names(header: &Value) -> Vec<String> {
    header
        .as_object()
        .map(|m| m.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default()
}

/// A mutation of a checkpoint's header (JSON structure, text or length prefix) or its data.
/// Falls back to a byte mutation when an earlier one left nothing to mutate structurally.
fn mutate_checkpoint(rng: &mut Rng, file: &mut Vec<u8>) -> String {
    let Some((mut header, mut data)) = split_safetensors(file) else {
        return format!("bytes: {}", mutate_bytes(rng, file));
    };
    let names = tensor_names(&header);
    let what = match rng.below(12) {
        0..=2 => None,
        3 => {
            let v = pick(rng, &U64_EXTREMES);
            file[..8].copy_from_slice(&v.to_le_bytes());
            return format!("header length {v}");
        }
        4 => {
            // The nasrs model record, a JSON string inside the metadata: any field, or one of
            // the sizes of the network (channels, layers, ...) set to an extreme.
            let meta = header["__metadata__"]["nasrs.model"].as_str();
            match meta.and_then(|m| serde_json::from_str::<Value>(m).ok()) {
                Some(mut model) if header["__metadata__"].is_object() => {
                    let mut path = "nasrs.model".to_string();
                    let sizes = ["channels", "layers", "classes", "in_channels"];
                    match model.get_mut("model").and_then(Value::as_object_mut) {
                        Some(config) if rng.bernoulli(0.4) => {
                            let k = pick(rng, &sizes);
                            let v = if rng.bernoulli(0.3) {
                                rng.below(6) as u64
                            } else {
                                pick(rng, &U64_EXTREMES)
                            };
                            config.insert(k.to_string(), json!(v));
                            path.push_str(&format!(".model.{k} = {v}"));
                        }
                        _ => mutate_json(rng, &mut model, &mut path),
                    }
                    header["__metadata__"]["nasrs.model"] = Value::String(model.to_string());
                    Some(path)
                }
                _ => None,
            }
        }
        5 => {
            let mut path = "header".to_string();
            mutate_json(rng, &mut header, &mut path);
            Some(path)
        }
        6 if !names.is_empty() => {
            // One tensor's dtype, shape or offsets.
            let name = pick(rng, &names);
            let t = &mut header[&name];
            match rng.below(3) {
                _ if !t.is_object() => None,
                0 => {
                    let d = pick(
                        rng,
                        &[
                            "F16", "BF16", "I8", "U8", "BOOL", "I32", "F64", "I64", "F8_E4M3",
                            "F4", "XYZ", "",
                        ],
                    );
                    t["dtype"] = json!(d);
                    Some(format!("{name} dtype {d}"))
                }
                1 => {
                    let shape: Value = match rng.below(4) {
                        0 => json!([]),
                        1 => json!([0]),
                        2 => json!([pick(rng, &U64_EXTREMES), pick(rng, &U64_EXTREMES)]),
                        _ => {
                            let mut s = t["shape"].clone();
                            if let Some(a) = s.as_array_mut().filter(|a| !a.is_empty()) {
                                let i = rng.below(a.len());
                                a[i] = json!(pick(rng, &U64_EXTREMES));
                            }
                            s
                        }
                    };
                    t["shape"] = shape.clone();
                    Some(format!("{name} shape {shape}"))
                }
                _ => {
                    let o = &t["data_offsets"];
                    let (s, e) = (o[0].as_u64().unwrap_or(0), o[1].as_u64().unwrap_or(0));
                    let x = pick(rng, &U64_EXTREMES);
                    let offsets = pick(rng, &[[s, x], [x, e], [e, s], [x, x]]);
                    t["data_offsets"] = json!(offsets);
                    Some(format!("{name} data_offsets {offsets:?}"))
                }
            }
        }
        7 if !names.is_empty() => {
            // A tensor renamed: to "", to a name the network lacks, or dropped.
            let name = pick(rng, &names);
            let m = header.as_object_mut().unwrap();
            let t = m.remove(&name).unwrap();
            let to = pick(
                rng,
                &["", "cells.999.x", "optimizer.momentum_buffer.x", "dropped"],
            );
            if to != "dropped" {
                m.insert(to.to_string(), t);
            }
            Some(format!("{name} renamed {to:?}"))
        }
        8 => {
            // The metadata: dropped (a bare state_dict), or the wrong shape.
            let m = header.as_object_mut().unwrap();
            match rng.below(3) {
                0 => {
                    m.remove("__metadata__");
                    Some("no metadata".into())
                }
                1 => {
                    let v = hostile_value(rng);
                    let what = format!("metadata = {v}");
                    m.insert("__metadata__".into(), v);
                    Some(what)
                }
                _ => match m.get_mut("__metadata__").and_then(Value::as_object_mut) {
                    Some(meta) => {
                        meta.insert("nasrs.model".into(), hostile_value(rng));
                        Some("nasrs.model not a string".into())
                    }
                    None => None,
                },
            }
        }
        9 if data.len() >= 4 => {
            // Data set to NaN / Infinity / huge floats at random weights.
            let k = 1 + rng.below(32);
            for _ in 0..k {
                let at = rng.below(data.len() / 4) * 4;
                let v = pick(
                    rng,
                    &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -0.0],
                );
                data[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            Some(format!("{k} floats set to NaN/Inf/MAX"))
        }
        10 => {
            // The data length disagrees with the offsets.
            if rng.bernoulli(0.5) {
                let cut = rng.below(data.len() + 1);
                data.truncate(cut);
                Some(format!("data truncated to {cut}"))
            } else {
                data.extend(std::iter::repeat_n(0, 1 + rng.below(64)));
                Some("data padded".into())
            }
        }
        _ => {
            let mut text = serde_json::to_vec(&header).unwrap();
            let what = mutate_json_text(rng, &mut text);
            let declared = rng.bernoulli(0.2).then(|| pick(rng, &U64_EXTREMES));
            *file = join_safetensors(&text, &data);
            if let Some(n) = declared {
                file[..8].copy_from_slice(&n.to_le_bytes());
            }
            return format!("header text: {what}, length {declared:?}");
        }
    };
    match what {
        Some(what) => {
            *file = join_safetensors(&serde_json::to_vec(&header).unwrap(), &data);
            what
        }
        None => format!("bytes: {}", mutate_bytes(rng, file)),
    }
}

#[test]
fn checkpoint_readers_survive_mutations() {
    let mut fz = Fuzz::new("safetensors", 0x5afe_0003, 500);
    let tmp = TempDir::new("ckpt");
    let be = Cpu::new();
    let darts = Genotype::builtin("DARTS_V2").unwrap();
    let net = EvalNetwork::new(&be, small_config(darts.clone()), 7).unwrap();
    let good = tmp.0.join("model.safetensors");
    save_network(
        &be,
        &net,
        Some("mnist"),
        &good,
        BTreeMap::new(),
        HashMap::new(),
    )
    .unwrap();
    let valid = std::fs::read(&good).unwrap();
    let (mut back, _) = load_network(&be, &good, None).unwrap();
    let x = Tensor::from_host(&be, &[0.5f32; 64], [1, 1, 8, 8].as_slice()).unwrap();
    assert_eq!(eval_logits(&be, &mut back, &x).unwrap().len(), 3);

    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut bytes = valid.clone();
        let rounds = if rng.bernoulli(0.3) {
            2 + rng.below(2)
        } else {
            1
        };
        let what: Vec<String> = (0..rounds)
            .map(|_| mutate_checkpoint(&mut rng, &mut bytes))
            .collect();
        let mutation = what.join(", then ");
        let path = tmp.0.join(format!("case-{case}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let named = [path.as_path()];
        fz.check(
            case,
            &mutation,
            "load_safetensors",
            &named,
            no_exception,
            || load_safetensors(&path),
        );
        let genotype = rng.bernoulli(0.3).then(|| darts.clone());
        let loaded = fz.check(
            case,
            &mutation,
            "load_network",
            &named,
            no_exception,
            || load_network(&be, &path, genotype),
        );
        if let Some((mut net, _)) = loaded {
            // A network that loads must run (NaN weights give NaN logits, not a panic).
            let c = net.config.in_channels;
            let x = Tensor::from_host(&be, &vec![0.5f32; c * 64], [1, c, 8, 8].as_slice());
            fz.no_panic(case, &mutation, "eval_logits", || {
                let _ = eval_logits(&be, &mut net, &x.unwrap());
            });
        }
        let _ = std::fs::remove_file(&path);
    }
    fz.finish();
}

/// A checkpoint whose metadata describes a network other than its tensors (absurd sizes, an
/// invalid genotype) must be a bad file naming the path, found before the network is built.
#[test]
fn checkpoint_config_extremes_are_bad_files() {
    install_panic_hook();
    let tmp = TempDir::new("ckpt-config");
    let be = Cpu::new();
    let darts = Genotype::builtin("DARTS_V2").unwrap();
    let net = EvalNetwork::new(&be, small_config(darts), 7).unwrap();
    let good = tmp.0.join("model.safetensors");
    save_network(
        &be,
        &net,
        Some("mnist"),
        &good,
        BTreeMap::new(),
        HashMap::new(),
    )
    .unwrap();
    let (header, data) = split_safetensors(&std::fs::read(&good).unwrap()).unwrap();
    let mut cases = vec![
        ("/model/genotype/normal_concat".to_string(), json!([99])),
        ("/model/genotype/reduce".to_string(), json!([])),
    ];
    for v in [0u64, 1 << 31, u32::MAX as u64, 1 << 40, u64::MAX] {
        for field in ["channels", "layers", "classes", "in_channels"] {
            cases.push((format!("/model/{field}"), json!(v)));
        }
    }
    let mut failures = Vec::new();
    for (i, (pointer, v)) in cases.into_iter().enumerate() {
        let mut h = header.clone();
        let meta = h["__metadata__"]["nasrs.model"].as_str().unwrap();
        let mut model: Value = serde_json::from_str(meta).unwrap();
        *model.pointer_mut(&pointer).unwrap() = v.clone();
        h["__metadata__"]["nasrs.model"] = Value::String(model.to_string());
        let path = tmp.0.join(format!("case-{i}.safetensors"));
        let bytes = join_safetensors(&serde_json::to_vec(&h).unwrap(), &data);
        std::fs::write(&path, bytes).unwrap();
        let case = format!("nasrs.model{pointer} = {v}");
        set_case_label(&case);
        match catch_unwind(AssertUnwindSafe(|| load_network(&be, &path, None))) {
            Ok(Err(Error::BadFile { path: p, .. })) if p == path => {}
            Ok(Err(e)) => failures.push(format!("{case}: not a bad file named by path: {e}")),
            Ok(Ok(_)) => failures.push(format!("{case}: accepted")),
            Err(payload) => failures.push(format!("{case}: {}", panic_text(&*payload))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
