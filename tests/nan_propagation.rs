//! NaN is never hidden: on every device (`test_device!`), a NaN (and, where it means
//! something, an infinity) put into any op's input comes out where PyTorch puts it, forward
//! and backward: ReLU and the conv's fused ReLU (PyTorch's `threshold_backward`: a NaN
//! output passes its gradient), max pooling (a NaN is a window's maximum and takes its
//! gradient; the last NaN of a window, as `max_pool2d`), average and global pooling, batch
//! norm in both modes, the linear layer, the cross-entropy and its arg-max count, the
//! MixedOp (NaN alpha, NaN input), gradient clipping (a NaN norm gives a NaN clip
//! coefficient, as `clamp` does), the optimizers and the plain elementwise ops. And a whole
//! network: an evaluation network with one NaN weight, and a search network with one NaN
//! alpha, give NaN logits and a NaN loss in eval mode.

mod common;

use nasrs::autograd::Tape;
use nasrs::backend::{norm_scalars, AdamStep, RunningStats, ScalarRef, SgdStep};
use nasrs::nas::eval_model::{EvalConfig, EvalNetwork};
use nasrs::nas::{Genotype, Mode, SearchConfig, SearchNetwork};
use nasrs::{Backend, Conv2dSpec, Nchw, Pool2dSpec, Rng, Tensor};
use std::sync::Arc;

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    common::randn(rng, n)
}

fn down<B: Backend<Elem = f32>>(be: &B, s: &B::Storage) -> nasrs::Result<Vec<f32>> {
    be.download(s)
}

/// Indices of the NaN elements.
fn nans(v: &[f32]) -> Vec<usize> {
    (0..v.len()).filter(|&i| v[i].is_nan()).collect()
}

/// Indices of the non-finite elements.
fn non_finite(v: &[f32]) -> Vec<usize> {
    (0..v.len()).filter(|&i| !v[i].is_finite()).collect()
}

/// Equal, a NaN matching any NaN.
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

// ---- ReLU ---------------------------------------------------------------------------------

fn relu_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let x = [NAN, -1.0, 2.0, INF, -INF, 0.0, -0.0];
    let y = down(be, &be.relu_fwd(&be.upload(&x)?)?)?;
    assert!(y[0].is_nan(), "relu(NaN) = {}", y[0]);
    assert_eq!(&y[1..], &[0.0, 2.0, INF, 0.0, 0.0, 0.0]);
    // threshold_backward(dy, y, 0) = y <= 0 ? 0 : dy: a NaN output passes its gradient.
    let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let dx = down(be, &be.relu_bwd(&be.upload(&y)?, &be.upload(&dy)?)?)?;
    assert_eq!(dx, vec![1.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0]);
    // A NaN gradient passes through an active unit (and a NaN one), and is cut by an
    // inactive one, as in PyTorch.
    let dx = down(
        be,
        &be.relu_bwd(&be.upload(&[2.0, 0.0, NAN])?, &be.upload(&[NAN; 3])?)?,
    )?;
    assert!(dx[0].is_nan() && dx[1] == 0.0 && dx[2].is_nan(), "{dx:?}");
    Ok(())
}
test_device!(relu, relu_keeps_nan);

// ---- the conv's fused ReLU ------------------------------------------------------------------

fn conv(cin: usize, cout: usize, k: usize, s: usize, p: usize, g: usize) -> Conv2dSpec {
    Conv2dSpec {
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: s,
        padding: p,
        dilation: 1,
        groups: g,
        relu_input: false,
    }
}

