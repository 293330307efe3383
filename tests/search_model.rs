//! The DARTS supernet: exact parameter count, PyTorch names, forward/backward shapes.

use nasrs::autograd::Tape;
use nasrs::nas::{Ctx, Mode, SearchConfig, SearchNetwork};
use nasrs::{Cpu, Rng, Tensor};

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
    let labels = std::sync::Arc::new(nasrs::Backend::upload_labels(&be, &[1, 4], 10).unwrap());
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
