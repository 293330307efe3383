//! The CUDA kernels index with 32-bit ints: every size a kernel forms as a product must fit,
//! or the op must refuse with an error, never run with a wrapped index (the loop would then
//! run zero times or wrap, leaving outputs unwritten). Checked on the simulated device,
//! through the real launch code, at shapes whose inputs are small but whose products are not.
#![cfg(feature = "cuda-sim")]

use nasrs::backend::cuda::Cuda;
use nasrs::backend::prelude::*;
use nasrs::{Conv2dSpec, Nchw};

fn spec(in_channels: usize, out_channels: usize, kernel: usize, padding: usize) -> Conv2dSpec {
    Conv2dSpec::new(in_channels, out_channels, kernel).padding(padding)
}

/// im2col's column buffer is n*c*k*k*ho*wo: 64 channels of a 3x3 conv over a 2999x2999
/// output (a 1x1 input padded by 1500) is 5.2e9 entries, past 2^31, while the input (64
/// values) and the output (9e6) are small. The op must say so.
#[test]
fn an_im2col_buffer_past_int_range_is_an_error() {
    let d = Cuda::open_sim().expect("the simulation opens");
    let xd = Nchw {
        n: 1,
        c: 64,
        h: 1,
        w: 1,
    };
    let s = spec(64, 1, 3, 1500);
    let x = d.zeros(xd.numel()).expect("input");
    let w = d.zeros(s.weight_shape().numel()).expect("weight");
    let err = d
        .conv2d_fwd(&x, xd, &w, &s)
        .err()
        .expect("a column buffer past the int range must be refused");
    assert!(
        err.to_string().contains("2^31"),
        "the error says which limit: {err}"
    );
}

/// The output itself past int range (a 1x1 input padded to 50001x50001): refused before
/// anything is allocated or launched.
#[test]
fn an_output_past_int_range_is_an_error() {
    let d = Cuda::open_sim().expect("the simulation opens");
    let xd = Nchw {
        n: 1,
        c: 1,
        h: 1,
        w: 1,
    };
    let s = spec(1, 1, 1, 25000);
    let x = d.zeros(1).expect("input");
    let w = d.zeros(1).expect("weight");
    let err = d
        .conv2d_fwd(&x, xd, &w, &s)
        .err()
        .expect("an output past the int range must be refused");
    assert!(err.to_string().contains("2^31"), "{err}");
}

/// A conv just inside the limits still runs and matches the CPU (the checks are not too
/// strict): an 8x8 input padded to a 1000x1000 output.
#[test]
fn large_padded_outputs_inside_the_limits_still_run() {
    let d = Cuda::open_sim().expect("the simulation opens");
    let cpu = nasrs::Cpu::new();
    let xd = Nchw {
        n: 1,
        c: 2,
        h: 8,
        w: 8,
    };
    let s = spec(2, 1, 3, 497);
    let xs: Vec<f32> = (0..xd.numel()).map(|i| (i as f32 * 0.37).sin()).collect();
    let ws: Vec<f32> = (0..s.weight_shape().numel())
        .map(|i| (i as f32 * 0.11).cos())
        .collect();
    let want = cpu.conv2d_fwd(&xs, xd, &ws, &s).expect("cpu conv");
    let got = d
        .conv2d_fwd(&d.upload(&xs).unwrap(), xd, &d.upload(&ws).unwrap(), &s)
        .expect("sim conv");
    let got = d.download(&got).expect("download");
    assert_eq!(got.len(), want.len());
    assert!(nasrs::backend::selftest::max_error(&got, &want) < 1e-4);
}
