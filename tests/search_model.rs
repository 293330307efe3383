//! The DARTS supernet: exact parameter count, PyTorch names, forward/backward shapes; and the
//! tape on it on every device (`test_device!`): logits, loss, every weight and alpha
//! gradient and the updated BN running statistics equal the CPU's (1e-4 on the selftest
//! measure; bitwise CPU against CPU).

mod common;

use common::{assert_close, randn, Outputs, TOL};
use nasrs::autograd::Tape;
use nasrs::nas::{Ctx, Mode, SearchConfig, SearchNetwork};
use nasrs::{Backend, Cpu, Rng, Tensor};
use std::sync::Arc;

#[test]
fn darts_cifar_supernet_has_exactly_1930618_weights() {
    let be: Cpu = Cpu::new();
    let net = SearchNetwork::new(&be, SearchConfig::darts(16, 8, 10, 3), 0).unwrap();
    assert_eq!(net.num_weights(), 1_930_618);
    assert_eq!(net.arch.numel(), 2 * 14 * 8);
    let names = net.weights.names();
    for want in [
        "stem.0.weight",
        "stem.1.weight",
        "cells.0.preprocess0.op.1.weight",
        "cells.0._ops.0._ops.4.op.1.weight",
        "cells.0._ops.0._ops.4.op.6.weight",
        "cells.2._ops.0._ops.3.conv_1.weight",
        "cells.3.preprocess0.conv_2.weight",
        "classifier.bias",
    ] {
        assert!(names.iter().any(|n| n == want), "missing {want}");
    }
    assert!(net
        .buffers
        .names()
        .iter()
        .any(|n| n == "cells.0._ops.0._ops.1.1.running_mean"));
}

#[test]
fn tiny_supernet_forward_backward() {
    let be: Cpu = Cpu::new();
    let net = SearchNetwork::new(&be, SearchConfig::darts(4, 3, 5, 1), 1).unwrap();
    let mut buffers = net.buffers.deep_copy(&be).unwrap();
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..2 * 12 * 12).map(|_| rng.normal() as f32).collect();
    let mut tape = Tape::new(be.clone());
    let xv = tape.constant(Tensor::from_host(&be, &x, [2, 1, 12, 12]).unwrap());
    let mut cx = Ctx {
        tape: &mut tape,
        weights: &net.weights,
        buffers: &mut buffers,
        arch: &net.arch,
        mode: Mode {
            grad_arch: true,
            ..Mode::WEIGHT_STEP
        },
    };
    let logits = net.forward(&mut cx, xv).unwrap();
    assert_eq!(tape.shape(logits).dims(), &[2, 5]);
    let labels =
        std::sync::Arc::new(nasrs::backend::DeviceOps::upload_labels(&be, &[1, 4], 10).unwrap());
    let loss = tape.softmax_cross_entropy(logits, &labels).unwrap();
    let l = tape.scalar(loss, "loss").unwrap();
    assert!((l - (5f64).ln()).abs() < 0.5, "initial loss {l}");
    let grads = tape.backward(loss).unwrap();
    let gw = grads.params(&be, &net.weights).unwrap();
    let ga = grads.params(&be, &net.arch).unwrap();
    let norm = |g: &[Tensor<Cpu>]| {
        g.iter()
            .map(|t| t.to_f64(&be).unwrap().iter().map(|v| v * v).sum::<f64>())
            .sum::<f64>()
    };
    assert!(norm(&gw) > 0.0 && norm(&ga) > 0.0);
    // Running statistics moved away from their initial values.
    let rm = buffers
        .get(nasrs::autograd::ParamId(0))
        .to_f64(&be)
        .unwrap();
    assert!(rm.iter().any(|&v| v != 0.0));
}

/// One forward and backward of a small supernet (C=4, 3 cells: one normal, two reduction;
/// batch 4 of 8x8) through the tape, alphas drawn large enough that the MixedOp weights
/// differ: everything it computes, as host values.
fn supernet_tape<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Outputs> {
    let mut net = SearchNetwork::new(be, SearchConfig::darts(4, 3, 5, 1), 1)?;
    let mut rng = Rng::new(3);
    for t in net.arch.tensors_mut() {
        let v: Vec<f32> = randn(&mut rng, t.numel()).iter().map(|a| 0.5 * a).collect();
        *t = Tensor::from_host(be, &v, t.shape.clone())?;
    }
    let mut buffers = net.buffers.deep_copy(be)?;
    let x = randn(&mut rng, 4 * 8 * 8);
    let mut tape = Tape::new(be.clone());
    let xv = tape.constant(Tensor::from_host(be, &x, [4, 1, 8, 8])?);
    let mut cx = Ctx {
        tape: &mut tape,
        weights: &net.weights,
        buffers: &mut buffers,
        arch: &net.arch,
        mode: Mode {
            grad_arch: true,
            ..Mode::WEIGHT_STEP
        },
    };
    let logits = net.forward(&mut cx, xv)?;
    let labels = Arc::new(be.upload_labels(&[1, 4, 0, 2], 5)?);
    let loss = tape.softmax_cross_entropy(logits, &labels)?;
    let mut out = Outputs::default();
    out.push("logits", tape.value(logits)?.to_host(be)?);
    out.scalar("loss", tape.scalar(loss, "loss")?);
    let grads = tape.backward(loss)?;
    for (store, prefix) in [(&net.weights, "dweight"), (&net.arch, "dalpha")] {
        for (id, g) in store.ids().zip(grads.params(be, store)?) {
            out.push(format!("{prefix}.{}", store.name(id)), g.to_host(be)?);
        }
    }
    out.store(be, "running", &buffers)?;
    Ok(out)
}

fn supernet_tape_matches_cpu<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let got = supernet_tape(be)?;
    let want = supernet_tape(&Cpu::new())?;
    // Not a degenerate check: the alpha gradients are far from zero.
    let da: f64 = want
        .0
        .iter()
        .filter(|(n, _)| n.starts_with("dalpha"))
        .flat_map(|(_, v)| v.iter().map(|&g| (g as f64).abs()))
        .sum();
    assert!(da > 1e-3, "alpha gradients sum to {da}");
    assert_close(be, "supernet forward/backward", &got, &want, TOL);
    Ok(())
}

test_device!(
    supernet_tape_gradients_match_the_cpu,
    supernet_tape_matches_cpu
);
