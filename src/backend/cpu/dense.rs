//! CPU linear layer (GEMM) and mean softmax cross-entropy.

use super::Cpu;
use crate::backend::{checks, DenseOps, Element};
use crate::error::Result;

/// y [n, out] = x [n, in] * w^T + b.
pub fn linear_fwd<T: Element>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    n: usize,
    in_f: usize,
    out_f: usize,
) -> Vec<T> {
    let mut y = vec![T::ZERO; n * out_f];
    if let Some(b) = b {
        for row in y.chunks_mut(out_f) {
            row.copy_from_slice(b);
        }
    }
    let beta = if b.is_some() { T::ONE } else { T::ZERO };
    unsafe {
        T::gemm(
            n,
            in_f,
            out_f,
            T::ONE,
            x.as_ptr(),
            in_f as isize,
            1,
            w.as_ptr(),
            1,
            in_f as isize,
            beta,
            y.as_mut_ptr(),
            out_f as isize,
            1,
        );
    }
    y
}

/// (dx = dy w, dw = dy^T x, db = column sums of dy).
#[allow(clippy::type_complexity)]
pub fn linear_bwd<T: Element>(
    x: &[T],
    w: &[T],
    dy: &[T],
    n: usize,
    in_f: usize,
    out_f: usize,
    with_bias: bool,
) -> (Vec<T>, Vec<T>, Option<Vec<T>>) {
    let mut dx = vec![T::ZERO; n * in_f];
    let mut dw = vec![T::ZERO; out_f * in_f];
    unsafe {
        T::gemm(
            n,
            out_f,
            in_f,
            T::ONE,
            dy.as_ptr(),
            out_f as isize,
            1,
            w.as_ptr(),
            in_f as isize,
            1,
            T::ZERO,
            dx.as_mut_ptr(),
            in_f as isize,
            1,
        );
        T::gemm(
            out_f,
            n,
            in_f,
            T::ONE,
            dy.as_ptr(),
            1,
            out_f as isize,
            x.as_ptr(),
            in_f as isize,
            1,
            T::ZERO,
            dw.as_mut_ptr(),
            in_f as isize,
            1,
        );
    }
    let db = with_bias.then(|| {
        let mut db = vec![T::ZERO; out_f];
        for row in dy.chunks(out_f) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        db
    });
    (dx, dw, db)
}

/// Returns (mean loss, softmax probabilities). Log-sum-exp in f64 for a stable loss; a NaN
/// logit makes its row's maximum, probabilities and so the loss NaN (as PyTorch).
pub fn softmax_cross_entropy_fwd<T: Element>(
    logits: &[T],
    n: usize,
    k: usize,
    labels: &[u32],
) -> (T, Vec<T>) {
    let mut probs = vec![T::ZERO; n * k];
    let mut total = 0.0;
    for ((row, prow), &label) in logits.chunks(k).zip(probs.chunks_mut(k)).zip(labels) {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, v| Element::max(a, v.to_f64()));
        let sum: f64 = row.iter().map(|v| (v.to_f64() - m).exp()).sum();
        for (p, v) in prow.iter_mut().zip(row) {
            *p = T::from_f64((v.to_f64() - m).exp() / sum);
        }
        total += m + sum.ln() - row[label as usize].to_f64();
    }
    (T::from_f64(total / n as f64), probs)
}

/// Rows of `logits` whose first maximum is at the label (PyTorch's `argmax`: a NaN is the
/// maximum, the first of equals wins).
pub fn count_correct<T: Element>(logits: &[T], k: usize, labels: &[u32]) -> usize {
    if k == 0 {
        return 0;
    }
    let beats = |v: T, best: T| v > best || (v.is_nan() && !best.is_nan());
    logits
        .chunks(k)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = (0..k).fold(0, |b, j| if beats(row[j], row[b]) { j } else { b });
            best as u32 == label
        })
        .count()
}

pub fn softmax_cross_entropy_bwd<T: Element>(
    probs: &[T],
    dloss: T,
    n: usize,
    k: usize,
    labels: &[u32],
) -> Vec<T> {
    let s = dloss / T::from_f64(n as f64);
    let mut d: Vec<T> = probs.iter().map(|&p| p * s).collect();
    for (row, &label) in d.chunks_mut(k).zip(labels) {
        row[label as usize] -= s;
    }
    d
}

/// CPU only: every label below the `k` classes of the logits. The labels are host memory
/// here, so their values are checked at each use (`check_labels`' range rule); CUDA checks the
/// class count they were uploaded for instead, the counting device has no values.
fn label_values(labels: &[u32], k: usize) -> Result<()> {
    checks::check_labels(labels, labels.len(), k)
}

impl<T: Element> DenseOps for Cpu<T> {
    fn linear_fwd(
        &self,
        x: &Vec<T>,
        w: &Vec<T>,
        b: Option<&Vec<T>>,
        n: usize,
        in_f: usize,
        out_f: usize,
    ) -> Result<Vec<T>> {
        checks::linear_fwd(self, x, w, b, n, in_f, out_f)?;
        Ok(linear_fwd(x, w, b.map(|b| b.as_slice()), n, in_f, out_f))
    }
    #[allow(clippy::type_complexity)]
    fn linear_bwd(
        &self,
        x: &Vec<T>,
        w: &Vec<T>,
        dy: &Vec<T>,
        n: usize,
        in_f: usize,
        out_f: usize,
        with_bias: bool,
    ) -> Result<(Vec<T>, Vec<T>, Option<Vec<T>>)> {
        checks::linear_bwd(self, x, w, dy, n, in_f, out_f)?;
        Ok(linear_bwd(x, w, dy, n, in_f, out_f, with_bias))
    }
    fn softmax_cross_entropy_fwd(
        &self,
        logits: &Vec<T>,
        n: usize,
        k: usize,
        labels: &Vec<u32>,
    ) -> Result<(Vec<T>, Vec<T>)> {
        checks::softmax_cross_entropy_fwd(self, logits, n, k, labels)?;
        label_values(labels, k)?;
        let (loss, probs) = softmax_cross_entropy_fwd(logits, n, k, labels);
        Ok((vec![loss], probs))
    }
    fn softmax_cross_entropy_bwd(
        &self,
        probs: &Vec<T>,
        dloss: &Vec<T>,
        n: usize,
        k: usize,
        labels: &Vec<u32>,
    ) -> Result<Vec<T>> {
        checks::softmax_cross_entropy_bwd(self, probs, dloss, n, k, labels)?;
        label_values(labels, k)?;
        Ok(softmax_cross_entropy_bwd(probs, dloss[0], n, k, labels))
    }
    fn count_correct(
        &self,
        logits: &Vec<T>,
        n: usize,
        k: usize,
        labels: &Vec<u32>,
    ) -> Result<Vec<T>> {
        checks::count_correct(self, logits, n, k, labels)?;
        label_values(labels, k)?;
        Ok(vec![T::from_f64(count_correct(logits, k, labels) as f64)])
    }
}
