//! Checks and host arithmetic every device shares, written once: argument checks by
//! length (each backend then assumes valid input) and the softmax of the architecture
//! weights (the MixedOp's weights on the CPU, the genotype's ranking in `nas`).

use crate::backend::Element;
use crate::error::{Error, Result};

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

/// Labels of a batch of `n` for `k` classes: one per sample, each below `k`.
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

/// Checks a MixedOp call by its lengths, the same on every device: one alpha per input, at
/// least one present input (`None` is an absent, all-zero one), each of `len` elements.
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
