//! Optimizers against hand-computed PyTorch semantics, clipping and the cosine schedule.
//! (The PyTorch fixtures in tests/torch_parity.rs check the same updates against torch itself.)

use nasrs::autograd::ParamStore;
use nasrs::optim::{clip_grad_norm, cosine_lr, Adam, Sgd};
use nasrs::{Cpu, Tensor};

type B = Cpu<f64>;

fn store(be: &B, v: &[f64]) -> ParamStore<B> {
    let mut s = ParamStore::new();
    s.add("w", Tensor::from_host(be, v, [v.len()]).unwrap());
    s
}

#[test]
fn sgd_momentum_weight_decay_matches_pytorch_formula() {
    let be = B::new();
    let mut p = store(&be, &[1.0, -2.0]);
    let mut opt = Sgd::new(&be, &p, 0.9, 0.1).unwrap();
    let g = vec![Tensor::from_host(&be, &[0.5, 0.25], [2]).unwrap()];
    // Step 1: d = g + wd p = [0.6, 0.05]; buf = d; p -= lr buf (lr 0.1)
    opt.step(&be, &mut p, &g, 0.1).unwrap();
    let p1 = p.get(nasrs::autograd::ParamId(0)).to_host(&be).unwrap();
    let want1 = [1.0 - 0.06, -2.0 - 0.005];
    // Step 2: d = g + wd p1; buf = 0.9 buf + d; p -= lr buf
    opt.step(&be, &mut p, &g, 0.1).unwrap();
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

#[test]
fn adam_bias_correction_and_weight_decay_match_pytorch_formula() {
    let be = B::new();
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
    let be = B::new();
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

#[test]
fn cosine_schedule_endpoints_and_midpoint() {
    assert!((cosine_lr(0.025, 0.001, 0, 50) - 0.025).abs() < 1e-15);
    assert!((cosine_lr(0.025, 0.001, 50, 50) - 0.001).abs() < 1e-15);
    assert!((cosine_lr(0.025, 0.001, 25, 50) - 0.013).abs() < 1e-12);
}