/// Every conv path with a fused ReLU (depthwise, im2col GEMM, 1x1, strided, grouped): a NaN
/// input gives NaN outputs wherever a plain conv of the same input has them, its data
/// gradient is passed (not masked), and the weight gradients it touches are NaN. A -inf
/// input is rectified to 0 (finite outputs); a +inf one is not.
fn fused_relu_conv_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let xd = Nchw {
        n: 2,
        c: 4,
        h: 7,
        w: 6,
    };
    let mut rng = Rng::new(5);
    for plain in [
        conv(4, 4, 3, 1, 1, 4),
        conv(4, 4, 3, 2, 1, 4),
        conv(4, 6, 3, 1, 1, 1),
        conv(4, 6, 1, 1, 0, 1),
        conv(4, 6, 1, 2, 0, 1),
        conv(4, 4, 3, 1, 1, 2),
    ] {
        let fused = Conv2dSpec {
            relu_input: true,
            ..plain
        };
        let yd = plain.output(xd)?;
        let w = be.upload(&randn(&mut rng, plain.weight_shape().numel()))?;
        let dy = be.upload(&randn(&mut rng, yd.numel()))?;
        let mut xh = randn(&mut rng, xd.numel());
        // (n 1, c 1, row 2, col 2): read by every tap of a 3x3 window at stride 1 and 2.
        let at = ((xd.c + 1) * xd.h + 2) * xd.w + 2;
        xh[at] = NAN;
        let x = be.upload(&xh)?;

        let got = down(be, &be.conv2d_fwd(&x, xd, &w, &fused)?)?;
        let want = down(be, &be.conv2d_fwd(&x, xd, &w, &plain)?)?;
        assert!(
            !nans(&want).is_empty(),
            "{plain:?}: no NaN reached the output"
        );
        assert_eq!(nans(&got), nans(&want), "fused fwd {plain:?}");

        // The data gradient: PyTorch's relu backward passes the gradient at a NaN input.
        let got = down(be, &be.conv2d_bwd_data(&x, &dy, &w, xd, &fused)?)?;
        let raw = down(be, &be.conv2d_bwd_data(&x, &dy, &w, xd, &plain)?)?;
        assert!(raw[at].is_finite() && raw[at] != 0.0);
        assert!(
            (got[at] - raw[at]).abs() <= 1e-5 * (1.0 + raw[at].abs()),
            "fused bwd_data {plain:?}: {} at the NaN input, want {}",
            got[at],
            raw[at]
        );
        for (i, (&g, &v)) in got.iter().zip(&xh).enumerate() {
            if v <= 0.0 {
                assert_eq!(g, 0.0, "fused bwd_data {plain:?}: unmasked at {i}");
            }
        }
        // The same through the accumulating variant.
        let mut acc = be.upload(&vec![0.5; xd.numel()])?;
        be.conv2d_bwd_data_into(&x, &dy, &w, xd, &fused, &mut acc)?;
        let acc = down(be, &acc)?;
        assert!((acc[at] - 0.5 - raw[at]).abs() <= 1e-5 * (1.0 + raw[at].abs()));

        let got = down(be, &be.conv2d_bwd_weight(&x, &dy, xd, &fused)?)?;
        let want = down(be, &be.conv2d_bwd_weight(&x, &dy, xd, &plain)?)?;
        assert!(!nans(&want).is_empty());
        assert_eq!(nans(&got), nans(&want), "fused bwd_weight {plain:?}");

        // -inf is rectified to 0; +inf is not.
        xh[at] = -INF;
        let y = down(be, &be.conv2d_fwd(&be.upload(&xh)?, xd, &w, &fused)?)?;
        assert!(non_finite(&y).is_empty(), "fused fwd {plain:?} of -inf");
        xh[at] = INF;
        let y = down(be, &be.conv2d_fwd(&be.upload(&xh)?, xd, &w, &fused)?)?;
        assert!(!non_finite(&y).is_empty(), "fused fwd {plain:?} of +inf");
    }
    Ok(())
}
test_device!(fused_relu_conv, fused_relu_conv_keeps_nan);

// ---- pooling --------------------------------------------------------------------------------

/// PyTorch's max_pool2d (CPU and CUDA kernels alike): `if (val > maxval || isnan(val))`
/// from maxval = -inf and the window's first index, so a NaN is the maximum and the last NaN
/// of a window wins. Returns (y, dx for `dy`).
fn torch_max_pool(x: &[f32], xd: Nchw, spec: &Pool2dSpec, dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let yd = spec.output(xd, "max_pool2d").unwrap();
    let (mut y, mut dx) = (vec![0.0; yd.numel()], vec![0.0; xd.numel()]);
    for p in 0..xd.n * xd.c {
        for oh in 0..yd.h {
            for ow in 0..yd.w {
                let hs = (oh * spec.stride) as isize - spec.padding as isize;
                let ws = (ow * spec.stride) as isize - spec.padding as isize;
                let (h0, w0) = (hs.max(0) as usize, ws.max(0) as usize);
                let h1 = ((hs + spec.kernel as isize) as usize).min(xd.h);
                let w1 = ((ws + spec.kernel as isize) as usize).min(xd.w);
                let (mut m, mut best) = (f32::NEG_INFINITY, h0 * xd.w + w0);
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        let v = x[p * xd.plane() + ih * xd.w + iw];
                        if v > m || v.is_nan() {
                            m = v;
                            best = ih * xd.w + iw;
                        }
                    }
                }
                let o = p * yd.plane() + oh * yd.w + ow;
                y[o] = m;
                dx[p * xd.plane() + best] += dy[o];
            }
        }
    }
    (y, dx)
}

