//! NaN is never hidden, forward and backward, on every device (`test_device!`), as PyTorch
//! puts it: ReLU and the conv's fused ReLU (PyTorch's `threshold_backward`: a NaN output
//! passes its gradient), max pooling (a NaN is a window's maximum and takes its gradient;
//! the last NaN of a window, as `max_pool2d`), average and global pooling, and SE's channel
//! scale (a NaN scale spoils its plane, a NaN input its plane's scale gradient). The helpers are
//! shared with the other `tests/nan_*.rs` files (common/nan.rs).

mod common;

use common::nan::{down, nans, non_finite, same, INF, NAN};
use common::randn;
use nasrs::{Backend, Conv2dSpec, Nchw, Pool2dSpec, Rng};

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
    Conv2dSpec::new(cin, cout, k).stride(s).padding(p).groups(g)
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
        let fused = plain.relu_input();
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

fn channel_scale_keeps_nan<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut rng = Rng::new(12);
    let xd = Nchw {
        n: 2,
        c: 3,
        h: 5,
        w: 7,
    };
    let mut x = randn(&mut rng, xd.numel());
    let mut s = randn(&mut rng, xd.n * xd.c);
    s[4] = NAN;
    x[xd.plane() + 3] = NAN;
    let (bx, bs) = (be.upload(&x)?, be.upload(&s)?);
    let plane = |p: usize| (p * xd.plane()..(p + 1) * xd.plane()).collect::<Vec<_>>();
    let y = down(be, &be.channel_scale_fwd(&bx, xd, &bs)?)?;
    let mut want = plane(1)[3..4].to_vec();
    want.extend(plane(4));
    assert_eq!(nans(&y), want, "channel_scale_fwd");
    let dy = randn(&mut rng, xd.numel());
    let (dx, ds) = be.channel_scale_bwd(&bx, &bs, &be.upload(&dy)?, xd)?;
    assert_eq!(nans(&down(be, &dx)?), plane(4), "channel_scale_bwd dx");
    assert_eq!(nans(&down(be, &ds)?), vec![1], "channel_scale_bwd ds");
    Ok(())
}
test_device!(channel_scale, channel_scale_keeps_nan);
