//! The op set of nasrs, as one trait every device implements (`cpu/`, and `cuda/` behind the
//! `cuda` feature). The autograd tape (`crate::autograd`) and everything above it are written
//! against this trait only, so the same search code runs on every device.
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
//! - Shapes are validated by the caller (`autograd::Tape`) before it reaches a backend, but a
//!   backend still returns `Error::Shape` rather than panic if lengths disagree.

pub mod checks;
pub mod counting;
pub mod cpu;
pub mod element;
pub mod selftest;

#[cfg(any(feature = "cuda", feature = "cuda-sim"))]
pub mod cuda;

pub use checks::{check_labels, check_mixed_op, same_count, softmax};
pub use element::Element;

use crate::error::Result;
use crate::shape::{Conv2dSpec, Nchw, Pool2dSpec};

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

/// What [`Backend::grad_norm_scalars`] writes, by index: the global L2 norm, its inverse
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
/// [`Backend::reset_peak_memory`]; `cuda_sim_pool_high+graph_high`: the same, as the host
/// simulation accounts it; `live_buffers_high`: the counting backend's model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeakMemory {
    pub bytes: u64,
    pub kind: &'static str,
}

/// Every op nasrs needs, forward and backward. See the module docs for the conventions.
pub trait Backend: Clone + Send + Sync + 'static {
    /// The scalar type stored (f32 on devices; f64 too on the CPU, for gradient checks).
    type Elem: Element;
    /// A flat buffer of `Elem` on the device.
    type Storage: Send + Sync + 'static;
    /// Class labels of a batch on the device (checked against the class count on upload).
    type Labels: Send + Sync + 'static;
    /// A recorded step the device replays without the host (a CUDA graph); devices without
    /// graphs use `()` and never return one from [`Backend::capture`].
    type Graph: Send + Sync + 'static;
    /// A flat buffer of bf16 values on the device: the storage of activations saved for
    /// backward in the bf16 activation mode (`autograd::Precision::Bf16`). Arithmetic never
    /// reads it directly; it is widened back with [`Backend::from_bf16`] first.
    type Half: Send + Sync + 'static;

    /// A human-readable device name ("cpu (2 threads)", "cuda:0 NVIDIA H200").
    fn device_name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------
    fn zeros(&self, len: usize) -> Result<Self::Storage>;
    fn upload(&self, host: &[Self::Elem]) -> Result<Self::Storage>;
    fn download(&self, buf: &Self::Storage) -> Result<Vec<Self::Elem>>;
    fn len(&self, buf: &Self::Storage) -> usize;
    /// The address the device's kernels see for `buf` (a device pointer on CUDA, the data's
    /// host address on the CPU): what a captured graph bakes in, so what a graph cache must
    /// key on. Not the address of the host-side handle, which can be reused while the
    /// device buffer differs, and the reverse.
    fn storage_addr(&self, buf: &Self::Storage) -> usize;
    /// As [`Backend::storage_addr`], for labels.
    fn labels_addr(&self, labels: &Self::Labels) -> usize;
    fn copy(&self, buf: &Self::Storage) -> Result<Self::Storage>;
    /// Overwrites `dst` with `src` (same length).
    fn copy_into(&self, dst: &mut Self::Storage, src: &Self::Storage) -> Result<()>;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;
    /// Overwrites `dst` with host data of the same length (a staged input batch: the buffer,
    /// and so every pointer a captured graph holds to it, stays the same).
    fn upload_into(&self, dst: &mut Self::Storage, host: &[Self::Elem]) -> Result<()> {
        let src = self.upload(host)?;
        self.copy_into(dst, &src)
    }
    /// A buffer of `len` elements all equal to `value`, filled on the device (no upload).
    fn fill(&self, len: usize, value: f64) -> Result<Self::Storage>;

    // ---- labels ----------------------------------------------------------------------------
    /// Uploads a batch's labels; a label `>= classes` is an error naming it.
    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<Self::Labels>;
    /// Overwrites staged labels of the same length (see `upload_into`).
    fn upload_labels_into(
        &self,
        dst: &mut Self::Labels,
        labels: &[u32],
        classes: usize,
    ) -> Result<()>;
    fn labels_len(&self, labels: &Self::Labels) -> usize;

    // ---- graphs ----------------------------------------------------------------------------
    /// Records the device work `body` queues into a graph, without running it, or returns
    /// `Ok(None)` without calling `body` where the device has no graphs (then the caller
    /// runs `body` itself). `body` must not read anything back to the host, and every buffer
    /// it allocates must be freed before it returns, except through buffers allocated before
    /// the capture (the graph replays with the same pointers).
    fn capture(&self, body: &mut dyn FnMut() -> Result<()>) -> Result<Option<Self::Graph>> {
        let _ = body;
        Ok(None)
    }
    /// Runs a captured graph once (queued; results are read as usual).
    fn replay(&self, graph: &Self::Graph) -> Result<()> {
        let _ = graph;
        Err(crate::error::Error::invalid(
            "graph replay",
            format!("{} has no graphs", self.device_name()),
        ))
    }

    // ---- measurement (defaults: host wall clock, the process's resident set) --------------
    /// Seconds the device spends on the work `f` queues. The default brackets `f` with
    /// `synchronize` and reads the host clock; a GPU records events on its stream instead.
    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.synchronize()?;
        let t = std::time::Instant::now();
        f()?;
        self.synchronize()?;
        Ok(t.elapsed().as_secs_f64())
    }
    /// What `time_region` measures with (`wall_clock`, `cuda_events`).
    fn timer_kind(&self) -> &'static str {
        "wall_clock"
    }
    /// Restarts the peak-memory mark where the device can (a no-op where it cannot).
    fn reset_peak_memory(&self) -> Result<()> {
        Ok(())
    }
    /// Peak memory since the last reset, where known.
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        Ok(crate::host::peak_rss_bytes().map(|bytes| PeakMemory {
            bytes,
            kind: "max_rss_cumulative",
        }))
    }

    // ---- elementwise ---------------------------------------------------------------------
    /// `a + b`, same length.
    fn add(&self, a: &Self::Storage, b: &Self::Storage) -> Result<Self::Storage>;
    /// `s * x`.
    fn scale(&self, x: &Self::Storage, s: f64) -> Result<Self::Storage>;
    /// `y += a * x` in place (gradient accumulation, finite-difference weight perturbation).
    fn axpy(&self, y: &mut Self::Storage, a: f64, x: &Self::Storage) -> Result<()>;
    /// `x *= s` in place (gradient clipping).
    fn scale_assign(&self, x: &mut Self::Storage, s: f64) -> Result<()>;
    /// Sum of squares, returned to the host (gradient norms; a synchronisation point).
    fn sum_squares(&self, x: &Self::Storage) -> Result<f64>;
    /// Sum of squares over several buffers with one host round trip (the global gradient
    /// norm: one synchronisation per step instead of one per parameter tensor). The default
    /// sums `sum_squares` of each in order.
    fn sum_squares_many(&self, xs: &[&Self::Storage]) -> Result<f64> {
        let mut sq = 0.0;
        for x in xs {
            sq += self.sum_squares(x)?;
        }
        Ok(sq)
    }
    /// The global norm of several buffers, its inverse and the clip coefficient for
    /// `max_norm`, in a device buffer laid out as [`norm_scalars`] (no host round trip on a
    /// GPU). The default computes them on the host from `sum_squares_many`.
    fn grad_norm_scalars(&self, xs: &[&Self::Storage], max_norm: f64) -> Result<Self::Storage> {
        let norm = self.sum_squares_many(xs)?.sqrt();
        let host: Vec<Self::Elem> = norm_scalar_values(norm, max_norm)
            .iter()
            .map(|&v| Self::Elem::from_f64(v))
            .collect();
        self.upload(&host)
    }
    /// `y += a * s * x` in place, with `s` a scalar on the device.
    fn axpy_scaled(
        &self,
        y: &mut Self::Storage,
        a: f64,
        s: ScalarRef<'_, Self::Storage>,
        x: &Self::Storage,
    ) -> Result<()>;
    /// Dot product, returned to the host.
    fn dot(&self, a: &Self::Storage, b: &Self::Storage) -> Result<f64>;
    /// `y = x <= 0 ? 0 : x`: NaN stays NaN, as in PyTorch (never `!(x > 0)`, `max` or
    /// `fmaxf`, which map it to 0).
    fn relu_fwd(&self, x: &Self::Storage) -> Result<Self::Storage>;
    /// `dx = y <= 0 ? 0 : dy` (PyTorch's `threshold_backward`: a NaN output passes its
    /// gradient); takes the forward output so the input need not be kept.
    fn relu_bwd(&self, y: &Self::Storage, dy: &Self::Storage) -> Result<Self::Storage>;

    // ---- bf16 storage ----------------------------------------------------------------------
    /// Rounds every element to bf16, to nearest with ties to even (NaN stays a NaN, values
    /// beyond bf16's range become infinities), into a fresh bf16 buffer.
    fn to_bf16(&self, x: &Self::Storage) -> Result<Self::Half>;
    /// Widens a bf16 buffer back to `Elem`, exactly (every bf16 value is an f32).
    #[allow(clippy::wrong_self_convention)] // a device op named for its conversion, as to_bf16
    fn from_bf16(&self, x: &Self::Half) -> Result<Self::Storage>;
    fn half_len(&self, x: &Self::Half) -> usize;

    // ---- convolution (no bias; weight [out, in / groups, k, k]) -------------------------------
    // With `spec.relu_input` every conv op reads `relu(x)` (`relu_fwd`'s rule) where it reads
    // `x` (applied as the input is read, or in a transient buffer freed inside the op, never
    // stored).
    fn conv2d_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        w: &Self::Storage,
        spec: &Conv2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx = conv_transpose(dy, w)`, zero where `x <= 0` when `spec.relu_input` (`relu_bwd`'s
    /// rule); `x` (the forward input) is read only then.
    fn conv2d_bwd_data(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        w: &Self::Storage,
        x_dims: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx += conv2d_bwd_data(..)` in place (the fused-ReLU mask applies to the contribution
    /// only, never to what `dx` already holds).
    fn conv2d_bwd_data_into(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        w: &Self::Storage,
        x_dims: Nchw,
        spec: &Conv2dSpec,
        dx: &mut Self::Storage,
    ) -> Result<()> {
        let g = self.conv2d_bwd_data(x, dy, w, x_dims, spec)?;
        self.axpy(dx, 1.0, &g)
    }
    fn conv2d_bwd_weight(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Self::Storage>;

    // ---- pooling -------------------------------------------------------------------------
    fn max_pool2d_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    /// Routes each output gradient to the first maximum of its window (PyTorch's tie rule),
    /// or to its last NaN (a NaN is the maximum, as in PyTorch's `max_pool2d`, whose output
    /// it is), recomputed from `x` so no index tensor is stored.
    fn max_pool2d_bwd(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx += max_pool2d_bwd(..)` in place.
    fn max_pool2d_bwd_into(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Self::Storage,
    ) -> Result<()> {
        let g = self.max_pool2d_bwd(x, dy, x_dims, spec)?;
        self.axpy(dx, 1.0, &g)
    }
    /// Padding is not counted in the divisor (`count_include_pad=False`).
    fn avg_pool2d_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    fn avg_pool2d_bwd(
        &self,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx += avg_pool2d_bwd(..)` in place.
    fn avg_pool2d_bwd_into(
        &self,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Self::Storage,
    ) -> Result<()> {
        let g = self.avg_pool2d_bwd(dy, x_dims, spec)?;
        self.axpy(dx, 1.0, &g)
    }
    /// Mean over H and W: [N, C, H, W] -> [N, C].
    fn global_avg_pool_fwd(&self, x: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;
    fn global_avg_pool_bwd(&self, dy: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;

    // ---- batch norm (per channel over N, H, W) --------------------------------------------------
    /// Training mode: normalise with batch statistics, update `running` if given.
    /// `affine` is (gamma, beta).
    fn batch_norm_train_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        affine: Option<(&Self::Storage, &Self::Storage)>,
        running: Option<RunningStats<'_, Self::Storage>>,
        eps: f64,
    ) -> Result<(Self::Storage, BatchNormSaved<Self::Storage>)>;
    /// Eval mode: normalise with the running statistics.
    fn batch_norm_eval_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        affine: Option<(&Self::Storage, &Self::Storage)>,
        running_mean: &Self::Storage,
        running_var: &Self::Storage,
        eps: f64,
    ) -> Result<Self::Storage>;
    /// Backward of the training-mode forward: `dx`, and `(dgamma, dbeta)` when `gamma` is given.
    #[allow(clippy::type_complexity)]
    fn batch_norm_bwd(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        gamma: Option<&Self::Storage>,
        saved: &BatchNormSaved<Self::Storage>,
    ) -> Result<(Self::Storage, Option<(Self::Storage, Self::Storage)>)>;

    // ---- layout --------------------------------------------------------------------------
    /// Concatenates NCHW tensors of equal N, H, W along channels.
    fn concat_channels(&self, parts: &[(&Self::Storage, Nchw)]) -> Result<Self::Storage>;
    /// The backward of `concat_channels`: splits `dy` back into per-part channel counts.
    fn split_channels(
        &self,
        dy: &Self::Storage,
        dy_dims: Nchw,
        channels: &[usize],
    ) -> Result<Vec<Self::Storage>>;
    /// `x[:, :, 1:, 1:]` (FactorizedReduce's second path): [N, C, H, W] -> [N, C, H-1, W-1].
    fn shift_crop_fwd(&self, x: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;
    fn shift_crop_bwd(&self, dy: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;

    // ---- dense layers and loss -----------------------------------------------------------------
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

    // ---- regularisation ------------------------------------------------------------------------
    /// `y[n, ...] = x[n, ...] * sample_scale[n]` (drop-path: scale is 0 or 1 / keep_prob). Its
    /// own backward: `dx = drop_path(dy, sample_scale)`.
    fn drop_path(
        &self,
        x: &Self::Storage,
        n: usize,
        sample_scale: &Self::Storage,
    ) -> Result<Self::Storage>;

    // ---- the DARTS MixedOp ---------------------------------------------------------------------
    /// `y = sum_k softmax(alpha)_k * x_k`, softmax computed inside over all `xs.len()` alphas.
    /// `xs[k] = None` declares input `k` all zero (the DARTS `none` op) without a buffer: it
    /// keeps its softmax weight but is never read. Present inputs have `len` elements; at
    /// least one must be present.
    fn mixed_op_fwd(
        &self,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
    ) -> Result<Self::Storage>;
    /// One pass for every gradient: `dx_k = w_k dy` for each present `k` with `need_dx[k]`
    /// (None for absent inputs), and `dalpha_k = w_k (<dy, x_k> - sum_j w_j <dy, x_j>)` for
    /// every `k`, with `<dy, x_k> = 0` for an absent (zero) input: its alpha still moves.
    fn mixed_op_bwd(
        &self,
        dy: &Self::Storage,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<Self::Storage>>, Self::Storage)>;
    /// `mixed_op_bwd`, except that a wanted `dx_k` with `acc[k] = Some(buf)` is added into
    /// `buf` (`buf += w_k dy`) and returned as None; the others are returned fresh as there.
    /// `acc` has one entry per input (entries of unwanted or absent inputs are ignored).
    #[allow(clippy::type_complexity)]
    fn mixed_op_bwd_into(
        &self,
        dy: &Self::Storage,
        xs: &[Option<&Self::Storage>],
        alpha: &Self::Storage,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut Self::Storage>],
    ) -> Result<(Vec<Option<Self::Storage>>, Self::Storage)> {
        same_count("mixed_op_bwd_into", xs.len(), &[acc.len()])?;
        let (mut dxs, dalpha) = self.mixed_op_bwd(dy, xs, alpha, len, need_dx)?;
        for (dx, a) in dxs.iter_mut().zip(acc.iter_mut()) {
            if let (Some(g), Some(a)) = (dx.as_ref(), a.as_deref_mut()) {
                self.axpy(a, 1.0, g)?;
                *dx = None;
            }
        }
        Ok((dxs, dalpha))
    }

    // ---- optimizers (in place) ---------------------------------------------------------------
    /// `grad_scale`, when given, multiplies the gradient first (global-norm clipping fused
    /// into the update, the coefficient read on the device).
    fn sgd_step(
        &self,
        param: &mut Self::Storage,
        grad: &Self::Storage,
        momentum_buf: &mut Self::Storage,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Self::Storage>>,
    ) -> Result<()>;
    fn adam_step(
        &self,
        param: &mut Self::Storage,
        grad: &Self::Storage,
        m: &mut Self::Storage,
        v: &mut Self::Storage,
        hp: &AdamStep,
    ) -> Result<()>;
    /// `sgd_step` of every `(params[i], grads[i], momentum_bufs[i])` as one op (a
    /// multi-tensor "foreach" update, as PyTorch's `foreach=True` SGD: a handful of launches
    /// on a GPU instead of one per tensor). Results are those of `sgd_step` on each tensor;
    /// the default loops over it.
    fn sgd_step_many(
        &self,
        params: &mut [&mut Self::Storage],
        grads: &[&Self::Storage],
        momentum_bufs: &mut [&mut Self::Storage],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Self::Storage>>,
    ) -> Result<()> {
        same_count(
            "sgd_step_many",
            params.len(),
            &[grads.len(), momentum_bufs.len()],
        )?;
        for ((p, g), m) in params.iter_mut().zip(grads).zip(momentum_bufs.iter_mut()) {
            self.sgd_step(p, g, m, hp, grad_scale)?;
        }
        Ok(())
    }
    /// `adam_step` of every `(params[i], grads[i], ms[i], vs[i])` as one op (see
    /// `sgd_step_many`); the default loops over `adam_step`.
    fn adam_step_many(
        &self,
        params: &mut [&mut Self::Storage],
        grads: &[&Self::Storage],
        ms: &mut [&mut Self::Storage],
        vs: &mut [&mut Self::Storage],
        hp: &AdamStep,
    ) -> Result<()> {
        same_count(
            "adam_step_many",
            params.len(),
            &[grads.len(), ms.len(), vs.len()],
        )?;
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(ms.iter_mut())
            .zip(vs.iter_mut())
        {
            self.adam_step(p, g, m, v, hp)?;
        }
        Ok(())
    }
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