fn max_pool_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let xd = Nchw {
        n: 2,
        c: 2,
        h: 6,
        w: 5,
    };
    let mut rng = Rng::new(11);
    let mut xh = randn(&mut rng, xd.numel());
    let at = |p: usize, r: usize, q: usize| p * xd.plane() + r * xd.w + q;
    // Plane 0: a NaN below its neighbours, so only the NaN rule makes it a maximum.
    xh[at(0, 1, 1)] = NAN;
    for (r, q) in [(0, 0), (0, 1), (1, 0), (2, 2), (1, 2), (2, 1)] {
        xh[at(0, r, q)] = 5.0;
    }
    // Plane 1: two NaNs side by side (the last of a window wins) and a +inf.
    xh[at(1, 2, 2)] = NAN;
    xh[at(1, 2, 3)] = NAN;
    xh[at(1, 5, 4)] = INF;
    // Plane 2: a window of -inf only (the gradient goes to its first element).
    for r in 0..3 {
        for q in 0..3 {
            xh[at(2, r, q)] = f32::NEG_INFINITY;
        }
    }
    let x = be.upload(&xh)?;
    for spec in [
        Pool2dSpec {
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        Pool2dSpec {
            kernel: 3,
            stride: 2,
            padding: 1,
        },
        Pool2dSpec {
            kernel: 2,
            stride: 2,
            padding: 0,
        },
    ] {
        let yd = spec.output(xd, "max_pool2d")?;
        // Small integers: every gradient sum is exact on every device.
        let dyh: Vec<f32> = (0..yd.numel()).map(|i| (i % 7 + 1) as f32).collect();
        let (want_y, want_dx) = torch_max_pool(&xh, xd, &spec, &dyh);
        assert!(!nans(&want_y).is_empty());
        let y = down(be, &be.max_pool2d_fwd(&x, xd, &spec)?)?;
        assert!(
            same(&y, &want_y),
            "max_pool2d {spec:?}: {y:?}, want {want_y:?}"
        );
        let dy = be.upload(&dyh)?;
        let dx = down(be, &be.max_pool2d_bwd(&x, &dy, xd, &spec)?)?;
        assert_eq!(dx, want_dx, "max_pool2d_bwd {spec:?}");
        assert!(dx[at(0, 1, 1)] > 0.0, "the NaN took no gradient");
        let mut acc = be.upload(&vec![0.5; xd.numel()])?;
        be.max_pool2d_bwd_into(&x, &dy, xd, &spec, &mut acc)?;
        let want: Vec<f32> = want_dx.iter().map(|v| v + 0.5).collect();
        assert_eq!(down(be, &acc)?, want, "max_pool2d_bwd_into {spec:?}");
    }
    Ok(())
}
test_device!(max_pool, max_pool_keeps_nan);

fn avg_and_global_pool_keep_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let xd = Nchw {
        n: 2,
        c: 3,
        h: 5,
        w: 5,
    };
    let spec = Pool2dSpec {
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let yd = spec.output(xd, "avg_pool2d")?;
    let mut rng = Rng::new(3);
    let mut xh = randn(&mut rng, xd.numel());
    // Plane 4, row 0, column 4: covered by the outputs (0..2, 3..5) of that plane.
    let plane = 4;
    xh[plane * xd.plane() + 4] = NAN;
    let covered =
        |i: usize, hh: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
            i / (hh * 5) == plane && rows.contains(&(i / 5 % hh)) && cols.contains(&(i % 5))
        };
    let y = down(be, &be.avg_pool2d_fwd(&be.upload(&xh)?, xd, &spec)?)?;
    let want: Vec<usize> = (0..yd.numel())
        .filter(|&i| covered(i, yd.h, 0..2, 3..5))
        .collect();
    assert_eq!(nans(&y), want, "avg_pool2d");
    // Output (plane 4, 0, 0)'s gradient reaches inputs (0..2, 0..2).
    let mut dyh = randn(&mut rng, yd.numel());
    dyh[plane * yd.plane()] = NAN;
    let dx = down(be, &be.avg_pool2d_bwd(&be.upload(&dyh)?, xd, &spec)?)?;
    let want: Vec<usize> = (0..xd.numel())
        .filter(|&i| covered(i, xd.h, 0..2, 0..2))
        .collect();
    assert_eq!(nans(&dx), want, "avg_pool2d_bwd");
    let mut acc = be.zeros(xd.numel())?;
    be.avg_pool2d_bwd_into(&be.upload(&dyh)?, xd, &spec, &mut acc)?;
    assert_eq!(nans(&down(be, &acc)?), want, "avg_pool2d_bwd_into");

    let y = down(be, &be.global_avg_pool_fwd(&be.upload(&xh)?, xd)?)?;
    assert_eq!(nans(&y), vec![plane]);
    xh[plane * xd.plane() + 4] = INF;
    let y = down(be, &be.global_avg_pool_fwd(&be.upload(&xh)?, xd)?)?;
    assert_eq!(y[plane], INF);
    let mut g = randn(&mut rng, xd.n * xd.c);
    g[1] = NAN;
    let dx = down(be, &be.global_avg_pool_bwd(&be.upload(&g)?, xd)?)?;
    assert_eq!(nans(&dx), (xd.plane()..2 * xd.plane()).collect::<Vec<_>>());
    Ok(())
}
test_device!(avg_and_global_pool, avg_and_global_pool_keep_nan);

