//! Checks of the linear layer, the softmax cross-entropy and the correct-prediction count
//! (`DenseOps`). Labels are checked here by number only: their values were checked against
//! the class count on upload.

use super::{expect_len, labels_len};
use crate::backend::DeviceOps;
use crate::error::{Error, Result};

pub fn linear_fwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    w: &B::Storage,
    bias: Option<&B::Storage>,
    n: usize,
    in_f: usize,
    out_f: usize,
) -> Result<()> {
    expect_len(b, "linear", "input", x, n * in_f)?;
    expect_len(b, "linear", "weight", w, out_f * in_f)?;
    if let Some(bias) = bias {
        expect_len(b, "linear", "bias", bias, out_f)?;
    }
    Ok(())
}

pub fn linear_bwd<B: DeviceOps>(
    b: &B,
    x: &B::Storage,
    w: &B::Storage,
    dy: &B::Storage,
    n: usize,
    in_f: usize,
    out_f: usize,
) -> Result<()> {
    expect_len(b, "linear_bwd", "input", x, n * in_f)?;
    expect_len(b, "linear_bwd", "weight", w, out_f * in_f)?;
    expect_len(b, "linear_bwd", "output gradient", dy, n * out_f)
}

/// Logits `[n, k]` with `n` labels, and neither dimension empty (a loss needs a row and a
/// class to be a number).
pub fn softmax_cross_entropy_fwd<B: DeviceOps>(
    b: &B,
    logits: &B::Storage,
    n: usize,
    k: usize,
    labels: &B::Labels,
) -> Result<()> {
    let op = "softmax_cross_entropy";
    expect_len(b, op, "logits", logits, n * k)?;
    labels_len(b, op, labels, n)?;
    if n == 0 || k == 0 {
        return Err(Error::shape(op, format!("empty logits [{n}, {k}]")));
    }
    Ok(())
}

pub fn softmax_cross_entropy_bwd<B: DeviceOps>(
    b: &B,
    probs: &B::Storage,
    dloss: &B::Storage,
    n: usize,
    k: usize,
    labels: &B::Labels,
) -> Result<()> {
    let op = "softmax_cross_entropy_bwd";
    expect_len(b, op, "probabilities", probs, n * k)?;
    expect_len(b, op, "loss gradient", dloss, 1)?;
    labels_len(b, op, labels, n)
}

pub fn count_correct<B: DeviceOps>(
    b: &B,
    logits: &B::Storage,
    n: usize,
    k: usize,
    labels: &B::Labels,
) -> Result<()> {
    expect_len(b, "count_correct", "logits", logits, n * k)?;
    labels_len(b, "count_correct", labels, n)
}
