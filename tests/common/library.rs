//! What the library-API tests share: a small search configuration, host batches, a DARTS
//! state to compare bit for bit, outputs in both BN modes, temporary folders.

use nasrs::autograd::{ParamStore, Tape};
use nasrs::backend::counting::Counting;
use nasrs::backend::prelude::*;
use nasrs::backend::{norm_scalars, ScalarRef};
use nasrs::data::{synthetic, Batch};
use nasrs::io::{load_safetensors, save_safetensors_with_i64, HostTensor, HostTensorI64};
use nasrs::nas::darts::{Darts, DartsHyper, DeviceBatch, StepStats};
use nasrs::nas::eval_model::{EvalConfig, EvalNetwork};
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{SearchRun, SearchRunConfig, Silent, CHECKPOINT};
use nasrs::nas::{Genotype, Mode, Primitive, SearchConfig, SearchNetwork};
use nasrs::{Backend, Cpu, Rng, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub type B = Cpu<f64>;

pub fn config() -> SearchConfig {
    SearchConfig::default()
        .channels(2)
        .layers(3)
        .classes(3)
        .in_channels(2)
}

pub fn host_batch(rng: &mut Rng, n: usize) -> Batch {
    Batch {
        images: (0..n * 2 * 8 * 8).map(|_| rng.normal() as f32).collect(),
        labels: (0..n).map(|_| rng.below(3) as u32).collect(),
        n,
        c: 2,
        h: 8,
        w: 8,
    }
}

pub fn darts<D: Backend>(be: &D, order: u8, bn: bool) -> Darts<D> {
    let net = SearchNetwork::new(be, config(), 7).unwrap();
    let hyper = DartsHyper {
        order,
        grad_clip: 0.5,
        arch_step_updates_bn: bn,
        ..DartsHyper::default()
    };
    Darts::new(be.clone(), net, hyper).unwrap()
}

pub fn host(be: &B, ts: &[Tensor<B>]) -> Vec<Vec<f64>> {
    ts.iter().map(|t| t.to_host(be).unwrap()).collect()
}

pub fn store(be: &B, s: &ParamStore<B>) -> Vec<Vec<f64>> {
    host(be, s.tensors())
}

/// Every tensor of the search state: weights, alphas, BN statistics, both optimizers.
pub fn state(be: &B, d: &Darts<B>) -> Vec<Vec<f64>> {
    [
        &d.net.weights,
        &d.net.arch,
        &d.net.buffers,
        &d.weight_opt.state,
        &d.arch_opt.exp_avg,
        &d.arch_opt.exp_avg_sq,
    ]
    .iter()
    .flat_map(|s| store(be, s))
    .collect()
}

/// Logits of `x` in eval mode (running statistics) and in training mode without updates.
pub fn outputs<D: Backend>(be: &D, net: &mut SearchNetwork<D>, x: &Tensor<D>) -> Vec<Vec<f64>> {
    [Mode::EVAL, Mode::TRAIN_NO_UPDATE]
        .into_iter()
        .map(|mode| {
            let mut tape = Tape::new(be.clone());
            tape.set_grad_enabled(false);
            let x = tape.constant(x.clone());
            let logits = net.run(&mut tape, x, mode, None).unwrap();
            tape.value(logits).unwrap().to_f64(be).unwrap()
        })
        .collect()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-library-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn save(path: &Path, net: &SearchNetwork<Cpu<f32>>, be: &Cpu<f32>) {
    let (floats, ints) = net.state_dict(be).unwrap();
    save_safetensors_with_i64(path, &floats, &ints, HashMap::new()).unwrap();
}
