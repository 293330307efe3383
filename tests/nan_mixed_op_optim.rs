//! NaN is never hidden, forward and backward, on every device (`test_device!`), as PyTorch
//! puts it: the MixedOp (NaN alpha, NaN input), gradient clipping (a NaN norm gives a NaN
//! clip coefficient, as `clamp` does), the optimizers and the plain elementwise ops. The
//! helpers are shared with the other `tests/nan_*.rs` files (common/nan.rs).

mod common;

use common::nan::{down, nans, non_finite, same, INF, NAN};
use common::randn;
use nasrs::backend::{norm_scalars, AdamStep, ScalarRef, SgdStep};
use nasrs::{Backend, Nchw, Rng};

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
