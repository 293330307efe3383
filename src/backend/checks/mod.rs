//! Every op's argument checks, written once: a function per op, named after it
//! (`checks::conv2d_fwd` checks `ConvOps::conv2d_fwd`), generic over the device and reading
//! lengths through [`DeviceOps::len`]. Every device's op calls its check first and assumes
//! valid input after it, so the three devices refuse the same calls with the same message
//! (`Error::Shape`: the op, the operand, got vs expected). One file per op family, as `ops/`.
//!
//! An op with nothing to check (`zeros`, `upload`, `download`, `copy`, `fill`, `scale`,
//! `scale_assign`, `sum_squares`, `sum_squares_many`, `grad_norm_scalars`, `relu_fwd`,
//! `sigmoid_fwd`, `tanh_fwd`, `silu_fwd`, `to_bf16`, `from_bf16`) has no function here. What
//! only one device needs stays in that device, marked as such: CUDA's 2^31 `int` limit,
//! MixedOp width and launch limits, and its labels' class count; the CPU's label values; the counting device's bf16-vs-f32 buffer check.
//!
//! Also the host arithmetic every device shares: the softmax of the architecture weights
//! (the MixedOp's weights on the CPU, the genotype's ranking in `nas`).

mod conv;
mod dense;
mod device;
mod elementwise;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod pool;

pub use conv::*;
pub use dense::*;
pub use device::*;
pub use elementwise::*;
pub use layout::*;
pub use mixed_op::*;
pub use norm::*;
pub use optim::*;
pub use pool::*;

use crate::backend::{DeviceOps, Element, ScalarRef};
use crate::error::{Error, Result};

/// `buf` holds `want` elements, or a shape error naming `op` and the operand (`what`).
fn expect_len<B: DeviceOps>(
    b: &B,
    op: &'static str,
    what: &str,
    buf: &B::Storage,
    want: usize,
) -> Result<()> {
    let got = b.len(buf);
    if got != want {
        return Err(Error::shape(
            op,
            format!("{what} has {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

/// Two operands of an elementwise op hold as many elements.
fn same_len<B: DeviceOps>(b: &B, op: &'static str, x: &B::Storage, y: &B::Storage) -> Result<()> {
    let (m, n) = (b.len(x), b.len(y));
    if m != n {
        return Err(Error::shape(op, format!("buffers of {m} and {n} elements")));
    }
    Ok(())
}

/// A device scalar (`s.buf[s.index]`) lies inside its buffer.
fn scalar<B: DeviceOps>(b: &B, op: &'static str, s: &ScalarRef<'_, B::Storage>) -> Result<()> {
    let len = b.len(s.buf);
    if s.index >= len {
        return Err(Error::shape(
            op,
            format!("scalar index {} in a buffer of {len}", s.index),
        ));
    }
    Ok(())
}

/// A batch of `n` has `n` labels on the device.
fn labels_len<B: DeviceOps>(b: &B, op: &'static str, labels: &B::Labels, n: usize) -> Result<()> {
    let got = b.labels_len(labels);
    if got != n {
        return Err(Error::shape(op, format!("{got} labels for a batch of {n}")));
    }
    Ok(())
}

/// The tensor lists of a multi-tensor op must be equally long (a shape error naming `op`).
pub fn same_count(op: &'static str, n: usize, others: &[usize]) -> Result<()> {
    if let Some(m) = others.iter().find(|&&m| m != n) {
        return Err(Error::shape(
            op,
            format!("tensor lists of {n} and {m} entries"),
        ));
    }
    Ok(())
}

/// Labels of a batch of `n` for `k` classes, on the host: one per sample, each below `k`.
pub fn check_labels(labels: &[u32], n: usize, k: usize) -> Result<()> {
    if labels.len() != n {
        return Err(Error::shape(
            "softmax_cross_entropy",
            format!("{} labels for a batch of {n}", labels.len()),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(Error::invalid(
            "label",
            format!("label {bad} is out of range for {k} classes"),
        ));
    }
    Ok(())
}

/// Checks a MixedOp call by its lengths: one alpha per input, at least one present input
/// (`None` is an absent, all-zero one), each of `len` elements.
pub fn check_mixed_op(
    op: &'static str,
    input_lens: impl IntoIterator<Item = Option<usize>>,
    alpha_len: usize,
    len: usize,
) -> Result<()> {
    let lens: Vec<Option<usize>> = input_lens.into_iter().collect();
    let wrong = |what: &str, got: usize, want: usize| {
        Error::shape(op, format!("{what} has {got} elements, expected {want}"))
    };
    if alpha_len != lens.len() {
        return Err(wrong("alpha", alpha_len, lens.len()));
    }
    if lens.iter().all(Option::is_none) {
        return Err(Error::shape(
            op,
            format!("all {} inputs are absent (zero)", lens.len()),
        ));
    }
    match lens.iter().flatten().find(|&&l| l != len) {
        Some(&bad) => Err(wrong("op output", bad, len)),
        None => Ok(()),
    }
}

/// Numerically stable softmax in f64; a NaN (or +inf) alpha makes every weight NaN, as
/// PyTorch's softmax.
pub fn softmax(alpha: &[f64]) -> Vec<f64> {
    let m = alpha
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| Element::max(a, b));
    let e: Vec<f64> = alpha.iter().map(|&a| (a - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}