// ---- batch norm ---------------------------------------------------------------------------

/// Indices of channel `c` of an NCHW tensor.
fn channel(xd: Nchw, c: usize) -> Vec<usize> {
    (0..xd.numel())
        .filter(|&i| i / xd.plane() % xd.c == c)
        .collect()
}

fn batch_norm_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let xd = Nchw {
        n: 2,
        c: 3,
        h: 4,
        w: 4,
    };
    let mut rng = Rng::new(9);
    let mut xh = randn(&mut rng, xd.numel());
    // (n 1, c 1, 2, 3)
    xh[(xd.c + 1) * xd.plane() + 11] = NAN;
    let x = be.upload(&xh)?;
    let gamma = be.upload(&[1.5, 0.5, 2.0])?;
    let beta = be.upload(&[0.1, -0.2, 0.3])?;
    let mut rm = be.upload(&[0.0, 0.1, 0.2])?;
    let mut rv = be.upload(&[1.0, 1.1, 1.2])?;

    // Training mode: channel 1's statistics are NaN, so is all of channel 1.
    let (y, saved) = be.batch_norm_train_fwd(
        &x,
        xd,
        Some((&gamma, &beta)),
        Some(RunningStats {
            mean: &mut rm,
            var: &mut rv,
            momentum: 0.1,
        }),
        1e-5,
    )?;
    assert_eq!(nans(&down(be, &y)?), channel(xd, 1), "batch_norm_train");
    for s in [&rm, &rv, &saved.mean, &saved.invstd] {
        assert_eq!(nans(&down(be, s)?), vec![1], "statistics");
    }
    let dyh = randn(&mut rng, xd.numel());
    let (dx, dp) = be.batch_norm_bwd(&x, &be.upload(&dyh)?, xd, Some(&gamma), &saved)?;
    let (dgamma, dbeta) = dp.expect("affine gradients");
    assert_eq!(nans(&down(be, &dx)?), channel(xd, 1), "batch_norm_bwd dx");
    assert_eq!(nans(&down(be, &dgamma)?), vec![1], "dgamma");
    // dbeta = sum dy reads no x: finite, as in PyTorch.
    assert!(nans(&down(be, &dbeta)?).is_empty(), "dbeta");

    // +inf: the channel's variance is inf - inf, NaN.
    let mut xi = randn(&mut rng, xd.numel());
    xi[2 * xd.plane()] = INF;
    let (y, _) = be.batch_norm_train_fwd(&be.upload(&xi)?, xd, None, None, 1e-5)?;
    assert_eq!(
        nans(&down(be, &y)?),
        channel(xd, 2),
        "batch_norm_train of +inf"
    );

    // Eval mode: a NaN running variance poisons its channel, a NaN input its element only,
    // a NaN gamma its channel.
    let clean = randn(&mut rng, xd.numel());
    let (rm, rv) = (be.upload(&[0.0, 0.1, 0.2])?, be.upload(&[1.0, 1.1, NAN])?);
    let y = be.batch_norm_eval_fwd(
        &be.upload(&clean)?,
        xd,
        Some((&gamma, &beta)),
        &rm,
        &rv,
        1e-5,
    )?;
    assert_eq!(
        nans(&down(be, &y)?),
        channel(xd, 2),
        "eval, NaN running var"
    );
    let rv = be.upload(&[1.0, 1.1, 1.2])?;
    let mut xe = clean.clone();
    xe[5] = NAN;
    let y = be.batch_norm_eval_fwd(&be.upload(&xe)?, xd, Some((&gamma, &beta)), &rm, &rv, 1e-5)?;
    assert_eq!(nans(&down(be, &y)?), vec![5], "eval, NaN input");
    let g = be.upload(&[1.5, NAN, 2.0])?;
    let y = be.batch_norm_eval_fwd(&be.upload(&clean)?, xd, Some((&g, &beta)), &rm, &rv, 1e-5)?;
    assert_eq!(nans(&down(be, &y)?), channel(xd, 1), "eval, NaN gamma");
    Ok(())
}
test_device!(batch_norm, batch_norm_keeps_nan);

