//! Bad input gives errors that name the op and the shapes, never panics: on every device
//! (`test_device!`), the same bad inputs through the tape, straight into the backend (buffers
//! whose lengths disagree with each other or with the shapes given), as labels, and as
//! non-finite values.

mod common;

use nasrs::autograd::Tape;
use nasrs::backend::{AdamStep, SgdStep};
use nasrs::optim::clip_grad_norm;
use nasrs::{Backend, Conv2dSpec, Error, Nchw, Pool2dSpec, Shape, Tensor};
use std::sync::Arc;

fn t<B: Backend<Elem = f32>>(be: &B, shape: &[usize]) -> nasrs::Result<Tensor<B>> {
    Tensor::zeros(be, Shape::new(shape))
}

fn conv_spec(cin: usize, cout: usize) -> Conv2dSpec {
    Conv2dSpec::new(cin, cout, 3).padding(1)
}

const POOL: Pool2dSpec = Pool2dSpec {
    kernel: 3,
    stride: 1,
    padding: 1,
};

/// The message of an error that must happen.
fn err<T>(r: nasrs::Result<T>, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e.to_string(),
    }
}

fn wrong_shapes_name_the_op_and_both_shapes<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(t(be, &[2, 3, 8, 8])?);
    let w = tape.constant(t(be, &[4, 5, 3, 3])?);
    let e = err(tape.conv2d(x, w, conv_spec(5, 4)), "conv2d");
    assert!(
        e.contains("conv2d") && e.contains("[2, 3, 8, 8]") && e.contains("[4, 5, 3, 3]"),
        "{e}"
    );

    let y = tape.constant(t(be, &[2, 3, 8, 7])?);
    let e = err(tape.add(x, y), "add");
    assert!(
        e.contains("add") && e.contains("[2, 3, 8, 8]") && e.contains("[2, 3, 8, 7]"),
        "{e}"
    );

    let a = tape.constant(t(be, &[4, 6])?);
    let wl = tape.constant(t(be, &[3, 5])?);
    let e = err(tape.linear(a, wl, None), "linear");
    assert!(
        e.contains("linear") && e.contains("[4, 6]") && e.contains("[3, 5]"),
        "{e}"
    );

    let e = err(tape.max_pool2d(a, POOL), "max_pool2d of a matrix");
    assert!(e.contains("NCHW") && e.contains("[4, 6]"), "{e}");

    let alpha = tape.constant(t(be, &[7])?);
    let e = err(tape.mixed_op(&[Some(x), Some(x)], alpha), "mixed_op");
    assert!(e.contains("mixed_op") && e.contains("[7]"), "{e}");
    // Only `none` inputs: no shape to take, an error rather than a panic.
    let alpha = tape.constant(t(be, &[2])?);
    let e = err(tape.mixed_op(&[None, None], alpha), "mixed_op of nones");
    assert!(e.contains("mixed_op") && e.contains("none"), "{e}");
    Ok(())
}

/// Straight into the backend, past the tape's checks: every op refuses buffers whose
/// lengths disagree, naming the op or the expected length.
fn backend_rejects_inconsistent_buffers<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let up = |n: usize| be.upload(&vec![1.0f32; n]);
    let (b3, b4) = (up(3)?, up(4)?);
    match be.add(&b3, &b4) {
        Err(Error::Shape { op: "add", .. }) => {}
        other => panic!("add of 3 and 4: {:?}", other.err()),
    }
    let mut y = up(3)?;
    err(be.axpy(&mut y, 2.0, &b4), "axpy of 3 and 4");
    err(be.dot(&b3, &b4), "dot of 3 and 4");
    err(be.copy_into(&mut y, &b4), "copy_into of 4 into 3");
    err(be.upload_into(&mut y, &[1.0; 4]), "upload_into of 4 into 3");
    err(be.relu_bwd(&b3, &b4), "relu_bwd of 3 and 4");

    let xd = Nchw {
        n: 1,
        c: 1,
        h: 4,
        w: 4,
    };
    let e = err(
        be.max_pool2d_fwd(&up(15)?, xd, &POOL),
        "max pool of 15 as 16",
    );
    assert!(e.contains("16"), "{e}");
    err(
        be.avg_pool2d_fwd(&up(15)?, xd, &POOL),
        "avg pool of 15 as 16",
    );
    err(
        be.global_avg_pool_fwd(&up(15)?, xd),
        "global pool of 15 as 16",
    );
    let spec = conv_spec(1, 2);
    err(
        be.conv2d_fwd(&up(15)?, xd, &up(18)?, &spec),
        "conv input of 15",
    );
    err(
        be.conv2d_fwd(&up(16)?, xd, &up(17)?, &spec),
        "conv weight of 17",
    );
    let e = err(
        be.conv2d_bwd_weight(&up(16)?, &up(31)?, xd, &spec),
        "conv dy of 31",
    );
    assert!(e.contains("conv2d"), "{e}");
    err(
        be.linear_fwd(&up(11)?, &up(6)?, None, 2, 6, 1),
        "linear x of 11",
    );
    err(
        be.batch_norm_train_fwd(&up(15)?, xd, None, None, 1e-5),
        "BN of 15",
    );
    err(
        be.concat_channels(&[(&up(16)?, xd), (&up(15)?, xd)]),
        "concat of 15 as 16",
    );
    let e = err(
        be.mixed_op_fwd(&[Some(&b3), Some(&b4)], &up(2)?, 3),
        "mixed_op lengths",
    );
    assert!(e.contains("mixed_op"), "{e}");

    let hp = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let (mut p, mut m) = (up(3)?, up(3)?);
    err(
        be.sgd_step(&mut p, &b4, &mut m, &hp, None),
        "sgd grad of 4 for 3",
    );
    let adam = AdamStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let mut v = up(3)?;
    err(
        be.adam_step(&mut p, &b4, &mut m, &mut v, &adam),
        "adam grad of 4",
    );
    // Multi-tensor updates with lists of different lengths.
    let e = err(
        be.sgd_step_many(&mut [&mut p], &[&b3, &b3], &mut [&mut m], &hp, None),
        "sgd_step_many with 2 grads for 1 param",
    );
    assert!(e.contains("sgd_step_many"), "{e}");
    Ok(())
}

