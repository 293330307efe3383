//! Every op's arguments are checked once (`nasrs::backend::checks`) and every device calls
//! that check first, so a bad call gets the same error, word for word, on every device: the
//! CPU and the CUDA simulation (`test_device!`) and the counting device. One wrong-length (or
//! otherwise wrong) operand per op, across every op family.

mod common;

use nasrs::backend::counting::Counting;
use nasrs::backend::{AdamStep, BatchNormSaved, ScalarRef, SgdStep};
use nasrs::{Backend, Conv2dSpec, Cpu, Nchw, Pool2dSpec};

const X: Nchw = Nchw {
    n: 1,
    c: 1,
    h: 4,
    w: 4,
};
const X2: Nchw = Nchw { c: 2, ..X };

const CONV: Conv2dSpec = Conv2dSpec {
    in_channels: 1,
    out_channels: 2,
    kernel: 3,
    stride: 1,
    padding: 1,
    dilation: 1,
    groups: 1,
    relu_input: false,
};

const POOL: Pool2dSpec = Pool2dSpec {
    kernel: 3,
    stride: 1,
    padding: 1,
};

const SGD: SgdStep = SgdStep {
    lr: 0.1,
    momentum: 0.9,
    weight_decay: 0.0,
};

const ADAM: AdamStep = AdamStep {
    lr: 0.1,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.0,
    step: 1,
};

/// What each bad call must answer, on every device (`op: shape mismatch: detail`).
const EXPECTED: &[&str] = &[
    "copy_into: shape mismatch: buffers of 3 and 4 elements",
    "upload_into: shape mismatch: 4 elements into a buffer of 3",
    "add: shape mismatch: buffers of 3 and 4 elements",
    "axpy_scaled: shape mismatch: scalar index 5 in a buffer of 3",
    "drop_path: shape mismatch: sample scale has 3 elements, expected 2",
    "sigmoid_bwd: shape mismatch: buffers of 3 and 4 elements",
    "tanh_bwd: shape mismatch: buffers of 3 and 4 elements",
    "silu_bwd: shape mismatch: buffers of 3 and 4 elements",
    "mul: shape mismatch: buffers of 3 and 4 elements",
    "conv2d_fwd: shape mismatch: weight has 17 elements, expected 18",
    "conv2d_bwd_data: shape mismatch: output gradient has 31 elements, expected 32",
    "conv2d_bwd_data_into: shape mismatch: accumulator has 15 elements, expected 16",
    "conv2d_bwd_weight: shape mismatch: output gradient has 16 elements, expected 32",
    "max_pool2d: shape mismatch: empty batch in input [0, 1, 4, 4]",
    "max_pool2d_bwd_into: shape mismatch: accumulator has 15 elements, expected 16",
    "avg_pool2d_fwd: shape mismatch: input has 15 elements, expected 16",
    "global_avg_pool_bwd: shape mismatch: output gradient has 2 elements, expected 1",
    "batch_norm: shape mismatch: beta has 3 elements, expected 2",
    "batch_norm_bwd: shape mismatch: saved mean has 3 elements, expected 2",
    "concat_channels: shape mismatch: input has 15 elements, expected 16",
    "split_channels: shape mismatch: parts of [1, 2] channels do not add up to 2",
    "shift_crop: shape mismatch: input [1, 1, 1, 4] needs H and W of at least 2",
    "linear: shape mismatch: bias has 2 elements, expected 1",
    "linear_bwd: shape mismatch: output gradient has 3 elements, expected 2",
    "softmax_cross_entropy: shape mismatch: 1 labels for a batch of 2",
    "count_correct: shape mismatch: 1 labels for a batch of 2",
    "mixed_op: shape mismatch: alpha has 3 elements, expected 2",
    "mixed_op_bwd_into: shape mismatch: accumulator has 4 elements, expected 3",
    "sgd_step: shape mismatch: buffers of 3 and 4 elements",
    "sgd_step_many: shape mismatch: tensor lists of 1 and 2 entries",
    "adam_step_many: shape mismatch: buffers of 3 and 4 elements",
];

/// The message of an error that must happen.
fn err<T>(r: nasrs::Result<T>, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e.to_string(),
    }
}

