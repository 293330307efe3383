//! Optimizers against hand-computed PyTorch semantics (SGD plain and Nesterov, Adam),
//! clipping and the cosine schedule.
//! (The PyTorch fixtures in tests/torch_parity.rs check the same updates against torch itself.)

use nasrs::autograd::ParamStore;
use nasrs::backend::prelude::*;
use nasrs::backend::{norm_scalars, AdamStep, Element, ScalarRef, SgdStep};
use nasrs::optim::{clip_grad_norm, cosine_lr, grad_norm_scalars, Adam, Sgd};
use nasrs::{Cpu, Tensor};

type B = Cpu<f64>;

fn store(be: &B, v: &[f64]) -> ParamStore<B> {
    let mut s = ParamStore::new();
    s.add("w", Tensor::from_host(be, v, [v.len()]).unwrap());
    s
}

#[test]
fn sgd_momentum_weight_decay_matches_pytorch_formula() {
    let be = B::default();
    let mut p = store(&be, &[1.0, -2.0]);
    let mut opt = Sgd::new(&be, &p, 0.9, 0.1).unwrap();
    let g = vec![Tensor::from_host(&be, &[0.5, 0.25], [2]).unwrap()];
    // Step 1: d = g + wd p = [0.6, 0.05]; buf = d; p -= lr buf (lr 0.1)
    opt.step(&be, &mut p, &g, 0.1, None).unwrap();
    let p1 = p.get(nasrs::autograd::ParamId(0)).to_host(&be).unwrap();
    let want1 = [1.0 - 0.06, -2.0 - 0.005];
    // Step 2: d = g + wd p1; buf = 0.9 buf + d; p -= lr buf
    opt.step(&be, &mut p, &g, 0.1, None).unwrap();
    let p2 = p.get(nasrs::autograd::ParamId(0)).to_host(&be).unwrap();
    for i in 0..2 {
        assert!((p1[i] - want1[i]).abs() < 1e-12);
        let d1 = [0.6, 0.05][i];
        let d2 = [0.5, 0.25][i] + 0.1 * want1[i];
        let buf = 0.9 * d1 + d2;
        assert!(
            (p2[i] - (want1[i] - 0.1 * buf)).abs() < 1e-12,
            "{i}: {} vs {}",
            p2[i],
            want1[i] - 0.1 * buf
        );
    }
}

/// PyTorch's `SGD(nesterov=True)`: d = s g + wd p; buf = mu buf + d; p -= lr (d + mu buf),
/// with and without a device-side gradient scale s (the fused clip coefficient).
#[test]
fn sgd_nesterov_matches_pytorch_formula() {
    let be = B::default();
    let scale = be.upload(&[0.0, 0.5]).unwrap();
    for s in [None, Some(0.5)] {
        let mut p = store(&be, &[1.0, -2.0]);
        let mut opt = Sgd::new(&be, &p, 0.9, 0.1).unwrap().with_nesterov(true);
        let g = [0.5, 0.25];
        let grads = vec![Tensor::from_host(&be, &g, [2]).unwrap()];
        let (mut w, mut buf) = ([1.0f64, -2.0], [0.0f64; 2]);
        for step in 0..3 {
            let gs = s.map(|_| ScalarRef {
                buf: &scale,
                index: 1,
            });
            opt.step(&be, &mut p, &grads, 0.1, gs).unwrap();
            let got = p.get(nasrs::autograd::ParamId(0)).to_host(&be).unwrap();
            for i in 0..2 {
                let d = s.unwrap_or(1.0) * g[i] + 0.1 * w[i];
                buf[i] = 0.9 * buf[i] + d;
                w[i] -= 0.1 * (d + 0.9 * buf[i]);
                assert!(
                    (got[i] - w[i]).abs() < 1e-14,
                    "scale {s:?} step {step} [{i}]: {} vs {}",
                    got[i],
                    w[i]
                );
            }
        }
        let m = opt
            .state
            .get(nasrs::autograd::ParamId(0))
            .to_host(&be)
            .unwrap();
        assert!((m[0] - buf[0]).abs() < 1e-14 && (m[1] - buf[1]).abs() < 1e-14);
    }
}

