//! The DARTS evaluation network: the paper's parameter count, PyTorch state_dict names, the
//! auxiliary head and drop-path in training mode, eval-mode determinism, genotype files.
//!
//! On every device (`test_device!`): training steps of DARTS_V2 with the auxiliary head and
//! drop-path (forward, backward, clip, SGD), each started from the CPU's state, give the
//! CPU's losses, correct counts, weights, BN statistics and momentum (1e-4 on the selftest
//! measure), and eval-mode logits after them equal the CPU's.

mod common;

use common::{assert_close, host_batch, load_store, Outputs, TOL};
use nasrs::autograd::Tape;
use nasrs::data::Batch;
use nasrs::nas::darts::DeviceBatch;
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig, EvalNetwork};
use nasrs::nas::evaluate::eval_logits;
use nasrs::nas::train_run::{TrainHyper, Trainer};
use nasrs::nas::{Genotype, Mode};
use nasrs::{Backend, Cpu, Rng, Tensor};

fn config(name: &str, c: usize, l: usize, classes: usize, aux: bool) -> EvalConfig {
    EvalConfig {
        genotype: Genotype::builtin(name).unwrap(),
        channels: c,
        layers: l,
        classes,
        in_channels: 3,
        auxiliary: aux,
    }
}

#[test]
fn darts_v2_has_the_papers_parameter_count() {
    let be: Cpu = Cpu::new();
    let net = EvalNetwork::new(&be, config("DARTS_V2", 36, 20, 10, false), 0).unwrap();
    // DARTS (second order) on CIFAR-10: 3.3M; utils.count_parameters_in_MB prints 3.349342.
    assert_eq!(net.num_weights(), 3_349_342);
    assert_eq!(net.weights.numel(), 3_349_342);
    // The auxiliary head adds parameters that the paper's count leaves out.
    let aux = EvalNetwork::new(&be, config("DARTS_V2", 36, 20, 10, true), 0).unwrap();
    assert_eq!(aux.num_weights(), 3_349_342);
    // C_aux = 4 * 144 = 576: conv 576*128, BN 2*128, conv 128*768*4, BN 2*768, linear 768*10+10.
    let head = 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10;
    assert_eq!(aux.weights.numel(), 3_349_342 + head);
}

#[test]
fn state_dict_has_pytorch_names_and_i64_batch_counters() {
    let be: Cpu = Cpu::new();
    let mut net = EvalNetwork::new(&be, config("DARTS_V2", 36, 20, 10, true), 0).unwrap();
    net.bn_batches = 7;
    let (floats, ints) = net.state_dict(&be).unwrap();
    for name in [
        "stem.0.weight",
        "stem.1.running_var",
        "cells.0.preprocess0.op.1.weight",
        "cells.3._ops.2.op.1.weight", // sep_conv_3x3: its depthwise conv, OIHW [C, 1, 3, 3]
        "cells.3._ops.2.op.7.running_mean",
        "cells.7.preprocess0.conv_2.weight", // after reduction cell 6: FactorizedReduce
        "cells.14.preprocess0.bn.running_var", // after reduction cell 13
        "auxiliary_head.features.5.weight",
        "auxiliary_head.classifier.bias",
        "classifier.weight",
    ] {
        assert!(floats.contains_key(name), "{name}");
    }
    assert_eq!(
        floats["cells.3._ops.2.op.1.weight"].shape,
        vec![36, 1, 3, 3]
    );
    assert_eq!(
        floats["auxiliary_head.features.5.weight"].shape,
        vec![768, 128, 2, 2]
    );
    // Pools carry no BN in the evaluation network (reduce op 0 is max_pool_3x3), and the
    // stride-1 skip_connect (reduce op 2) is the identity: no tensors for either.
    assert!(!floats.keys().any(|k| k.starts_with("cells.6._ops.0.")));
    assert!(!floats.keys().any(|k| k.starts_with("cells.6._ops.2.")));
    // One I64 counter per BN, none elsewhere.
    let bns = floats
        .keys()
        .filter(|k| k.ends_with(".running_mean"))
        .count();
    assert_eq!(ints.len(), bns);
    assert!(ints
        .values()
        .all(|t| t.shape.is_empty() && t.data == vec![7]));
    assert!(ints.contains_key("auxiliary_head.features.6.num_batches_tracked"));
}

fn forward(net: &mut EvalNetwork<Cpu>, x: &Tensor<Cpu>, mode: Mode, p: f64, seed: u64) -> Vec<f32> {
    let be: Cpu = Cpu::new();
    let mut tape = Tape::new(be.clone());
    let xv = tape.constant(x.clone());
    let (y, _) = net
        .run(&mut tape, xv, mode, p, &mut Rng::new(seed))
        .unwrap();
    tape.value(y).unwrap().to_f32(&be).unwrap()
}

#[test]
fn drop_path_acts_in_training_only_and_follows_its_generator() {
    let be: Cpu = Cpu::new();
    let mut net = EvalNetwork::new(&be, config("DARTS_V2", 4, 3, 10, false), 1).unwrap();
    let mut rng = Rng::new(3);
    let v: Vec<f32> = (0..4 * 3 * 8 * 8).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_host(&be, &v, [4, 3, 8, 8]).unwrap();
    let train = Mode {
        update_running: false,
        ..Mode::WEIGHT_STEP
    };
    let plain = forward(&mut net, &x, train, 0.0, 0);
    let dropped = forward(&mut net, &x, train, 0.5, 0);
    assert_ne!(plain, dropped, "drop-path changed nothing in training mode");
    assert_eq!(
        dropped,
        forward(&mut net, &x, train, 0.5, 0),
        "same generator, same masks"
    );
    assert_ne!(dropped, forward(&mut net, &x, train, 0.5, 1));
    // Eval mode ignores the drop-path probability.
    assert_eq!(
        forward(&mut net, &x, Mode::EVAL, 0.0, 0),
        forward(&mut net, &x, Mode::EVAL, 0.5, 9)
    );
    assert_eq!(net.bn_batches, 0, "no running update was asked for");
    let err = {
        let mut tape = Tape::new(be.clone());
        let xv = tape.constant(x.clone());
        net.run(&mut tape, xv, train, 1.0, &mut Rng::new(0))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err.contains("--drop-path"), "{err}");
}