/// The messages of every bad call, in the order of [`EXPECTED`].
fn messages<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Vec<String>> {
    let up = |n: usize| be.upload(&vec![1.0f32; n]);
    let (b3, b4) = (up(3)?, up(4)?);
    let mut y3 = up(3)?;
    let labels = be.upload_labels(&[1], 10)?;
    let (mut p3, mut m3, mut v4) = (up(3)?, up(3)?, up(4)?);
    let empty = Nchw { n: 0, ..X };
    let flat = Nchw { h: 1, ..X };
    let saved = BatchNormSaved {
        mean: up(3)?,
        invstd: up(2)?,
    };
    let scale = ScalarRef { buf: &b3, index: 5 };
    Ok(vec![
        // DeviceOps
        err(be.copy_into(&mut y3, &b4), "copy_into"),
        err(be.upload_into(&mut y3, &[1.0; 4]), "upload_into"),
        // ElementwiseOps
        err(be.add(&b3, &b4), "add"),
        err(be.axpy_scaled(&mut y3, 1.0, scale, &b3), "axpy_scaled"),
        err(be.drop_path(&up(4)?, 2, &b3), "drop_path"),
        err(be.sigmoid_bwd(&b3, &b4), "sigmoid_bwd"),
        err(be.tanh_bwd(&b3, &b4), "tanh_bwd"),
        err(be.silu_bwd(&b3, &b4), "silu_bwd"),
        err(be.mul(&b3, &b4), "mul"),
        // ConvOps
        err(be.conv2d_fwd(&up(16)?, X, &up(17)?, &CONV), "conv2d_fwd"),
        err(
            be.conv2d_bwd_data(&up(16)?, &up(31)?, &up(18)?, X, &CONV),
            "conv2d_bwd_data",
        ),
        err(
            be.conv2d_bwd_data_into(&up(16)?, &up(32)?, &up(18)?, X, &CONV, &mut up(15)?),
            "conv2d_bwd_data_into",
        ),
        err(
            be.conv2d_bwd_weight(&up(16)?, &up(16)?, X, &CONV),
            "conv2d_bwd_weight",
        ),
        // PoolOps
        err(be.max_pool2d_fwd(&up(0)?, empty, &POOL), "max_pool2d_fwd"),
        err(
            be.max_pool2d_bwd_into(&up(16)?, &up(16)?, X, &POOL, &mut up(15)?),
            "max_pool2d_bwd_into",
        ),
        err(be.avg_pool2d_fwd(&up(15)?, X, &POOL), "avg_pool2d_fwd"),
        err(be.global_avg_pool_bwd(&up(2)?, X), "global_avg_pool_bwd"),
        // NormOps
        err(
            be.batch_norm_eval_fwd(
                &up(32)?,
                X2,
                Some((&up(2)?, &up(3)?)),
                &up(2)?,
                &up(2)?,
                1e-5,
            ),
            "batch_norm_eval_fwd",
        ),
        err(
            be.batch_norm_bwd(&up(32)?, &up(32)?, X2, None, &saved),
            "batch_norm_bwd",
        ),
        // LayoutOps
        err(
            be.concat_channels(&[(&up(16)?, X), (&up(15)?, X)]),
            "concat_channels",
        ),
        err(be.split_channels(&up(32)?, X2, &[1, 2]), "split_channels"),
        err(be.shift_crop_fwd(&up(4)?, flat), "shift_crop_fwd"),
        // DenseOps
        err(
            be.linear_fwd(&up(12)?, &up(6)?, Some(&up(2)?), 2, 6, 1),
            "linear_fwd",
        ),
        err(
            be.linear_bwd(&up(12)?, &up(6)?, &up(3)?, 2, 6, 1, true),
            "linear_bwd",
        ),
        err(
            be.softmax_cross_entropy_fwd(&up(20)?, 2, 10, &labels),
            "softmax_cross_entropy_fwd",
        ),
        err(be.count_correct(&up(20)?, 2, 10, &labels), "count_correct"),
        // MixedOpOps
        err(
            be.mixed_op_fwd(&[Some(&b3), Some(&b3)], &up(3)?, 3),
            "mixed_op_fwd",
        ),
        err(
            be.mixed_op_bwd_into(
                &b3,
                &[Some(&b3), Some(&b3)],
                &up(2)?,
                3,
                &[true, true],
                &mut [Some(&mut up(4)?), None],
            ),
            "mixed_op_bwd_into",
        ),
        // OptimOps
        err(
            be.sgd_step(&mut p3, &b3, &mut up(4)?, &SGD, None),
            "sgd_step",
        ),
        err(
            be.sgd_step_many(&mut [&mut p3], &[&b3, &b3], &mut [&mut m3], &SGD, None),
            "sgd_step_many",
        ),
        err(
            be.adam_step_many(
                &mut [&mut p3],
                &[&b3],
                &mut [&mut m3],
                &mut [&mut v4],
                &ADAM,
            ),
            "adam_step_many",
        ),
    ])
}

fn same_message_on_every_device<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    assert_eq!(messages(be)?, EXPECTED);
    Ok(())
}

test_device!(same_message, same_message_on_every_device);

/// The counting device computes nothing, but refuses exactly what the others refuse.
#[test]
fn counting_gives_the_cpu_messages() {
    let counted = messages(&Counting::new()).unwrap();
    assert_eq!(counted, EXPECTED);
    assert_eq!(counted, messages(&Cpu::new()).unwrap());
}