// ---- linear, loss, arg-max ----------------------------------------------------------------

fn linear_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let (n, i, o) = (3, 4, 5);
    let mut rng = Rng::new(2);
    let (xh, wh, bh) = (
        randn(&mut rng, n * i),
        randn(&mut rng, o * i),
        randn(&mut rng, o),
    );
    let row = |r: usize| (r * o..(r + 1) * o).collect::<Vec<_>>();
    let col = |c: usize| (0..n).map(|r| r * o + c).collect::<Vec<_>>();
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| -> nasrs::Result<Vec<f32>> {
        let (x, w, b) = (be.upload(x)?, be.upload(w)?, be.upload(b)?);
        down(be, &be.linear_fwd(&x, &w, Some(&b), n, i, o)?)
    };
    let mut x = xh.clone();
    x[i + 2] = NAN;
    assert_eq!(nans(&fwd(&x, &wh, &bh)?), row(1), "NaN input");
    let mut w = wh.clone();
    w[3 * i] = NAN;
    assert_eq!(nans(&fwd(&xh, &w, &bh)?), col(3), "NaN weight");
    let mut b = bh.clone();
    b[4] = NAN;
    assert_eq!(nans(&fwd(&xh, &wh, &b)?), col(4), "NaN bias");
    // Without a bias too.
    let y = be.linear_fwd(&be.upload(&x)?, &be.upload(&wh)?, None, n, i, o)?;
    assert_eq!(nans(&down(be, &y)?), row(1), "NaN input, no bias");

    let mut dy = randn(&mut rng, n * o);
    dy[2 * o + 1] = NAN;
    let (dx, dw, db) = be.linear_bwd(
        &be.upload(&xh)?,
        &be.upload(&wh)?,
        &be.upload(&dy)?,
        n,
        i,
        o,
        true,
    )?;
    assert_eq!(nans(&down(be, &dx)?), (2 * i..3 * i).collect::<Vec<_>>());
    assert_eq!(nans(&down(be, &dw)?), (i..2 * i).collect::<Vec<_>>());
    assert_eq!(nans(&down(be, &db.expect("db"))?), vec![1]);
    Ok(())
}
test_device!(linear, linear_keeps_nan);

fn cross_entropy_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let (n, k) = (3, 4);
    let mut rng = Rng::new(4);
    let clean = randn(&mut rng, n * k);
    let labels = be.upload_labels(&[0, 1, 3], k)?;
    let loss = |logits: &[f32]| -> nasrs::Result<(f32, Vec<f32>)> {
        let (l, p) = be.softmax_cross_entropy_fwd(&be.upload(logits)?, n, k, &labels)?;
        Ok((down(be, &l)?[0], down(be, &p)?))
    };
    let (l, _) = loss(&clean)?;
    assert!(l.is_finite());

    // A NaN logit (not the label's): NaN loss, NaN probabilities in its row only.
    let mut z = clean.clone();
    z[k + 2] = NAN;
    let (l, probs) = loss(&z)?;
    assert!(l.is_nan(), "loss {l}");
    assert_eq!(nans(&probs), (k..2 * k).collect::<Vec<_>>());
    let d =
        be.softmax_cross_entropy_bwd(&be.upload(&probs)?, &be.upload(&[1.0])?, n, k, &labels)?;
    assert_eq!(nans(&down(be, &d)?), (k..2 * k).collect::<Vec<_>>());
    // A NaN loss gradient reaches every logit.
    let (_, p) = loss(&clean)?;
    let d = be.softmax_cross_entropy_bwd(&be.upload(&p)?, &be.upload(&[NAN])?, n, k, &labels)?;
    assert_eq!(nans(&down(be, &d)?).len(), n * k);

    // +inf logit: inf - inf in the log-sum-exp, NaN (as PyTorch).
    let mut z = clean.clone();
    z[1] = INF;
    assert!(loss(&z)?.0.is_nan(), "+inf logit");
    // -inf at the label: an infinite loss; elsewhere: a finite one.
    let mut z = clean.clone();
    z[2 * k + 3] = f32::NEG_INFINITY;
    assert_eq!(loss(&z)?.0, INF, "-inf at the label");
    let mut z = clean.clone();
    z[2 * k] = f32::NEG_INFINITY;
    assert!(loss(&z)?.0.is_finite(), "-inf off the label");

    // count_correct: PyTorch's argmax, a NaN is the maximum (the first NaN of a row).
    let logits = [
        9.0, 0.0, NAN, 1.0, // argmax 2, label 2: correct
        NAN, 0.0, 1.0, 9.0, // argmax 0, label 3: wrong
        1.0, NAN, NAN, 0.0, // argmax 1, label 1: correct
        0.0, 3.0, 1.0, 2.0, // argmax 1, label 1: correct
    ];
    let labels = be.upload_labels(&[2, 3, 1, 1], 4)?;
    let c = be.count_correct(&be.upload(&logits)?, 4, 4, &labels)?;
    assert_eq!(down(be, &c)?, vec![3.0], "count_correct");
    Ok(())
}
test_device!(cross_entropy, cross_entropy_keeps_nan);