fn empty_batch_is_an_error<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(t(be, &[0, 3, 8, 8])?);
    let w = tape.constant(t(be, &[4, 3, 3, 3])?);
    let e = err(tape.conv2d(x, w, conv_spec(3, 4)), "conv of an empty batch");
    assert!(e.contains("empty batch"), "{e}");
    let logits = tape.constant(t(be, &[0, 10])?);
    let labels = Arc::new(be.upload_labels(&[], 10)?);
    let e = err(tape.softmax_cross_entropy(logits, &labels), "empty softmax");
    assert!(e.contains("empty batch"), "{e}");
    let e = err(tape.max_pool2d(x, POOL), "pool of an empty batch");
    assert!(e.contains("empty batch"), "{e}");
    Ok(())
}

fn bad_labels_are_errors<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut tape = Tape::new(be.clone());
    let logits = tape.constant(t(be, &[2, 10])?);
    let e = err(be.upload_labels(&[1, 10], 10), "label 10 of 10 classes");
    assert!(e.contains("label 10") && e.contains("10 classes"), "{e}");
    let one = Arc::new(be.upload_labels(&[1], 10)?);
    let e = err(
        tape.softmax_cross_entropy(logits, &one),
        "1 label for 2 rows",
    );
    assert!(e.contains("1 labels for a batch of 2"), "{e}");
    // Staged labels: a bad label or another count is refused, the buffer stays usable.
    let mut staged = be.upload_labels(&[1, 2], 10)?;
    err(
        be.upload_labels_into(&mut staged, &[1, 10], 10),
        "staged label 10",
    );
    err(
        be.upload_labels_into(&mut staged, &[1, 2, 3], 10),
        "3 staged into 2",
    );
    be.upload_labels_into(&mut staged, &[3, 7], 10)?;
    assert_eq!(be.labels_len(&staged), 2);
    // Label 7 (checked against 10 classes) used with 5 logits per row. (The CPU checks the
    // values; CUDA refuses any labels uploaded for more classes than the logits have.)
    let logits5 = be.upload(&[0.0; 10])?;
    for e in [
        err(
            be.softmax_cross_entropy_fwd(&logits5, 2, 5, &staged),
            "softmax, 5 classes",
        ),
        err(
            be.count_correct(&logits5, 2, 5, &staged),
            "count_correct, 5 classes",
        ),
    ] {
        assert!(e.contains("label"), "{e}");
    }
    Ok(())
}

fn nan_loss_and_nan_gradients_are_errors<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut tape = Tape::new(be.clone());
    let logits = tape.leaf(Tensor::from_host(be, &[f32::NAN, 0.0], [1, 2])?, true);
    let labels = Arc::new(be.upload_labels(&[0], 2)?);
    let loss = tape.softmax_cross_entropy(logits, &labels)?;
    match tape.scalar(loss, "training loss") {
        Err(e @ Error::NonFinite(_)) => {
            assert!(e.to_string().contains("training loss is NaN"), "{e}")
        }
        other => panic!("a NaN loss: {other:?}"),
    }
    let mut grads = vec![Tensor::from_host(be, &[1.0, f32::INFINITY], [2])?];
    match clip_grad_norm(be, &mut grads, 5.0) {
        Err(Error::NonFinite(_)) => {}
        other => panic!("an infinite gradient: {:?}", other.err()),
    }
    Ok(())
}

test_device!(wrong_shapes, wrong_shapes_name_the_op_and_both_shapes);
test_device!(inconsistent_buffers, backend_rejects_inconsistent_buffers);
test_device!(empty_batch, empty_batch_is_an_error);
test_device!(bad_labels, bad_labels_are_errors);
test_device!(non_finite_values, nan_loss_and_nan_gradients_are_errors);
