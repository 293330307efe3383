//! The accumulating backward ops (`conv2d_bwd_data_into`, `max_pool2d_bwd_into`,
//! `avg_pool2d_bwd_into`, `mixed_op_bwd_into` and its dalpha-less `mixed_op_bwd_dx`:
//! `dx += gradient`) against the fresh op plus an
//! `axpy`, on the CPU in f64 (1e-12 relative) and f32 (1e-6), at odd shapes, stride 2,
//! dilation 2 and with the fused ReLU (whose mask must touch the contribution only); and
//! that the tape routes a value's later consumers to them, so a DARTS-like graph needs no
//! `axpy` at all on the counting device.
//!
//! On every device (`test_device!`): the same cases against the device's own fresh op plus
//! `axpy` (1e-6 relative, the fused ReLU's mask leaving the accumulator bit for bit), and
//! every accumulated result equal to the CPU's (1e-4 on the selftest measure).

mod common;

use common::{assert_close, Outputs, TOL};
use nasrs::autograd::Tape;
use nasrs::backend::counting::Counting;
use nasrs::backend::cpu::Cpu;
use nasrs::backend::prelude::*;
use nasrs::backend::Element;
use nasrs::{Backend, Conv2dSpec, Nchw, Pool2dSpec, Rng, Tensor};

fn randn<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.normal())).collect()
}

/// Largest `|got - want| / (|dx0| + |fresh| + 1e-3)`: the error relative to the size of what
/// was summed (adding taps into the accumulator one by one rounds differently from adding
/// their sum, which matters only where the two cancel).
fn rel_err<T: Element>(got: &[T], want: &[T], dx0: &[T], fresh: &[T]) -> f64 {
    assert_eq!(got.len(), want.len());
    (0..got.len())
        .map(|i| {
            let scale = dx0[i].to_f64().abs() + fresh[i].to_f64().abs() + 1e-3;
            (got[i].to_f64() - want[i].to_f64()).abs() / scale
        })
        .fold(0.0, f64::max)
}

fn conv(cin: usize, cout: usize, k: usize, s: usize, p: usize, d: usize, g: usize) -> Conv2dSpec {
    Conv2dSpec::new(cin, cout, k)
        .stride(s)
        .padding(p)
        .dilation(d)
        .groups(g)
}

/// Depthwise (stride 2, dilation 2, k5), dense 3x3, 1x1 direct, 1x1 stride 2, grouped; each
/// plain and with the fused ReLU.
fn conv_cases() -> Vec<(Nchw, Conv2dSpec)> {
    let n = |n, c, h, w| Nchw { n, c, h, w };
    let plain = [
        (n(2, 3, 9, 7), conv(3, 3, 3, 1, 1, 1, 3)),
        (n(2, 3, 9, 7), conv(3, 3, 3, 2, 1, 1, 3)),
        (n(1, 4, 11, 6), conv(4, 4, 3, 2, 2, 2, 4)),
        (n(2, 3, 9, 7), conv(3, 3, 5, 1, 4, 2, 3)),
        (n(2, 3, 7, 5), conv(3, 5, 3, 1, 1, 1, 1)),
        (n(3, 5, 5, 7), conv(5, 4, 1, 1, 0, 1, 1)),
        (n(2, 4, 7, 7), conv(4, 3, 1, 2, 0, 1, 1)),
        (n(2, 4, 9, 8), conv(4, 6, 3, 2, 1, 1, 2)),
    ];
    plain
        .iter()
        .copied()
        .chain(plain.iter().map(|&(xd, s)| (xd, s.relu_input())))
        .collect()
}

fn pool_cases() -> Vec<(Nchw, Pool2dSpec)> {
    [
        (2, 3, 7, 6, 1),
        (2, 3, 7, 6, 2),
        (1, 4, 5, 7, 2),
        (3, 2, 9, 9, 1),
    ]
    .iter()
    .map(|&(n, c, h, w, stride)| {
        (
            Nchw { n, c, h, w },
            Pool2dSpec {
                kernel: 3,
                stride,
                padding: 1,
            },
        )
    })
    .collect()
}

/// `dx0 + fresh` (what the tape did before: a fresh gradient `axpy`'d into the pending one).
fn fresh_plus<T: Element>(be: &Cpu<T>, dx0: &[T], fresh: &Vec<T>) -> Vec<T> {
    let mut want = dx0.to_vec();
    be.axpy(&mut want, 1.0, fresh).unwrap();
    want
}