// ---- MixedOp --------------------------------------------------------------------------------

fn mixed_op_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let len = 37;
    let mut rng = Rng::new(6);
    let xh: Vec<Vec<f32>> = (0..3).map(|_| randn(&mut rng, len)).collect();
    let dy = be.upload(&randn(&mut rng, len))?;
    let clean_alpha = randn(&mut rng, 4);
    // Input 1 is `none` (absent, all zero).
    let run = |xh: &[Vec<f32>], alpha: &[f32]| -> nasrs::Result<[Vec<f32>; 4]> {
        let bufs = xh
            .iter()
            .map(|x| be.upload(x))
            .collect::<nasrs::Result<Vec<_>>>()?;
        let xs = [Some(&bufs[0]), None, Some(&bufs[1]), Some(&bufs[2])];
        let a = be.upload(alpha)?;
        let y = down(be, &be.mixed_op_fwd(&xs, &a, len)?)?;
        let need = [true, false, true, true];
        let (dxs, dalpha) = be.mixed_op_bwd(&dy, &xs, &a, len, &need)?;
        let dx0 = down(be, dxs[0].as_ref().expect("dx0"))?;
        // The accumulating variant, into a pending gradient of input 2.
        let mut pending = be.zeros(len)?;
        let mut acc = [None, None, Some(&mut pending), None];
        let (_, dalpha2) = be.mixed_op_bwd_into(&dy, &xs, &a, len, &need, &mut acc)?;
        let (dalpha, dalpha2) = (down(be, &dalpha)?, down(be, &dalpha2)?);
        assert!(same(&dalpha, &dalpha2));
        Ok([y, dx0, dalpha, down(be, &pending)?])
    };
    let [y, dx, dalpha, pending] = run(&xh, &clean_alpha)?;
    for v in [&y, &dx, &dalpha, &pending] {
        assert!(non_finite(v).is_empty());
    }

    // A NaN alpha (even the absent input's) or a +inf one: every softmax weight is NaN.
    for (j, bad) in [(1, NAN), (2, NAN), (0, INF)] {
        let mut alpha = clean_alpha.clone();
        alpha[j] = bad;
        let [y, dx, dalpha, pending] = run(&xh, &alpha)?;
        for (what, v) in [
            ("y", &y),
            ("dx", &dx),
            ("dalpha", &dalpha),
            ("acc", &pending),
        ] {
            assert_eq!(nans(v).len(), v.len(), "alpha[{j}] = {bad}: {what} {v:?}");
        }
    }
    // A NaN input element: that output element, and (through the mean of <dy, x_k>) every
    // alpha gradient; the input gradients w_k dy stay finite.
    let mut bad = xh.clone();
    bad[1][7] = NAN;
    let [y, dx, dalpha, pending] = run(&bad, &clean_alpha)?;
    assert_eq!(nans(&y), vec![7]);
    assert_eq!(nans(&dalpha).len(), 4);
    assert!(non_finite(&dx).is_empty() && non_finite(&pending).is_empty());
    Ok(())
}
test_device!(mixed_op, mixed_op_keeps_nan);

// ---- clipping, optimizers, elementwise ----------------------------------------------------

