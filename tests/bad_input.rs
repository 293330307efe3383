//! Bad input gives errors that name the op and the shapes, never panics.

use nasrs::autograd::Tape;
use nasrs::optim::clip_grad_norm;
use nasrs::{Backend, Conv2dSpec, Cpu, Error, Pool2dSpec, Tensor};
use std::sync::Arc;

fn t(be: &Cpu, shape: &[usize]) -> Tensor<Cpu> {
    Tensor::zeros(be, nasrs::Shape::new(shape)).unwrap()
}

#[test]
fn wrong_shapes_name_the_op_and_both_shapes() {
    let be = Cpu::new();
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(t(&be, &[2, 3, 8, 8]));
    let w = tape.constant(t(&be, &[4, 5, 3, 3]));
    let spec = Conv2dSpec {
        in_channels: 5,
        out_channels: 4,
        kernel: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        relu_input: false,
    };
    let err = tape.conv2d(x, w, spec).unwrap_err().to_string();
    assert!(
        err.contains("conv2d") && err.contains("[2, 3, 8, 8]") && err.contains("[4, 5, 3, 3]"),
        "{err}"
    );

    let y = tape.constant(t(&be, &[2, 3, 8, 7]));
    let err = tape.add(x, y).unwrap_err().to_string();
    assert!(
        err.contains("add") && err.contains("[2, 3, 8, 8]") && err.contains("[2, 3, 8, 7]"),
        "{err}"
    );

    let a = tape.constant(t(&be, &[4, 6]));
    let wl = tape.constant(t(&be, &[3, 5]));
    let err = tape.linear(a, wl, None).unwrap_err().to_string();
    assert!(
        err.contains("linear") && err.contains("[4, 6]") && err.contains("[3, 5]"),
        "{err}"
    );

    let err = tape
        .max_pool2d(
            a,
            Pool2dSpec {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("NCHW") && err.contains("[4, 6]"), "{err}");

    let alpha = tape.constant(t(&be, &[7]));
    let err = tape
        .mixed_op(&[Some(x), Some(x)], alpha)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixed_op") && err.contains("[7]"), "{err}");
    // Only `none` inputs: no shape to take, an error rather than a panic.
    let alpha = tape.constant(t(&be, &[2]));
    let err = tape.mixed_op(&[None, None], alpha).unwrap_err().to_string();
    assert!(err.contains("mixed_op") && err.contains("none"), "{err}");
}

#[test]
fn backend_rejects_inconsistent_buffers() {
    let be = Cpu::new();
    let err = be.add(&vec![1.0; 3], &vec![1.0; 4]).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "add", .. }), "{err}");
    let xd = nasrs::Nchw {
        n: 1,
        c: 1,
        h: 4,
        w: 4,
    };
    let err = be
        .max_pool2d_fwd(
            &vec![0.0; 15],
            xd,
            &Pool2dSpec {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("16"), "{err}");
}

#[test]
fn empty_batch_is_an_error() {
    let be = Cpu::new();
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(t(&be, &[0, 3, 8, 8]));
    let w = tape.constant(t(&be, &[4, 3, 3, 3]));
    let spec = Conv2dSpec {
        in_channels: 3,
        out_channels: 4,
        kernel: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
        groups: 1,
        relu_input: false,
    };
    let err = tape.conv2d(x, w, spec).unwrap_err().to_string();
    assert!(err.contains("empty batch"), "{err}");
    let logits = tape.constant(t(&be, &[0, 10]));
    let err = tape
        .softmax_cross_entropy(logits, &Arc::new(be.upload_labels(&[], 10).unwrap()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty batch"), "{err}");
    let err = tape
        .max_pool2d(
            x,
            Pool2dSpec {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty batch"), "{err}");
}

#[test]
fn bad_labels_are_errors() {
    let be = Cpu::new();
    let mut tape = Tape::new(be.clone());
    let logits = tape.constant(t(&be, &[2, 10]));
    let err = be.upload_labels(&[1, 10], 10).unwrap_err().to_string();
    assert!(
        err.contains("label 10") && err.contains("10 classes"),
        "{err}"
    );
    let one = Arc::new(be.upload_labels(&[1], 10).unwrap());
    let err = tape
        .softmax_cross_entropy(logits, &one)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 labels for a batch of 2"), "{err}");
}

#[test]
fn nan_loss_and_nan_gradients_are_errors() {
    let be = Cpu::new();
    let mut tape = Tape::new(be.clone());
    let logits = tape.leaf(
        Tensor::from_host(&be, &[f32::NAN, 0.0], [1, 2]).unwrap(),
        true,
    );
    let labels = Arc::new(be.upload_labels(&[0], 2).unwrap());
    let loss = tape.softmax_cross_entropy(logits, &labels).unwrap();
    let err = tape.scalar(loss, "training loss").unwrap_err();
    assert!(
        matches!(err, Error::NonFinite(_)) && err.to_string().contains("training loss is NaN"),
        "{err}"
    );
    let mut grads = vec![Tensor::from_host(&be, &[1.0, f32::INFINITY], [2]).unwrap()];
    let err = clip_grad_norm(&be, &mut grads, 5.0).unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
}