#[test]
fn genotype_by_name_or_from_a_search_file() {
    let g = resolve_genotype("DARTS_V1").unwrap();
    assert_eq!(g, Genotype::builtin("DARTS_V1").unwrap());
    let path = std::env::temp_dir().join(format!("nasrs-genotype-{}.json", std::process::id()));
    std::fs::write(&path, Genotype::builtin("DARTS_V2").unwrap().to_json()).unwrap();
    assert_eq!(
        resolve_genotype(path.to_str().unwrap()).unwrap(),
        Genotype::builtin("DARTS_V2").unwrap()
    );
    let _ = std::fs::remove_file(&path);
}

/// A `none` op in a genotype (never derived, but a file may hold one) adds zero: the network
/// builds and trains; a node of two `none` ops (an all-zero state) is refused.
#[test]
fn genotype_with_none_ops() {
    use nasrs::nas::Primitive;
    let be: Cpu = Cpu::new();
    let mut cfg = config("DARTS_V2", 4, 3, 10, false);
    cfg.genotype.normal[5].0 = Primitive::None;
    cfg.genotype.reduce[0].0 = Primitive::None;
    let mut net = EvalNetwork::new(&be, cfg.clone(), 1).unwrap();
    let mut rng = Rng::new(4);
    let v: Vec<f32> = (0..2 * 3 * 8 * 8).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_host(&be, &v, [2, 3, 8, 8]).unwrap();
    let train = Mode {
        update_running: false,
        ..Mode::WEIGHT_STEP
    };
    let y = forward(&mut net, &x, train, 0.3, 0);
    assert_eq!(y.len(), 2 * 10);
    assert!(y.iter().all(|v| v.is_finite()));

    cfg.genotype.normal[4].0 = Primitive::None;
    let err = EvalNetwork::new(&be, cfg.clone(), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("normal node 2 has two none ops"), "{err}");
    let path = std::env::temp_dir().join(format!("nasrs-none-{}.json", std::process::id()));
    std::fs::write(&path, cfg.genotype.to_json()).unwrap();
    let err = resolve_genotype(path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_file(&path);
    assert!(
        err.contains("nasrs-none") && err.contains("two none"),
        "{err}"
    );
}

/// DARTS_V2 with C=2, 3 cells (two reduction) and the auxiliary head, for 32x32 RGB images
/// (the head needs 8x8 features), gradient clip 0.5 so the clip acts.
fn trainer<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Trainer<B>> {
    let mut cfg = config("DARTS_V2", 2, 3, 10, true);
    cfg.in_channels = 3;
    let net = EvalNetwork::new(be, cfg, 1)?;
    let hyper = TrainHyper {
        grad_clip: 0.5,
        ..TrainHyper::default()
    };
    Trainer::new(be.clone(), net, hyper)
}

/// One training step (drop-path 0.2, masks drawn from `seed`), then eval-mode logits of the
/// same batch: the statistics, the logits and the state after.
fn train_step<B: Backend<Elem = f32>>(
    be: &B,
    tr: &mut Trainer<B>,
    batch: &Batch,
    lr: f64,
    seed: u64,
) -> nasrs::Result<Outputs> {
    let b = DeviceBatch::from_batch(be, batch, 10)?;
    let s = tr.step(&b, lr, 0.2, &mut Rng::new(seed))?;
    let mut out = Outputs::default();
    out.scalar("loss", s.loss);
    out.scalar("aux_loss", s.aux_loss.expect("an auxiliary loss"));
    out.scalar("correct", s.correct as f64);
    let logits: Vec<f32> = eval_logits(be, &mut tr.net, &b.images)?
        .iter()
        .map(|&v| v as f32)
        .collect();
    out.push("eval_logits", logits);
    out.store(be, "weights", &tr.net.weights)?;
    out.store(be, "bn", &tr.net.buffers)?;
    out.store(be, "momentum", &tr.opt.state)?;
    Ok(out)
}

/// Two steps on the device and the CPU in lockstep (the device loaded with the CPU's state
/// before each).
fn training_steps_match_cpu<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let cpu = Cpu::new();
    let (mut dev, mut reference) = (trainer(be)?, trainer(&cpu)?);
    let mut rng = Rng::new(8);
    for (step, lr) in [0.05, 0.03].into_iter().enumerate() {
        let batch = host_batch(&mut rng, 4, 3, 32, 10);
        load_store(be, &mut dev.net.weights, &reference.net.weights)?;
        load_store(be, &mut dev.net.buffers, &reference.net.buffers)?;
        load_store(be, &mut dev.opt.state, &reference.opt.state)?;
        let got = train_step(be, &mut dev, &batch, lr, step as u64)?;
        let want = train_step(&cpu, &mut reference, &batch, lr, step as u64)?;
        assert_close(be, &format!("training step {step}"), &got, &want, TOL);
        assert_eq!(dev.net.bn_batches, step as u64 + 1);
    }
    Ok(())
}

test_device!(training_steps_match_the_cpu, training_steps_match_cpu);