fn clipping_and_optimizers_keep_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut rng = Rng::new(12);
    let (g1, mut g2) = (randn(&mut rng, 40), randn(&mut rng, 9));
    let scalars = |g2: &[f32]| -> nasrs::Result<Vec<f32>> {
        let (a, b) = (be.upload(&g1)?, be.upload(g2)?);
        down(be, &be.grad_norm_scalars(&[&a, &b], 0.5)?)
    };
    let s = scalars(&g2)?;
    assert!(non_finite(&s).is_empty() && s[norm_scalars::CLIP_COEF] < 1.0);
    // torch.nn.utils.clip_grad_norm_: clamp(max_norm / (NaN + 1e-6), max=1) is NaN.
    g2[3] = NAN;
    let s = scalars(&g2)?;
    assert_eq!(nans(&s).len(), norm_scalars::LEN, "NaN gradient: {s:?}");
    g2[3] = INF;
    let s = scalars(&g2)?;
    assert_eq!(s[norm_scalars::NORM], INF);
    assert_eq!(s[norm_scalars::INV_NORM], 0.0);
    assert_eq!(s[norm_scalars::CLIP_COEF], 0.0);

    // SGD clipped by a NaN coefficient: every parameter NaN (PyTorch scales every gradient
    // by it). Unclipped: only the NaN gradient's parameter and momentum.
    g2[3] = NAN;
    let coef = {
        let (a, b) = (be.upload(&g1)?, be.upload(&g2)?);
        be.grad_norm_scalars(&[&a, &b], 0.5)?
    };
    let hp = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 3e-4,
    };
    let p0 = randn(&mut rng, 9);
    let (mut p, mut m) = (be.upload(&p0)?, be.zeros(9)?);
    let clip = ScalarRef {
        buf: &coef,
        index: norm_scalars::CLIP_COEF,
    };
    be.sgd_step(
        &mut p,
        &be.upload(&randn(&mut rng, 9))?,
        &mut m,
        &hp,
        Some(clip),
    )?;
    assert_eq!(nans(&down(be, &p)?).len(), 9, "sgd clipped by NaN");
    let g = be.upload(&g2)?;
    let (mut p, mut m) = (be.upload(&p0)?, be.zeros(9)?);
    be.sgd_step(&mut p, &g, &mut m, &hp, None)?;
    assert_eq!(nans(&down(be, &p)?), vec![3]);
    assert_eq!(nans(&down(be, &m)?), vec![3]);
    let (mut p, mut m2) = (be.upload(&p0)?, be.zeros(9)?);
    be.sgd_step_many(&mut [&mut p], &[&g], &mut [&mut m2], &hp, None)?;
    assert_eq!(nans(&down(be, &p)?), vec![3], "sgd_step_many");

    let hp = AdamStep {
        lr: 3e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-3,
        step: 1,
    };
    let (mut p, mut m, mut v) = (be.upload(&p0)?, be.zeros(9)?, be.zeros(9)?);
    be.adam_step(&mut p, &g, &mut m, &mut v, &hp)?;
    for s in [&p, &m, &v] {
        assert_eq!(nans(&down(be, s)?), vec![3], "adam_step");
    }
    let (mut p, mut m, mut v) = (be.upload(&p0)?, be.zeros(9)?, be.zeros(9)?);
    be.adam_step_many(&mut [&mut p], &[&g], &mut [&mut m], &mut [&mut v], &hp)?;
    assert_eq!(nans(&down(be, &p)?), vec![3], "adam_step_many");
    Ok(())
}
test_device!(clipping_and_optimizers, clipping_and_optimizers_keep_nan);

fn elementwise_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let a = be.upload(&[1.0, NAN, 3.0, INF])?;
    let b = be.upload(&[1.0, 2.0, 3.0, 4.0])?;
    assert_eq!(nans(&down(be, &be.add(&a, &b)?)?), vec![1]);
    assert_eq!(nans(&down(be, &be.scale(&a, 0.0)?)?), vec![1, 3]);
    let mut y = be.copy(&b)?;
    be.axpy(&mut y, 2.0, &a)?;
    assert_eq!(nans(&down(be, &y)?), vec![1]);
    let mut y = be.copy(&a)?;
    be.scale_assign(&mut y, 0.5)?;
    assert_eq!(nans(&down(be, &y)?), vec![1]);
    assert!(be.sum_squares(&a)?.is_nan());
    assert!(be.sum_squares_many(&[&b, &a])?.is_nan());
    assert!(be.dot(&b, &a)?.is_nan());
    // Drop-path: a dropped sample times 0 is still NaN where it was NaN (x * 0, as PyTorch).
    let y = be.drop_path(&a, 2, &be.upload(&[0.0, 2.0])?)?;
    assert_eq!(nans(&down(be, &y)?), vec![1]);
    // bf16 storage keeps NaN and infinities.
    let r = down(be, &be.from_bf16(&be.to_bf16(&a)?)?)?;
    assert!(same(&r, &[1.0, NAN, 3.0, INF]), "bf16 round trip: {r:?}");
    // Layout ops copy NaN.
    let xd = Nchw {
        n: 1,
        c: 1,
        h: 2,
        w: 2,
    };
    let cat = be.concat_channels(&[(&a, xd), (&b, xd)])?;
    assert_eq!(nans(&down(be, &cat)?), vec![1]);
    let crop = be.shift_crop_fwd(&be.upload(&[1.0, 2.0, 3.0, NAN])?, xd)?;
    assert_eq!(nans(&down(be, &crop)?), vec![0]);
    Ok(())
}
test_device!(elementwise, elementwise_keeps_nan);