fn into_matches_fresh_plus_axpy<T: Element>(tol: f64) {
    let be = Cpu::<T>::with_element();
    let mut rng = Rng::new(11);
    for (xd, spec) in conv_cases() {
        let yd = spec.output(xd).unwrap();
        let x: Vec<T> = randn(&mut rng, xd.numel());
        let w: Vec<T> = randn(&mut rng, spec.weight_shape().numel());
        let dy: Vec<T> = randn(&mut rng, yd.numel());
        let dx0: Vec<T> = randn(&mut rng, xd.numel());
        let fresh = be.conv2d_bwd_data(&x, &dy, &w, xd, &spec).unwrap();
        let want = fresh_plus(&be, &dx0, &fresh);
        let mut got = dx0.clone();
        be.conv2d_bwd_data_into(&x, &dy, &w, xd, &spec, &mut got)
            .unwrap();
        let e = rel_err(&got, &want, &dx0, &fresh);
        assert!(e <= tol, "conv2d_bwd_data_into {xd:?} {spec:?}: {e:e}");
        if spec.relu_input {
            // Where x <= 0 the pending gradient passes through untouched (not masked).
            for i in 0..x.len() {
                if x[i] <= T::ZERO {
                    assert_eq!(got[i], dx0[i], "fused ReLU mask touched the accumulator");
                }
            }
        }
    }
    for (xd, spec) in pool_cases() {
        let yd = spec.output(xd, "pool").unwrap();
        let x: Vec<T> = randn(&mut rng, xd.numel());
        let dy: Vec<T> = randn(&mut rng, yd.numel());
        let dx0: Vec<T> = randn(&mut rng, xd.numel());
        let fresh = be.max_pool2d_bwd(&x, &dy, xd, &spec).unwrap();
        let want = fresh_plus(&be, &dx0, &fresh);
        let mut got = dx0.clone();
        be.max_pool2d_bwd_into(&x, &dy, xd, &spec, &mut got)
            .unwrap();
        let e = rel_err(&got, &want, &dx0, &fresh);
        assert!(e <= tol, "max_pool2d_bwd_into {xd:?} {spec:?}: {e:e}");
        let fresh = be.avg_pool2d_bwd(&dy, xd, &spec).unwrap();
        let want = fresh_plus(&be, &dx0, &fresh);
        let mut got = dx0.clone();
        be.avg_pool2d_bwd_into(&dy, xd, &spec, &mut got).unwrap();
        let e = rel_err(&got, &want, &dx0, &fresh);
        assert!(e <= tol, "avg_pool2d_bwd_into {xd:?} {spec:?}: {e:e}");
    }
    // MixedOp: K 6, input 0 absent, inputs 1 and 4 accumulated, 2 fresh, 3 and 5 unwanted
    // (5 has an accumulator it must leave alone).
    let len = 5 * 7 * 13;
    let xs: Vec<Vec<T>> = (0..6).map(|_| randn(&mut rng, len)).collect();
    let alpha: Vec<T> = randn(&mut rng, 6);
    let dy: Vec<T> = randn(&mut rng, len);
    let refs: Vec<Option<&Vec<T>>> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| (i != 0).then_some(x))
        .collect();
    let need = [true, true, true, false, true, false];
    let (fresh, fresh_da) = be.mixed_op_bwd(&dy, &refs, &alpha, len, &need).unwrap();
    let mut accs: Vec<Vec<T>> = (0..6).map(|_| randn(&mut rng, len)).collect();
    let before = accs.clone();
    let (got, got_da) = {
        let mut acc: Vec<Option<&mut Vec<T>>> = accs
            .iter_mut()
            .enumerate()
            .map(|(i, a)| [0, 1, 4, 5].contains(&i).then_some(a))
            .collect();
        be.mixed_op_bwd_into(&dy, &refs, &alpha, len, &need, &mut acc)
            .unwrap()
    };
    assert_eq!(got_da, fresh_da, "dalpha does not depend on accumulation");
    // Without dalpha (a weight step): the same input gradients, bit for bit.
    let mut accs_dx = before.clone();
    let got_dx = {
        let mut acc: Vec<Option<&mut Vec<T>>> = accs_dx
            .iter_mut()
            .enumerate()
            .map(|(i, a)| [0, 1, 4, 5].contains(&i).then_some(a))
            .collect();
        be.mixed_op_bwd_dx(&dy, &refs, &alpha, len, &need, &mut acc)
            .unwrap()
    };
    assert_eq!(
        got_dx, got,
        "mixed_op_bwd_dx returns what mixed_op_bwd_into does"
    );
    assert_eq!(
        accs_dx, accs,
        "mixed_op_bwd_dx accumulates as mixed_op_bwd_into does"
    );
    for i in 0..6 {
        match i {
            1 | 4 => {
                assert!(got[i].is_none(), "dx[{i}] accumulated, not returned");
                let f = fresh[i].as_ref().unwrap();
                let want = fresh_plus(&be, &before[i], f);
                let e = rel_err(&accs[i], &want, &before[i], f);
                assert!(e <= tol, "mixed_op_bwd_into dx[{i}]: {e:e}");
            }
            2 => assert_eq!(got[2], fresh[2], "dx[2] has no accumulator: fresh"),
            _ => {
                assert!(got[i].is_none(), "dx[{i}] not wanted or absent");
                assert_eq!(accs[i], before[i], "accumulator {i} left alone");
            }
        }
    }
}

