//! The second-order (unrolled) architecture gradient against a direct finite-difference
//! estimate of d/dalpha L_val(w - xi grad_w L_train(w, alpha), alpha), on a tiny supernet in
//! f64. Momentum buffers start at zero and weight decay is off, so the unrolled step is
//! exactly w - xi grad_w L_train.
//!
//! And the DARTS steps on every device (`test_device!`), first and second order: two
//! iterations of direct steps, each started from the CPU's state; the architecture gradient,
//! both steps' losses and correct counts, and the weights, alphas, BN statistics and both
//! optimizers' states after each equal the CPU's (1e-4 on the selftest measure, 5e-4 for the
//! second-order alpha gradient; bitwise CPU against CPU).

mod common;

use common::{assert_close_with, darts_state, darts_tol, host_batch, load_darts_state, Outputs};
use nasrs::autograd::{ParamStore, Tape};
use nasrs::backend::prelude::*;
use nasrs::data::Batch;
use nasrs::nas::darts::{Darts, DartsHyper, DeviceBatch};
use nasrs::nas::{Mode, SearchConfig, SearchNetwork};
use nasrs::{Backend, Cpu, Rng, Tensor};

type B = Cpu<f64>;

fn batch(be: &B, rng: &mut Rng, n: usize) -> DeviceBatch<B> {
    let x: Vec<f64> = (0..n * 2 * 8 * 8).map(|_| rng.normal()).collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
    DeviceBatch {
        images: Tensor::from_host(be, &x, [n, 2, 8, 8]).unwrap(),
        labels: std::sync::Arc::new(be.upload_labels(&labels, 3).unwrap()),
        classes: 3,
    }
}

fn loss(
    net: &mut SearchNetwork<B>,
    b: &DeviceBatch<B>,
    weights: Option<&ParamStore<B>>,
    mode: Mode,
) -> (f64, Option<Vec<Tensor<B>>>) {
    let be = B::default();
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(b.images.clone());
    let logits = net.run(&mut tape, x, mode, weights).unwrap();
    let l = tape.softmax_cross_entropy(logits, &b.labels).unwrap();
    let v = tape.scalar(l, "loss").unwrap();
    if !mode.grad_weights {
        return (v, None);
    }
    let g = tape.backward(l).unwrap();
    let gw = g.params(&be, weights.unwrap_or(&net.weights)).unwrap();
    (v, Some(gw))
}

/// L_val(w - xi grad_w L_train(w, alpha), alpha) for the network's current alphas.
fn unrolled_val_loss(
    net: &mut SearchNetwork<B>,
    train: &DeviceBatch<B>,
    val: &DeviceBatch<B>,
    xi: f64,
) -> f64 {
    let be = B::default();
    let grad_w = Mode {
        grad_weights: true,
        grad_arch: false,
        ..Mode::ARCH_STEP
    };
    let (_, g) = loss(net, train, None, grad_w);
    let mut w = net.weights.deep_copy(&be).unwrap();
    for (i, g) in g.unwrap().iter().enumerate() {
        let id = nasrs::autograd::ParamId(i);
        be.axpy(w.get_mut(id).buf_mut("w").unwrap(), -xi, &g.buf)
            .unwrap();
    }
    loss(net, val, Some(&w), Mode::ARCH_STEP).0
}

