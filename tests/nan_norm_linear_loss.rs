//! NaN is never hidden, forward and backward, on every device (`test_device!`), as PyTorch
//! puts it: batch norm in both modes, the linear layer, the cross-entropy and its arg-max
//! count. The helpers are shared with the other `tests/nan_*.rs` files (common/nan.rs).

mod common;

use common::nan::{down, nans, INF, NAN};
use common::randn;
use nasrs::backend::RunningStats;
use nasrs::{Backend, Nchw, Rng};

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