#[test]
fn into_ops_match_fresh_plus_axpy_f64() {
    into_matches_fresh_plus_axpy::<f64>(1e-12);
}

#[test]
fn into_ops_match_fresh_plus_axpy_f32() {
    into_matches_fresh_plus_axpy::<f32>(1e-6);
}

/// A cell state feeding a DARTS edge's consumers (two pools, identity via the MixedOp, two
/// fused depthwise convs) and a 1x1 preprocessing conv, summed with the state itself: every
/// consumer after the first adds into the pending gradient, so no `axpy` is left and each
/// `_into` op runs.
#[test]
fn tape_routes_later_consumers_to_the_into_ops() {
    let be = Counting::new();
    let mut tape = Tape::new(be.clone());
    let up = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        Tensor::from_host(&be, &vec![0.5f32; n], shape).unwrap()
    };
    let x = tape.leaf(up(&[2, 4, 8, 8]), true);
    let w1 = tape.leaf(up(&[4, 1, 3, 3]), true);
    let w2 = tape.leaf(up(&[4, 1, 5, 5]), true);
    let wp = tape.leaf(up(&[4, 4, 1, 1]), true);
    let alpha = tape.leaf(up(&[6]), true);
    let pool = Pool2dSpec {
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let relu = |s: Conv2dSpec| s.relu_input();
    let ops = [
        tape.max_pool2d(x, pool).unwrap(),
        tape.avg_pool2d(x, pool).unwrap(),
        tape.conv2d(x, w1, relu(conv(4, 4, 3, 1, 1, 1, 4))).unwrap(),
        tape.conv2d(x, w2, relu(conv(4, 4, 5, 1, 4, 2, 4))).unwrap(),
    ];
    let pre = tape.conv2d(x, wp, relu(conv(4, 4, 1, 1, 0, 1, 1))).unwrap();
    let m = tape
        .mixed_op(
            &[
                None,
                Some(ops[0]),
                Some(ops[1]),
                Some(x),
                Some(ops[2]),
                Some(ops[3]),
            ],
            alpha,
        )
        .unwrap();
    let s = tape.add(m, pre).unwrap();
    let y = tape.add(s, x).unwrap();
    be.reset().unwrap();
    let dy = be.fill(tape.shape(y).numel(), 1.0).unwrap();
    let grads = tape.backward_with(y, dy).unwrap();
    assert!(grads.get(x).is_some());
    let c = be.snapshot().unwrap();
    let calls = |op: &str| c.ops.get(op).map_or(0, |o| o.calls);
    // Backward order: the last add hands x's first gradient (a copy of dy), then each
    // consumer of x adds into it: the preprocessing conv, the MixedOp's identity, the two
    // depthwise convs, the two pools.
    assert_eq!(calls("axpy"), 0, "{:?}", c.ops);
    assert_eq!(calls("conv2d_bwd_data_into"), 3);
    assert_eq!(calls("conv2d_bwd_data"), 0);
    assert_eq!(calls("max_pool2d_bwd_into"), 1);
    assert_eq!(calls("avg_pool2d_bwd_into"), 1);
    assert_eq!(calls("mixed_op_bwd_into"), 1);
    assert_eq!(calls("mixed_op_bwd"), 0);
    // The adds: dy copied once per parent that had no gradient pending (m, pre, s, x).
    assert_eq!(calls("copy"), 4);
}

