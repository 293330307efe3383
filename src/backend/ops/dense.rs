//! The linear layer, the softmax cross-entropy loss and the count of correct predictions.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::DeviceOps;
use crate::error::Result;

pub trait DenseOps: DeviceOps {
    /// `y = x W^T + b`: x `[n, in]`, w `[out, in]`, b `[out]`.
    fn linear_fwd(
        &self,
        x: &Self::Storage,
        w: &Self::Storage,
        b: Option<&Self::Storage>,
        n: usize,
        in_f: usize,
        out_f: usize,
    ) -> Result<Self::Storage>;
    /// Returns (dx, dw, db).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn linear_bwd(
        &self,
        x: &Self::Storage,
        w: &Self::Storage,
        dy: &Self::Storage,
        n: usize,
        in_f: usize,
        out_f: usize,
        with_bias: bool,
    ) -> Result<(Self::Storage, Self::Storage, Option<Self::Storage>)>;
    /// Mean softmax cross-entropy over the batch: returns (loss `[1]`, probabilities `[n, k]`).
    fn softmax_cross_entropy_fwd(
        &self,
        logits: &Self::Storage,
        n: usize,
        k: usize,
        labels: &Self::Labels,
    ) -> Result<(Self::Storage, Self::Storage)>;
    /// `dlogits = dloss * (probs - onehot) / n`, with `dloss` a one-element buffer.
    fn softmax_cross_entropy_bwd(
        &self,
        probs: &Self::Storage,
        dloss: &Self::Storage,
        n: usize,
        k: usize,
        labels: &Self::Labels,
    ) -> Result<Self::Storage>;
    /// The number of rows of `logits` [n, k] whose first maximum (a NaN being the maximum,
    /// as PyTorch's `argmax`) is at the label, as a one-element buffer (accuracy without a
    /// host round trip).
    fn count_correct(
        &self,
        logits: &Self::Storage,
        n: usize,
        k: usize,
        labels: &Self::Labels,
    ) -> Result<Self::Storage>;
}