#[test]
fn adam_bias_correction_and_weight_decay_match_pytorch_formula() {
    let be = B::default();
    let mut p = store(&be, &[0.3]);
    let mut opt = Adam::new(&be, &p, (0.5, 0.999), 1e-8, 1e-3).unwrap();
    let (mut m, mut v, mut w) = (0.0f64, 0.0f64, 0.3f64);
    for step in 1..=3 {
        let gval = 0.2 * step as f64;
        opt.step(
            &be,
            &mut p,
            &[Tensor::from_host(&be, &[gval], [1]).unwrap()],
            3e-4,
        )
        .unwrap();
        let g = gval + 1e-3 * w;
        m = 0.5 * m + 0.5 * g;
        v = 0.999 * v + 0.001 * g * g;
        let bc1 = 1.0 - 0.5f64.powi(step);
        let bc2 = 1.0 - 0.999f64.powi(step);
        w -= 3e-4 / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-8);
        let got = p.get(nasrs::autograd::ParamId(0)).to_host(&be).unwrap()[0];
        assert!((got - w).abs() < 1e-14, "step {step}: {got} vs {w}");
    }
}

#[test]
fn clip_grad_norm_scales_only_when_needed() {
    let be = B::default();
    let mut g = vec![
        Tensor::from_host(&be, &[3.0, 0.0], [2]).unwrap(),
        Tensor::from_host(&be, &[4.0], [1]).unwrap(),
    ];
    let norm = clip_grad_norm(&be, &mut g, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-12);
    let a = g[0].to_host(&be).unwrap();
    assert!((a[0] - 3.0 / (5.0 + 1e-6)).abs() < 1e-12);
    let mut small = vec![Tensor::from_host(&be, &[0.1], [1]).unwrap()];
    clip_grad_norm(&be, &mut small, 1.0).unwrap();
    assert_eq!(small[0].to_host(&be).unwrap(), vec![0.1]);
}

/// Clipping fused into the update (the coefficient read from the device-side norm scalars)
/// equals clipping the gradients first and then stepping, and the scalars hold the norm,
/// its inverse and `min(1, max_norm / (norm + 1e-6))`.
#[test]
fn clip_inside_sgd_equals_clip_then_sgd() {
    let be = B::default();
    let grads = || {
        vec![
            Tensor::from_host(&be, &[3.0, 0.0], [2]).unwrap(),
            Tensor::from_host(&be, &[4.0], [1]).unwrap(),
        ]
    };
    let params = || {
        let mut s = ParamStore::new();
        s.add("a", Tensor::from_host(&be, &[1.0, -2.0], [2]).unwrap());
        s.add("b", Tensor::from_host(&be, &[0.5], [1]).unwrap());
        s
    };
    for max_norm in [1.0, 100.0] {
        let (mut fused, mut plain) = (params(), params());
        let mut opt_fused = Sgd::new(&be, &fused, 0.9, 3e-4).unwrap();
        let mut opt_plain = Sgd::new(&be, &plain, 0.9, 3e-4).unwrap();
        for _ in 0..2 {
            let g = grads();
            let norms = grad_norm_scalars(&be, &g, max_norm).unwrap();
            let host = be.download(&norms).unwrap();
            assert!((host[norm_scalars::NORM] - 5.0).abs() < 1e-12);
            assert!((host[norm_scalars::INV_NORM] - 0.2).abs() < 1e-12);
            let coef = (max_norm / (5.0 + 1e-6)).min(1.0);
            assert!((host[norm_scalars::CLIP_COEF] - coef).abs() < 1e-15);
            let clip = ScalarRef {
                buf: &norms,
                index: norm_scalars::CLIP_COEF,
            };
            opt_fused
                .step(&be, &mut fused, &g, 0.1, Some(clip))
                .unwrap();
            let mut g = grads();
            clip_grad_norm(&be, &mut g, max_norm).unwrap();
            opt_plain.step(&be, &mut plain, &g, 0.1, None).unwrap();
        }
        for id in fused.ids() {
            let (a, b) = (
                fused.get(id).to_host(&be).unwrap(),
                plain.get(id).to_host(&be).unwrap(),
            );
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-14, "max_norm {max_norm}: {a:?} vs {b:?}");
            }
        }
    }
    let zero = vec![Tensor::from_host(&be, &[0.0, 0.0], [2]).unwrap()];
    let host = be
        .download(&grad_norm_scalars(&be, &zero, 5.0).unwrap())
        .unwrap();
    assert_eq!(
        host[norm_scalars::INV_NORM],
        0.0,
        "a zero norm has a zero inverse"
    );
}

