//! The op set of nasrs: [`Backend`], the sum of one trait per op family (`ops/`), which every
//! device implements family by family (`cpu/`, `counting/`, and `cuda/` behind the `cuda`
//! feature). The autograd tape (`crate::autograd`) and everything above it are written
//! against `Backend` only, so the same search code runs on every device.
//!
//! Conventions, the same for every backend:
//! - Storage is a flat device buffer; shapes travel beside it as `Nchw` / `Shape` / lengths.
//!   Ops never move data to the host, except `download` and the few that return a host
//!   scalar (documented where they do).
//! - Forward ops return fresh buffers. Backward ops return the input gradients they were
//!   asked for (activation gradients are `=`, never `+=`); the tape does any accumulation.
//! - The `..._into` backward variants (`conv2d_bwd_data_into`, `max_pool2d_bwd_into`,
//!   `avg_pool2d_bwd_into`, `mixed_op_bwd_into`) mean `dx += gradient`: the tape hands them
//!   the gradient already pending for a value with several consumers, so the contribution
//!   is added where it is produced instead of written to a fresh buffer and `axpy`'d. Their
//!   defaults (fresh + `axpy`) keep every backend correct; CPU and CUDA accumulate in the
//!   kernel.
//! - Optimizer updates, running statistics and the `_into` accumulations are the only
//!   in-place writes.
//! - A training step can run with no host round trip in the middle (so a GPU can capture it
//!   in a graph and replay it): labels live on the device (`Labels`), the loss, the number
//!   of correct predictions and the gradient norm stay in device buffers, and scalars that
//!   depend on them (the clip coefficient, the second-order step size) reach the ops that
//!   use them as a [`ScalarRef`] into a device buffer, never through the host.
//! - Every op's arguments are checked once, in [`checks`] (`checks::conv2d_fwd` for
//!   `conv2d_fwd`, ...): every device's op calls that check first and assumes valid input
//!   after it, so all devices refuse the same calls with the same `Error::Shape` message
//!   (never a panic). Only checks one device alone needs stay in it (CUDA's 2^31 `int`
//!   limit). The tape (`autograd::Tape`) checks shapes before an op reaches a backend too,
//!   with messages in its users' terms.

pub mod checks;
pub mod counting;
pub mod cpu;
pub mod element;
pub mod ops;
pub mod selftest;

#[cfg(any(feature = "cuda", feature = "cuda-sim"))]
pub mod cuda;

pub use checks::{check_labels, check_mixed_op, same_count, softmax};
pub use element::Element;
pub use ops::{
    ConvOps, DenseOps, DeviceOps, ElementwiseOps, LayoutOps, MixedOpOps, NormOps, OptimOps, PoolOps,
};

/// What a training-mode batch norm keeps for its backward: per-channel batch mean and
/// 1 / sqrt(biased variance + eps).
pub struct BatchNormSaved<S> {
    pub mean: S,
    pub invstd: S,
}

/// Running statistics a training-mode batch norm updates in place (PyTorch semantics:
/// `running = (1 - momentum) * running + momentum * batch`, with the unbiased batch variance).
pub struct RunningStats<'a, S> {
    pub mean: &'a mut S,
    pub var: &'a mut S,
    pub momentum: f64,
}

/// Hyper-parameters of one Adam update (PyTorch `torch.optim.Adam`, L2 weight decay added to
/// the gradient, bias-corrected moments).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step count, for the bias corrections.
    pub step: u64,
}

impl AdamStep {
    /// PyTorch's bias corrections folded into two scalars, computed once on the host in
    /// f64 for every device: `step_size = lr / (1 - beta1^t)` and `sqrt(1 - beta2^t)`; the
    /// update is `p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)`.
    pub fn bias_corrected(&self) -> (f64, f64) {
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        (self.lr / bc1, bc2.sqrt())
    }
}

/// Hyper-parameters of one SGD update (PyTorch `torch.optim.SGD`, dampening 0, no Nesterov).
#[derive(Clone, Copy, Debug)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// One element of a device buffer used as a scalar operand (`buf[index]`), so that a value the
/// device computed (a gradient norm, a clip coefficient) scales another op without a host
/// round trip.
pub struct ScalarRef<'a, S> {
    pub buf: &'a S,
    pub index: usize,
}
// A reference and an index: copyable whatever `S` is (a derive would ask `S: Copy`), so one
// scale can be handed to every tensor of a multi-tensor update.
impl<S> Clone for ScalarRef<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for ScalarRef<'_, S> {}

/// What [`ElementwiseOps::grad_norm_scalars`] writes, by index: the global L2 norm, its inverse
/// (0 when the norm is 0, so a step scaled by it is a no-op), and the clip coefficient
/// `min(1, max_norm / (norm + 1e-6))` of `torch.nn.utils.clip_grad_norm_` (NaN for a NaN
/// norm, as there).
pub mod norm_scalars {
    pub const NORM: usize = 0;
    pub const INV_NORM: usize = 1;
    pub const CLIP_COEF: usize = 2;
    pub const LEN: usize = 3;
}

/// Peak memory as a device measures it: bytes, and what was measured
/// (`max_rss_cumulative`: the process's resident-set high-water mark, never reset;
/// `cuda_mempool_used_high+graph_used_high`: the stream-ordered pool's in-use high-water mark
/// plus graph memory's (a replayed graph's allocations are not in the pool) since the last
/// [`DeviceOps::reset_peak_memory`]; `cuda_sim_pool_high+graph_high`: the same, as the host
/// simulation accounts it; `live_buffers_high`: the counting backend's model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeakMemory {
    pub bytes: u64,
    pub kind: &'static str,
}

/// Every op nasrs needs, forward and backward: the op families of [`ops`] together. Code
/// above the backends is generic over `B: Backend`; a device implements each family in
/// its `<family>.rs` file. See the module docs for the conventions.
pub trait Backend:
    DeviceOps
    + ElementwiseOps
    + ConvOps
    + PoolOps
    + NormOps
    + LayoutOps
    + DenseOps
    + MixedOpOps
    + OptimOps
{
}

impl<B> Backend for B where
    B: DeviceOps
        + ElementwiseOps
        + ConvOps
        + PoolOps
        + NormOps
        + LayoutOps
        + DenseOps
        + MixedOpOps
        + OptimOps
{
}

/// The values of [`norm_scalars`] for a global norm (shared by every device's
/// `grad_norm_scalars`, so the clip rule is written once). A NaN norm gives NaN for all
/// three (PyTorch's `clamp(max=1)` keeps a NaN coefficient; `f64::min` would make it 1).
pub fn norm_scalar_values(norm: f64, max_norm: f64) -> [f64; norm_scalars::LEN] {
    let inv = if norm == 0.0 { 0.0 } else { 1.0 / norm };
    let coef = max_norm / (norm + 1e-6);
    let coef = if coef > 1.0 { 1.0 } else { coef };
    [norm, inv, coef]
}

/// `use nasrs::backend::prelude::*` brings [`Backend`] and every op family into scope, so ops
/// can be called on a concrete device (`Cpu::new().conv2d_fwd(..)`); code generic over
/// `B: Backend` needs only `Backend`.
pub mod prelude {
    pub use super::ops::{
        ConvOps, DenseOps, DeviceOps, ElementwiseOps, LayoutOps, MixedOpOps, NormOps, OptimOps,
        PoolOps,
    };
    pub use super::{Backend, Element};
}