#[test]
fn second_order_alpha_gradient_matches_finite_differences_of_the_unrolled_loss() {
    let be = B::default();
    let mut rng = Rng::new(5);
    let (train, val) = (batch(&be, &mut rng, 4), batch(&be, &mut rng, 4));
    let config = SearchConfig::darts(2, 1, 3, 2); // one (reduction) cell
    let net = SearchNetwork::new(&be, config, 11).unwrap();
    // Larger alphas than the 1e-3 init so the op weights differ and the check is not degenerate.
    let mut net = net;
    for t in net.arch.tensors_mut() {
        let v: Vec<f64> = (0..t.numel()).map(|_| 0.5 * rng.normal()).collect();
        *t = Tensor::from_host(&be, &v, t.shape.clone()).unwrap();
    }
    let xi = 0.3;
    // The paper's radius (0.01 / ||v||) moves this tiny net's pre-activations across ReLU
    // kinks, which a finite difference of gradients cannot see past; 1e-4 isolates the
    // algebra under test from that approximation error.
    let hyper = DartsHyper {
        order: 2,
        weight_decay: 0.0,
        hvp_radius: 1e-4,
        ..DartsHyper::default()
    };
    let mut darts = Darts::new(be.clone(), net, hyper).unwrap();
    let (_, analytic) = darts.arch_gradient(&train, &val, xi).unwrap();
    let mut first_order = Darts::new(
        be.clone(),
        SearchNetwork::new(&be, SearchConfig::darts(2, 1, 3, 2), 11).unwrap(),
        DartsHyper::default(),
    )
    .unwrap();
    first_order.net.arch = darts.net.arch.deep_copy(&be).unwrap();
    let (_, fo) = first_order.arch_gradient(&train, &val, xi).unwrap();

    let h = 1e-5;
    let mut max_err: f64 = 0.0;
    let mut max_second_order_term: f64 = 0.0;
    // The single cell is a reduction cell: its alphas are `alphas_reduce.*`.
    let ids: Vec<_> = darts
        .net
        .arch
        .ids()
        .filter(|&id| darts.net.arch.name(id).starts_with("alphas_reduce"))
        .collect();
    for &id in ids.iter().step_by(3) {
        let base = darts.net.arch.get(id).to_host(&be).unwrap();
        for k in [1usize, 4, 7] {
            let mut f = |d: f64| {
                let mut v = base.clone();
                v[k] += d;
                *darts.net.arch.get_mut(id) = Tensor::from_host(&be, &v, [8]).unwrap();
                unrolled_val_loss(&mut darts.net, &train, &val, xi)
            };
            let numeric = (f(h) - f(-h)) / (2.0 * h);
            *darts.net.arch.get_mut(id) = Tensor::from_host(&be, &base, [8]).unwrap();
            let a = analytic[id.0].to_host(&be).unwrap()[k];
            let first = fo[id.0].to_host(&be).unwrap()[k];
            max_err = max_err.max((a - numeric).abs());
            max_second_order_term = max_second_order_term.max((first - numeric).abs());
            assert!(
                (a - numeric).abs() <= 1e-6 + 2e-3 * numeric.abs().max(1e-3),
                "{} [{k}]: second-order {a} vs finite differences {numeric} (first-order {first})",
                darts.net.arch.name(id)
            );
        }
    }
    // The unrolling matters here: the first-order gradient is measurably further off.
    assert!(
        max_second_order_term > 10.0 * max_err,
        "second-order term {max_second_order_term} vs error {max_err}"
    );
}

/// A small supernet's DARTS search (C=2, 3 cells, 3 classes, 2-channel input), gradient clip
/// 0.5 so the device-side clip coefficient acts on some steps.
fn darts<B: Backend<Elem = f32>>(be: &B, order: u8) -> nasrs::Result<Darts<B>> {
    let net = SearchNetwork::new(be, SearchConfig::darts(2, 3, 3, 2), 7)?;
    let hyper = DartsHyper {
        order,
        grad_clip: 0.5,
        ..DartsHyper::default()
    };
    Darts::new(be.clone(), net, hyper)
}

/// One DARTS iteration run directly: the architecture gradient on a validation batch, Adam
/// on the alphas (`arch_step` in two parts, to see the gradient), the weight step on a
/// training batch. Returns the gradient, both steps' statistics and the state after.
fn iteration<B: Backend<Elem = f32>>(
    be: &B,
    d: &mut Darts<B>,
    train: &Batch,
    val: &Batch,
    lr: f64,
) -> nasrs::Result<Outputs> {
    let t = DeviceBatch::from_batch(be, train, 3)?;
    let v = DeviceBatch::from_batch(be, val, 3)?;
    let mut out = Outputs::default();
    let (a, dalpha) = d.arch_gradient(&t, &v, lr)?;
    for (id, g) in d.net.arch.ids().zip(&dalpha) {
        out.push(format!("dalpha.{}", d.net.arch.name(id)), g.to_host(be)?);
    }
    let arch_lr = d.hyper.arch_lr;
    d.arch_opt.step(be, &mut d.net.arch, &dalpha, arch_lr)?;
    let w = d.weight_step(&t, lr)?;
    for (what, s) in [("arch", a), ("weight", w)] {
        out.scalar(format!("{what}.loss"), s.loss);
        out.scalar(format!("{what}.correct"), s.correct as f64);
    }
    out.0.extend(darts_state(be, d)?.0);
    Ok(out)
}

/// Two iterations on the device and on the CPU in lockstep: each starts the device from the
/// CPU's state (see `common::load_darts_state`), and its results are compared.
fn darts_steps_match_cpu<B: Backend<Elem = f32>>(be: &B, order: u8) -> nasrs::Result<()> {
    let cpu = Cpu::new();
    let (mut dev, mut reference) = (darts(be, order)?, darts(&cpu, order)?);
    let tol = darts_tol(order);
    let mut rng = Rng::new(3);
    for (step, lr) in [0.05, 0.02].into_iter().enumerate() {
        let (train, val) = (
            host_batch(&mut rng, 4, 2, 8, 3),
            host_batch(&mut rng, 4, 2, 8, 3),
        );
        load_darts_state(be, &mut dev, &reference)?;
        let got = iteration(be, &mut dev, &train, &val, lr)?;
        let want = iteration(&cpu, &mut reference, &train, &val, lr)?;
        let what = format!("order {order} DARTS step {step}");
        assert_close_with(be, &what, &got, &want, &tol);
    }
    Ok(())
}

fn first_order<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    darts_steps_match_cpu(be, 1)
}

fn second_order<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    darts_steps_match_cpu(be, 2)
}

test_device!(first_order_steps_match_the_cpu, first_order);
test_device!(second_order_steps_match_the_cpu, second_order);