#[test]
fn cosine_schedule_endpoints_and_midpoint() {
    assert!((cosine_lr(0.025, 0.001, 0, 50) - 0.025).abs() < 1e-15);
    assert!((cosine_lr(0.025, 0.001, 50, 50) - 0.001).abs() < 1e-15);
    assert!((cosine_lr(0.025, 0.001, 25, 50) - 0.013).abs() < 1e-12);
}

/// Tensor lengths for the multi-tensor checks: an empty tensor, tiny odd ones (grouped into
/// one rayon task), one exactly a task long, and long ones split across tasks.
const LENS: [usize; 9] = [7, 0, 1, 32_768, 3, 70_001, 1000, 32_769, 5];

fn randn<T: Element>(rng: &mut nasrs::rng::Rng, len: usize) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.normal())).collect()
}

fn bits<T: Element>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// `sgd_step_many` and `adam_step_many` on the CPU are bitwise the per-tensor ops, with and
/// without a device gradient scale, over several steps (momentum and moments carried).
fn multi_tensor_updates_are_bitwise_per_tensor<T: Element>() {
    let be = Cpu::<T>::with_element();
    let mut rng = nasrs::rng::Rng::new(7);
    let mk = |rng: &mut nasrs::rng::Rng| -> Vec<Vec<T>> {
        LENS.iter().map(|&l| randn(rng, l)).collect()
    };
    let (p0, g, b0) = (mk(&mut rng), mk(&mut rng), mk(&mut rng));
    let gref: Vec<&Vec<T>> = g.iter().collect();
    let hp = SgdStep {
        lr: 0.025,
        momentum: 0.9,
        weight_decay: 3e-4,
    };
    let scale = vec![T::ZERO, T::from_f64(0.37), T::ZERO];
    for scaled in [false, true] {
        let gs = || {
            scaled.then_some(ScalarRef {
                buf: &scale,
                index: 1,
            })
        };
        let (mut p1, mut b1) = (p0.clone(), b0.clone());
        let (mut p2, mut b2) = (p0.clone(), b0.clone());
        for _ in 0..3 {
            for ((p, g), b) in p1.iter_mut().zip(&g).zip(b1.iter_mut()) {
                be.sgd_step(p, g, b, &hp, gs()).unwrap();
            }
            let mut pm: Vec<&mut Vec<T>> = p2.iter_mut().collect();
            let mut bm: Vec<&mut Vec<T>> = b2.iter_mut().collect();
            be.sgd_step_many(&mut pm, &gref, &mut bm, &hp, gs())
                .unwrap();
        }
        for i in 0..LENS.len() {
            assert_eq!(bits(&p1[i]), bits(&p2[i]), "{} sgd param {i}", T::NAME);
            assert_eq!(bits(&b1[i]), bits(&b2[i]), "{} sgd momentum {i}", T::NAME);
        }
        assert_ne!(bits(&p1[0]), bits(&p0[0]), "the update moved the weights");
    }

    let zeros = || -> Vec<Vec<T>> { LENS.iter().map(|&l| vec![T::ZERO; l]).collect() };
    let (mut p1, mut m1, mut v1) = (p0.clone(), zeros(), zeros());
    let (mut p2, mut m2, mut v2) = (p0.clone(), zeros(), zeros());
    for step in 1..=3 {
        let hp = AdamStep {
            lr: 3e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-3,
            step,
        };
        for (((p, g), m), v) in p1.iter_mut().zip(&g).zip(m1.iter_mut()).zip(v1.iter_mut()) {
            be.adam_step(p, g, m, v, &hp).unwrap();
        }
        let mut pm: Vec<&mut Vec<T>> = p2.iter_mut().collect();
        let mut mm: Vec<&mut Vec<T>> = m2.iter_mut().collect();
        let mut vm: Vec<&mut Vec<T>> = v2.iter_mut().collect();
        be.adam_step_many(&mut pm, &gref, &mut mm, &mut vm, &hp)
            .unwrap();
    }
    for i in 0..LENS.len() {
        assert_eq!(bits(&p1[i]), bits(&p2[i]), "{} adam param {i}", T::NAME);
        assert_eq!(bits(&m1[i]), bits(&m2[i]), "{} adam m {i}", T::NAME);
        assert_eq!(bits(&v1[i]), bits(&v2[i]), "{} adam v {i}", T::NAME);
    }

    // The norm: one pass over every buffer, bitwise the per-buffer sums added in order.
    let mut sq = 0.0;
    for x in &g {
        sq += be.sum_squares(x).unwrap();
    }
    let many = be.sum_squares_many(&gref).unwrap();
    assert_eq!(many.to_bits(), sq.to_bits(), "{}", T::NAME);
    let norms = be.grad_norm_scalars(&gref, 5.0).unwrap();
    assert_eq!(
        norms[norm_scalars::NORM].to_f64(),
        T::from_f64(sq.sqrt()).to_f64()
    );
    assert_eq!(be.sum_squares_many(&[]).unwrap(), 0.0);
}

