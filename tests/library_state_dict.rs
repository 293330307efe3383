//! The library API's state dicts (issue #12), on the CPU:
//! - `SearchNetwork::state_dict` / `load_state_dict`: a round trip through safetensors gives a
//!   network with identical outputs; a `nasrs search` checkpoint (alpha tables and per-edge
//!   rows, optimizer state) and a PyTorch `state_dict` without alphas load; bad files are
//!   refused naming the tensor.
//! - `EvalNetwork::load_state_dict_prefixed`: a `state_dict` whose keys carry `module.` (as
//!   PyTorch's `DataParallel` saves it) loads, `num_batches_tracked` included; keys without the
//!   prefix, or the prefixed file without it, are refused naming the file and the tensor.

mod common;

use common::library::*;
use nasrs::autograd::ParamStore;
use nasrs::data::synthetic;
use nasrs::io::{load_safetensors, save_safetensors_with_i64, HostTensor, HostTensorI64};
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::eval_model::{EvalConfig, EvalNetwork};
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{SearchRun, SearchRunConfig, Silent, CHECKPOINT};
use nasrs::nas::{Genotype, SearchNetwork};
use nasrs::{Cpu, Rng, Tensor};
use std::collections::{BTreeMap, HashMap};

#[test]
fn state_dict_round_trip_gives_identical_outputs() {
    let be = Cpu::new();
    let mut d = darts(&be, 2, false);
    let mut rng = Rng::new(1);
    for _ in 0..2 {
        let (t, v) = (host_batch(&mut rng, 4), host_batch(&mut rng, 4));
        d.iteration(&t, &v, 0.05).unwrap();
    }
    let mut a = d.net;
    assert_eq!(a.bn_batches, 2);
    let (floats, ints) = a.state_dict(&be).unwrap();
    assert_eq!(floats["alphas_normal"].shape, vec![14, 8]);
    assert_eq!(floats["alphas_reduce"].shape, vec![14, 8]);
    assert!(
        !floats.contains_key("alphas_normal.0"),
        "rows are not PyTorch's"
    );
    assert_eq!(ints["stem.1.num_batches_tracked"].data, vec![2]);
    assert!(ints.keys().all(|k| k.ends_with(".num_batches_tracked")));

    let dir = tmp("round-trip");
    let path = dir.join("search.safetensors");
    save(&path, &a, &be);
    let (tensors, _) = load_safetensors(&path).unwrap();
    let mut b = SearchNetwork::new(&be, config(), 99).unwrap();
    let x = Tensor::from_host(&be, &host_batch(&mut rng, 3).images, [3, 2, 8, 8]).unwrap();
    assert_ne!(outputs(&be, &mut a, &x), outputs(&be, &mut b, &x));
    b.load_state_dict(&be, &tensors, &[], &path).unwrap();
    assert_eq!(outputs(&be, &mut a, &x), outputs(&be, &mut b, &x));
    assert_eq!(b.bn_batches, 2);
    assert_eq!(b.state_dict(&be).unwrap(), a.state_dict(&be).unwrap());
    assert_eq!(a.genotype(&be).unwrap(), b.genotype(&be).unwrap());

    // A PyTorch DARTS `model.state_dict()` has no alphas (plain tensors, not parameters):
    // it loads and the alphas stay.
    let mut torch = tensors.clone();
    torch.retain(|k, _| !k.starts_with("alphas_"));
    let mut c = SearchNetwork::new(&be, config(), 99).unwrap();
    let alphas = c.alphas_normal(&be).unwrap().to_host(&be).unwrap();
    c.load_state_dict(&be, &torch, &[], &path).unwrap();
    assert_eq!(c.alphas_normal(&be).unwrap().to_host(&be).unwrap(), alphas);
    assert_eq!(store_f32(&be, &c.weights), store_f32(&be, &a.weights));

    // Refusals name the file and the tensor.
    let refused = |t: &BTreeMap<String, nasrs::io::HostTensor>, want: &str| {
        let mut n = SearchNetwork::new(&be, config(), 0).unwrap();
        let e = n
            .load_state_dict(&be, t, &[], &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains("search.safetensors"), "{e}");
    };
    let mut extra = tensors.clone();
    extra.insert("head.weight".into(), tensors["stem.0.weight"].clone());
    refused(&extra, "head.weight");
    let mut missing = tensors.clone();
    missing.remove("classifier.bias");
    refused(&missing, "missing tensor classifier.bias");
    let mut wrong = tensors.clone();
    wrong.get_mut("alphas_reduce").unwrap().shape = vec![8, 14];
    refused(&wrong, "alphas_reduce");
    let _ = std::fs::remove_dir_all(&dir);
}

fn store_f32(be: &Cpu<f32>, s: &ParamStore<Cpu<f32>>) -> Vec<Vec<f32>> {
    s.tensors().iter().map(|t| t.to_host(be).unwrap()).collect()
}

