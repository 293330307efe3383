//! The activations and the product the LSTM controller is built of (`sigmoid`, `tanh`,
//! `silu`, `mul`: forward and backward) on every device against the CPU reference
//! (`test_device!`), on fresh random inputs at odd sizes with NaN, infinities and saturating
//! values mixed in (NaN must stay NaN, as in PyTorch); what the counting backend counts (the
//! SE channel scale too); and the tape's seeded dropout.

mod common;

use common::{assert_close_values, randn, TOL};
use nasrs::backend::counting::Counting;
use nasrs::backend::prelude::*;
use nasrs::{Cpu, Result, Rng};

/// Normal draws of scale 3 (so the sigmoid and tanh saturate in places) with the values
/// where the formulas could go wrong at fixed places: NaN, both infinities, -100 (`exp(100)`
/// overflows f32), +-30 and both zeros.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -100.0,
        100.0,
        -30.0,
        30.0,
        0.0,
        -0.0,
    ];
    let mut x: Vec<f32> = randn(rng, n).into_iter().map(|v| 3.0 * v).collect();
    for (i, &s) in specials.iter().enumerate() {
        if let Some(v) = x.get_mut(i * 11) {
            *v = s;
        }
    }
    x
}

fn activations<B: Backend<Elem = f32>>(be: &B) -> Result<()> {
    let cpu = Cpu::new();
    let mut rng = Rng::new(41);
    for n in [1, 7 * 13, 10_007] {
        let (x, dy) = (inputs(&mut rng, n), randn(&mut rng, n));
        let (bx, bdy) = (be.upload(&x)?, be.upload(&dy)?);
        let check = |what: &str, got: &B::Storage, want: &Vec<f32>| -> Result<()> {
            assert_close_values(&format!("{what} (n {n})"), &be.download(got)?, want, TOL);
            Ok(())
        };
        let y = cpu.sigmoid_fwd(&x)?;
        check("sigmoid_fwd", &be.sigmoid_fwd(&bx)?, &y)?;
        // Backward from the CPU's output on both devices: the op alone is compared.
        check(
            "sigmoid_bwd",
            &be.sigmoid_bwd(&be.upload(&y)?, &bdy)?,
            &cpu.sigmoid_bwd(&y, &dy)?,
        )?;
        let y = cpu.tanh_fwd(&x)?;
        check("tanh_fwd", &be.tanh_fwd(&bx)?, &y)?;
        check(
            "tanh_bwd",
            &be.tanh_bwd(&be.upload(&y)?, &bdy)?,
            &cpu.tanh_bwd(&y, &dy)?,
        )?;
        check("silu_fwd", &be.silu_fwd(&bx)?, &cpu.silu_fwd(&x)?)?;
        check(
            "silu_bwd",
            &be.silu_bwd(&bx, &bdy)?,
            &cpu.silu_bwd(&x, &dy)?,
        )?;
        check("mul", &be.mul(&bx, &bdy)?, &cpu.mul(&x, &dy)?)?;
    }
    Ok(())
}
test_device!(activations_match_the_cpu, activations);

#[test]
fn nan_stays_nan_and_values_are_the_definitions() {
    let cpu = Cpu::new();
    let x = vec![f32::NAN, 0.0, 2.0, -2.0, f32::INFINITY, f32::NEG_INFINITY];
    let s = cpu.sigmoid_fwd(&x).unwrap();
    let t = cpu.tanh_fwd(&x).unwrap();
    let si = cpu.silu_fwd(&x).unwrap();
    assert!(s[0].is_nan() && t[0].is_nan() && si[0].is_nan());
    for i in 1..4 {
        let v = x[i] as f64;
        let sig = 1.0 / (1.0 + (-v).exp());
        assert!((s[i] as f64 - sig).abs() < 1e-7, "sigmoid({v})");
        assert!((t[i] as f64 - v.tanh()).abs() < 1e-7, "tanh({v})");
        assert!((si[i] as f64 - v * sig).abs() < 1e-6, "silu({v})");
    }
    assert_eq!((s[4], s[5], t[4], t[5]), (1.0, 0.0, 1.0, -1.0));
    // PyTorch: silu(inf) = inf, silu(-inf) = -inf / inf = NaN.
    assert!(si[4] == f32::INFINITY && si[5].is_nan());
    let p = cpu.mul(&vec![f32::NAN, 2.0], &vec![0.0, 3.0]).unwrap();
    assert!(p[0].is_nan() && p[1] == 6.0);
}

#[test]
fn the_counting_backend_counts_the_new_ops() {
    let c = Counting::new();
    let x = c.upload(&[0.0f32; 10]).unwrap();
    let y = c.sigmoid_fwd(&x).unwrap();
    c.sigmoid_bwd(&y, &x).unwrap();
    c.tanh_fwd(&x).unwrap();
    c.tanh_bwd(&y, &x).unwrap();
    c.silu_fwd(&x).unwrap();
    c.silu_bwd(&x, &y).unwrap();
    c.mul(&x, &y).unwrap();
    let xd = nasrs::Nchw {
        n: 1,
        c: 2,
        h: 1,
        w: 5,
    };
    let s = c.upload(&[0.0f32; 2]).unwrap();
    c.channel_scale_fwd(&x, xd, &s).unwrap();
    c.channel_scale_bwd(&x, &s, &y, xd).unwrap();
    let ops = c.snapshot().unwrap().ops;
    let flops = |op: &str| ops.get(op).map(|o| (o.calls, o.flops, o.bytes_read));
    assert_eq!(flops("sigmoid_fwd"), Some((1, 40, 40)));
    assert_eq!(flops("sigmoid_bwd"), Some((1, 30, 80)));
    assert_eq!(flops("tanh_fwd"), Some((1, 10, 40)));
    assert_eq!(flops("tanh_bwd"), Some((1, 30, 80)));
    assert_eq!(flops("silu_fwd"), Some((1, 40, 40)));
    assert_eq!(flops("silu_bwd"), Some((1, 90, 80)));
    assert_eq!(flops("mul"), Some((1, 10, 80)));
    assert_eq!(flops("channel_scale_fwd"), Some((1, 10, 48)));
    assert_eq!(flops("channel_scale_bwd"), Some((1, 30, 88)));
}

/// Dropout: the same seed gives the same mask on every call, kept values are scaled by
/// 1 / (1 - p), about p of them are dropped, and p = 0 is the identity.
#[test]
fn dropout_is_seeded_inverted_dropout() {
    use nasrs::autograd::Tape;
    use nasrs::{Shape, Tensor};
    let be = Cpu::<f32>::new();
    let run = |p: f64, seed: u64| {
        let mut t = Tape::new(be.clone());
        let x = Tensor::from_host(&be, &vec![1.0f32; 10_000], Shape::new(&[100, 100])).unwrap();
        let x = t.constant(x);
        let y = t.dropout(x, p, &mut Rng::new(seed)).unwrap();
        t.value(y).unwrap().to_host(&be).unwrap()
    };
    let a = run(0.3, 7);
    assert_eq!(a, run(0.3, 7));
    assert_ne!(a, run(0.3, 8));
    let kept = a.iter().filter(|&&v| v != 0.0).count();
    assert!((6700..7300).contains(&kept), "{kept} of 10000 kept");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    assert!(run(0.0, 7).iter().all(|&v| v == 1.0));
    let mut t = Tape::new(be.clone());
    let x = t.constant(Tensor::from_host(&be, &[1.0f32], Shape::new(&[1])).unwrap());
    assert!(t.dropout(x, 1.0, &mut Rng::new(0)).is_err());
}