#[test]
fn multi_tensor_updates_are_bitwise_per_tensor_f32() {
    multi_tensor_updates_are_bitwise_per_tensor::<f32>();
}

#[test]
fn multi_tensor_updates_are_bitwise_per_tensor_f64() {
    multi_tensor_updates_are_bitwise_per_tensor::<f64>();
}

/// Lists of different lengths, or a tensor whose operands disagree, are shape errors
/// naming the op, on the CPU and on the counting device alike.
#[test]
fn multi_tensor_updates_reject_mismatched_lists() {
    let be = Cpu::new();
    let hp = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let (mut p, g, mut b) = (vec![0.0f32; 3], vec![0.0f32; 3], vec![0.0f32; 3]);
    let short = vec![0.0f32; 2];
    let e = be
        .sgd_step_many(&mut [&mut p], &[&g, &g], &mut [&mut b], &hp, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sgd_step_many") && e.contains("1 and 2"), "{e}");
    let e = be
        .sgd_step_many(&mut [&mut p], &[&short], &mut [&mut b], &hp, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sgd_step_many"), "{e}");
    let c = nasrs::backend::counting::Counting::new();
    let (mut cp, cg) = (c.zeros(3).unwrap(), c.zeros(2).unwrap());
    let mut cb = c.zeros(3).unwrap();
    let e = c
        .sgd_step_many(&mut [&mut cp], &[&cg], &mut [&mut cb], &hp, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sgd_step_many"), "{e}");
}

/// `Sgd::step` (now one multi-tensor op) still refuses a weight a tape still shares, naming it.
#[test]
fn sgd_step_names_a_shared_weight() {
    let be = B::default();
    let mut p = store(&be, &[1.0, 2.0]);
    let mut opt = Sgd::new(&be, &p, 0.9, 0.0).unwrap();
    let held = p.get(nasrs::autograd::ParamId(0)).clone();
    let g = vec![Tensor::from_host(&be, &[0.5, 0.25], [2]).unwrap()];
    let e = opt
        .step(&be, &mut p, &g, 0.1, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains('w') && e.contains("shared"), "{e}");
    drop(held);
    opt.step(&be, &mut p, &g, 0.1, None).unwrap();
}