/// A `nasrs search` checkpoint (alpha tables and per-edge rows, BN counters, optimizer
/// state) loads with the optimizers' prefixes ignored, and so does one with only the rows.
#[test]
fn search_checkpoints_stay_loadable() {
    let dir = tmp("search-run");
    let model = config().in_channels(1).nodes(2);
    let cfg = SearchRunConfig {
        dataset: "synthetic".into(),
        model: model.clone(),
        hyper: DartsHyper::default(),
        epochs: 1,
        batch: 8,
        seed: 4,
        train_portion: 0.5,
        train_limit: None,
        augment: false,
    };
    let be = Cpu::new();
    let train = synthetic(48, 1, 8, 8, 3, 9).unwrap();
    let genotype = SearchRun::new(be.clone(), cfg, &dir)
        .unwrap()
        .run(&train, Start::New, &mut Silent)
        .unwrap();
    let path = dir.join(CHECKPOINT);
    let (tensors, _) = load_safetensors(&path).unwrap();
    let ignore = ["optimizer.", "arch_optimizer."];
    let mut net = SearchNetwork::new(&be, model.clone(), 0).unwrap();
    net.load_state_dict(&be, &tensors, &ignore, &path).unwrap();
    assert_eq!(net.genotype(&be).unwrap(), genotype);
    assert_eq!(
        net.bn_batches, 3,
        "one per weight step: 24 samples / batch 8"
    );
    let (floats, _) = net.state_dict(&be).unwrap();
    for name in ["alphas_normal", "alphas_reduce"] {
        assert_eq!(floats[name], tensors[name]);
    }
    // Without its tables (the rows only) it loads the same alphas.
    let mut rows = tensors.clone();
    rows.remove("alphas_normal");
    rows.remove("alphas_reduce");
    let mut net2 = SearchNetwork::new(&be, model.clone(), 0).unwrap();
    net2.load_state_dict(&be, &rows, &ignore, &path).unwrap();
    assert_eq!(net2.state_dict(&be).unwrap(), net.state_dict(&be).unwrap());
    // Half the rows of a cell is an error naming the first missing one.
    rows.remove("alphas_reduce.3");
    let mut net3 = SearchNetwork::new(&be, model, 0).unwrap();
    let e = net3
        .load_state_dict(&be, &rows, &ignore, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("alphas_reduce.3"), "{e}");
    // Optimizer state is refused unless ignored.
    let e = net3
        .load_state_dict(&be, &tensors, &[], &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("optimizer"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_state_dict_loads_under_a_dataparallel_prefix() {
    let be = Cpu::new();
    let cfg = EvalConfig {
        genotype: Genotype::builtin("DARTS_V2").unwrap(),
        channels: 4,
        layers: 3,
        classes: 3,
        in_channels: 2,
        auxiliary: true,
    };
    let mut a = EvalNetwork::new(&be, cfg.clone(), 1).unwrap();
    a.bn_batches = 7;
    let (floats, ints) = a.state_dict(&be).unwrap();
    let module = |k: &String| format!("module.{k}");
    let floats: BTreeMap<String, HostTensor> =
        floats.iter().map(|(k, v)| (module(k), v.clone())).collect();
    let ints: BTreeMap<String, HostTensorI64> =
        ints.iter().map(|(k, v)| (module(k), v.clone())).collect();
    assert!(ints.contains_key("module.stem.1.num_batches_tracked"));
    let dir = tmp("dataparallel");
    let path = dir.join("weights.pt.safetensors");
    save_safetensors_with_i64(&path, &floats, &ints, HashMap::new()).unwrap();
    let (tensors, _) = load_safetensors(&path).unwrap();

    let mut b = EvalNetwork::new(&be, cfg.clone(), 2).unwrap();
    assert_ne!(store_f32(&be, &b.weights), store_f32(&be, &a.weights));
    b.load_state_dict_prefixed(&be, &tensors, "module.", &[], &path)
        .unwrap();
    assert_eq!(b.bn_batches, 7);
    assert_eq!(b.state_dict(&be).unwrap(), a.state_dict(&be).unwrap());

    // Ignored keys are matched whole (an optimizer's state is not under `module.`).
    let mut with_optimizer = tensors.clone();
    with_optimizer.insert(
        "optimizer.momentum".into(),
        tensors["module.stem.0.weight"].clone(),
    );
    let mut c = EvalNetwork::new(&be, cfg.clone(), 3).unwrap();
    c.load_state_dict_prefixed(&be, &with_optimizer, "module.", &["optimizer."], &path)
        .unwrap();
    assert_eq!(store_f32(&be, &c.weights), store_f32(&be, &a.weights));

    let refused = |t: &BTreeMap<String, HostTensor>, prefix: &str, want: &[&str]| {
        let mut n = EvalNetwork::new(&be, cfg.clone(), 0).unwrap();
        let e = n
            .load_state_dict_prefixed(&be, t, prefix, &[], &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("weights.pt.safetensors"), "{e}");
        for w in want {
            assert!(e.contains(w), "{e} lacks {w}");
        }
    };
    // The prefixed file without its prefix: every key is unknown.
    refused(&tensors, "", &["module.auxiliary_head."]);
    assert!(EvalNetwork::new(&be, cfg.clone(), 0)
        .unwrap()
        .load_state_dict(&be, &tensors, &[], &path)
        .is_err());
    // A key without the prefix among prefixed ones.
    let mut stray = tensors.clone();
    stray.insert(
        "stem.0.weight".into(),
        tensors["module.stem.0.weight"].clone(),
    );
    refused(
        &stray,
        "module.",
        &["stem.0.weight", "under the prefix 'module.'"],
    );
    // A missing tensor is named with its prefix.
    let mut missing = tensors.clone();
    missing.remove("module.classifier.bias");
    refused(
        &missing,
        "module.",
        &["missing tensor module.classifier.bias"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