// ---- whole networks -----------------------------------------------------------------------

/// Sets element 0 of the tensor `name` of `store` to NaN, in place.
fn poison<B: Backend<Elem = f32>>(
    be: &B,
    store: &mut nasrs::autograd::ParamStore<B>,
    name: &str,
) -> nasrs::Result<()> {
    let id = store
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", store.names()));
    let mut host = store.get(id).to_host(be)?;
    host[0] = NAN;
    be.upload_into(store.get_mut(id).buf_mut(name)?, &host)
}

/// Eval-mode logits and loss of a batch of 2 RGB 16x16 images, through `run`.
fn eval_forward<B: Backend<Elem = f32>>(
    be: &B,
    classes: usize,
    run: impl FnOnce(&mut Tape<B>, nasrs::autograd::Var) -> nasrs::Result<nasrs::autograd::Var>,
) -> nasrs::Result<(Vec<f32>, f32)> {
    let mut rng = Rng::new(21);
    let images = Tensor::from_host(be, &randn(&mut rng, 2 * 3 * 16 * 16), [2, 3, 16, 16])?;
    let mut tape = Tape::new(be.clone());
    tape.set_grad_enabled(false);
    let x = tape.constant(images);
    let logits = run(&mut tape, x)?;
    let labels = Arc::new(be.upload_labels(&[1, 2], classes)?);
    let loss = tape.softmax_cross_entropy(logits, &labels)?;
    let l = tape.value(loss)?.to_host(be)?;
    Ok((tape.value(logits)?.to_host(be)?, l[0]))
}

/// DARTS_V2 with a NaN in the stem conv's weight: the stem's output channel is NaN, and it
/// reaches the classifier only through ReLUs (every cell's preprocessing starts with one),
/// which must keep it.
fn eval_network_with_nan_weight<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let cfg = EvalConfig {
        genotype: Genotype::builtin("DARTS_V2").expect("DARTS_V2"),
        channels: 2,
        layers: 3,
        classes: 10,
        in_channels: 3,
        auxiliary: false,
    };
    let mut net = EvalNetwork::new(be, cfg, 1)?;
    let run = |net: &mut EvalNetwork<B>| {
        eval_forward(be, 10, |tape, x| {
            Ok(net.run(tape, x, Mode::EVAL, 0.0, &mut Rng::new(0))?.0)
        })
    };
    let (logits, loss) = run(&mut net)?;
    assert!(non_finite(&logits).is_empty() && loss.is_finite());
    poison(be, &mut net.weights, "stem.0.weight")?;
    let (logits, loss) = run(&mut net)?;
    assert_eq!(nans(&logits).len(), logits.len(), "logits {logits:?}");
    assert!(loss.is_nan(), "loss {loss}");
    Ok(())
}
test_device!(eval_network_nan_weight, eval_network_with_nan_weight);

/// A DARTS search network (first cell normal, the other two reduction) with one NaN alpha on
/// a normal-cell edge: that MixedOp is NaN, and the reduction cells read it through ReLUs.
fn search_network_with_nan_alpha<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut net = SearchNetwork::new(be, SearchConfig::darts(2, 3, 10, 3), 0)?;
    let run = |net: &mut SearchNetwork<B>| {
        eval_forward(be, 10, |tape, x| net.run(tape, x, Mode::EVAL, None))
    };
    let (logits, loss) = run(&mut net)?;
    assert!(non_finite(&logits).is_empty() && loss.is_finite());
    poison(be, &mut net.arch, "alphas_normal.0")?;
    let (logits, loss) = run(&mut net)?;
    assert_eq!(nans(&logits).len(), logits.len(), "logits {logits:?}");
    assert!(loss.is_nan(), "loss {loss}");
    Ok(())
}
test_device!(search_network_nan_alpha, search_network_with_nan_alpha);