/// `dx0 + fresh` on the device (the fresh gradient `axpy`'d into the pending one).
fn fresh_plus_on<B: Backend<Elem = f32>>(
    be: &B,
    dx0: &B::Storage,
    fresh: &B::Storage,
) -> nasrs::Result<Vec<f32>> {
    let mut want = be.copy(dx0)?;
    be.axpy(&mut want, 1.0, fresh)?;
    be.download(&want)
}

/// Every `_into` case of `into_matches_fresh_plus_axpy` on a device, checked there against
/// the fresh op plus `axpy` (1e-6); returns the accumulated results.
fn into_ops_on<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Outputs> {
    const TIGHT: f64 = 1e-6;
    let mut rng = Rng::new(11);
    let mut out = Outputs::default();
    let host = |rng: &mut Rng, n: usize| -> Vec<f32> { randn(rng, n) };
    for (i, (xd, spec)) in conv_cases().into_iter().enumerate() {
        let yd = spec.output(xd)?;
        let x = host(&mut rng, xd.numel());
        let (w, dy) = (
            host(&mut rng, spec.weight_shape().numel()),
            host(&mut rng, yd.numel()),
        );
        let dx0 = host(&mut rng, xd.numel());
        let (xb, wb, dyb, dx0b) = (
            be.upload(&x)?,
            be.upload(&w)?,
            be.upload(&dy)?,
            be.upload(&dx0)?,
        );
        let fresh = be.conv2d_bwd_data(&xb, &dyb, &wb, xd, &spec)?;
        let want = fresh_plus_on(be, &dx0b, &fresh)?;
        let mut acc = be.copy(&dx0b)?;
        be.conv2d_bwd_data_into(&xb, &dyb, &wb, xd, &spec, &mut acc)?;
        let got = be.download(&acc)?;
        let e = rel_err(&got, &want, &dx0, &be.download(&fresh)?);
        assert!(e <= TIGHT, "conv2d_bwd_data_into {xd:?} {spec:?}: {e:e}");
        if spec.relu_input {
            for j in 0..x.len() {
                if x[j] <= 0.0 {
                    assert_eq!(got[j], dx0[j], "fused ReLU mask touched the accumulator");
                }
            }
        }
        out.push(format!("conv2d_bwd_data_into[{i}]"), got);
    }
    for (i, (xd, spec)) in pool_cases().into_iter().enumerate() {
        let yd = spec.output(xd, "pool")?;
        let x = host(&mut rng, xd.numel());
        let dy = host(&mut rng, yd.numel());
        let dx0 = host(&mut rng, xd.numel());
        let (xb, dyb, dx0b) = (be.upload(&x)?, be.upload(&dy)?, be.upload(&dx0)?);
        let fresh = be.max_pool2d_bwd(&xb, &dyb, xd, &spec)?;
        let want = fresh_plus_on(be, &dx0b, &fresh)?;
        let mut acc = be.copy(&dx0b)?;
        be.max_pool2d_bwd_into(&xb, &dyb, xd, &spec, &mut acc)?;
        let got = be.download(&acc)?;
        let e = rel_err(&got, &want, &dx0, &be.download(&fresh)?);
        assert!(e <= TIGHT, "max_pool2d_bwd_into {xd:?} {spec:?}: {e:e}");
        out.push(format!("max_pool2d_bwd_into[{i}]"), got);
        let fresh = be.avg_pool2d_bwd(&dyb, xd, &spec)?;
        let want = fresh_plus_on(be, &dx0b, &fresh)?;
        let mut acc = be.copy(&dx0b)?;
        be.avg_pool2d_bwd_into(&dyb, xd, &spec, &mut acc)?;
        let got = be.download(&acc)?;
        let e = rel_err(&got, &want, &dx0, &be.download(&fresh)?);
        assert!(e <= TIGHT, "avg_pool2d_bwd_into {xd:?} {spec:?}: {e:e}");
        out.push(format!("avg_pool2d_bwd_into[{i}]"), got);
    }
    // MixedOp: K 6, input 0 absent, inputs 1 and 4 accumulated, 2 fresh, 3 and 5 unwanted
    // (5 has an accumulator it must leave alone).
    let len = 5 * 7 * 13;
    let xs = (0..6)
        .map(|_| be.upload(&host(&mut rng, len)))
        .collect::<nasrs::Result<Vec<_>>>()?;
    let alpha = be.upload(&host(&mut rng, 6))?;
    let dy = be.upload(&host(&mut rng, len))?;
    let refs: Vec<Option<&B::Storage>> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| (i != 0).then_some(x))
        .collect();
    let need = [true, true, true, false, true, false];
    let (fresh, fresh_da) = be.mixed_op_bwd(&dy, &refs, &alpha, len, &need)?;
    let before: Vec<Vec<f32>> = (0..6).map(|_| host(&mut rng, len)).collect();
    let mut accs = before
        .iter()
        .map(|b| be.upload(b))
        .collect::<nasrs::Result<Vec<_>>>()?;
    let (got, got_da) = {
        let mut acc: Vec<Option<&mut B::Storage>> = accs
            .iter_mut()
            .enumerate()
            .map(|(i, a)| [0, 1, 4, 5].contains(&i).then_some(a))
            .collect();
        be.mixed_op_bwd_into(&dy, &refs, &alpha, len, &need, &mut acc)?
    };
    let mut accs_dx = before
        .iter()
        .map(|b| be.upload(b))
        .collect::<nasrs::Result<Vec<_>>>()?;
    let got_dx = {
        let mut acc: Vec<Option<&mut B::Storage>> = accs_dx
            .iter_mut()
            .enumerate()
            .map(|(i, a)| [0, 1, 4, 5].contains(&i).then_some(a))
            .collect();
        be.mixed_op_bwd_dx(&dy, &refs, &alpha, len, &need, &mut acc)?
    };
    // Without dalpha (a weight step): the same input gradients, bit for bit.
    for i in 0..6 {
        let (a, b) = (&got_dx[i], &got[i]);
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "mixed_op_bwd_dx dx[{i}] returned or not"
        );
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(be.download(a)?, be.download(b)?, "mixed_op_bwd_dx dx[{i}]");
        }
        let (a, b) = (be.download(&accs_dx[i])?, be.download(&accs[i])?);
        assert_eq!(a, b, "mixed_op_bwd_dx accumulator {i}");
    }
    let got_da = be.download(&got_da)?;
    assert_eq!(
        got_da,
        be.download(&fresh_da)?,
        "dalpha does not depend on accumulation"
    );
    out.push("mixed_op_bwd_into.dalpha", got_da);
    for i in 0..6 {
        let acc = be.download(&accs[i])?;
        match i {
            1 | 4 => {
                assert!(got[i].is_none(), "dx[{i}] accumulated, not returned");
                let f = fresh[i].as_ref().expect("a wanted dx");
                let want = fresh_plus_on(be, &be.upload(&before[i])?, f)?;
                let e = rel_err(&acc, &want, &before[i], &be.download(f)?);
                assert!(e <= TIGHT, "mixed_op_bwd_into dx[{i}]: {e:e}");
                out.push(format!("mixed_op_bwd_into.acc[{i}]"), acc);
            }
            2 => {
                let (g, f) = (got[2].as_ref(), fresh[2].as_ref());
                let g = be.download(g.expect("dx[2] has no accumulator: returned"))?;
                assert_eq!(g, be.download(f.expect("a wanted dx"))?, "dx[2] fresh");
                out.push("mixed_op_bwd_into.dx[2]", g);
            }
            _ => {
                assert!(got[i].is_none(), "dx[{i}] not wanted or absent");
                assert_eq!(acc, before[i], "accumulator {i} left alone");
            }
        }
    }
    Ok(out)
}

fn into_ops_match_cpu<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let got = into_ops_on(be)?;
    let want = into_ops_on(&Cpu::new())?;
    assert_close(be, "accumulating backward ops", &got, &want, TOL);
    Ok(())
}

test_device!(
    into_ops_match_fresh_plus_axpy_and_the_cpu,
    into_ops_match_cpu
);
