//! Elementwise arithmetic, reductions to a host scalar, the activations (ReLU, sigmoid, tanh,
//! SiLU), bf16 conversion, drop-path and the per-channel scale of squeeze-and-excitation.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::DeviceOps;
use crate::backend::{norm_scalar_values, Element, ScalarRef};
use crate::error::Result;
use crate::shape::Nchw;

pub trait ElementwiseOps: DeviceOps {
    /// A buffer of `len` elements all equal to `value`, filled on the device (no upload).
    fn fill(&self, len: usize, value: f64) -> Result<Self::Storage>;
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
    /// `max_norm`, in a device buffer laid out as [`norm_scalars`](crate::backend::norm_scalars) (no host round trip on a
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
    /// `y = 1 / (1 + exp(-x))`; NaN stays NaN.
    fn sigmoid_fwd(&self, x: &Self::Storage) -> Result<Self::Storage>;
    /// `dx = dy * y * (1 - y)` from the forward output `y` (the input need not be kept).
    fn sigmoid_bwd(&self, y: &Self::Storage, dy: &Self::Storage) -> Result<Self::Storage>;
    /// `y = tanh(x)`; NaN stays NaN.
    fn tanh_fwd(&self, x: &Self::Storage) -> Result<Self::Storage>;
    /// `dx = dy * (1 - y^2)` from the forward output `y`.
    fn tanh_bwd(&self, y: &Self::Storage, dy: &Self::Storage) -> Result<Self::Storage>;
    /// SiLU (swish): `y = x / (1 + exp(-x))`, PyTorch's formula (so `silu(-inf)` is NaN there
    /// and here).
    fn silu_fwd(&self, x: &Self::Storage) -> Result<Self::Storage>;
    /// `dx = dy * s * (1 + x * (1 - s))` with `s = sigmoid(x)`: from the forward input, as
    /// PyTorch's `silu_backward` (the output alone does not determine `x`).
    fn silu_bwd(&self, x: &Self::Storage, dy: &Self::Storage) -> Result<Self::Storage>;
    /// `a * b` element by element, same length. Its backward is two products:
    /// `da = dy * b`, `db = dy * a`.
    fn mul(&self, a: &Self::Storage, b: &Self::Storage) -> Result<Self::Storage>;
    /// Rounds every element to bf16, to nearest with ties to even (NaN stays a NaN, values
    /// beyond bf16's range become infinities), into a fresh bf16 buffer.
    fn to_bf16(&self, x: &Self::Storage) -> Result<Self::Half>;
    /// Widens a bf16 buffer back to `Elem`, exactly (every bf16 value is an f32).
    #[allow(clippy::wrong_self_convention)] // a device op named for its conversion, as to_bf16
    fn from_bf16(&self, x: &Self::Half) -> Result<Self::Storage>;
    fn half_len(&self, x: &Self::Half) -> usize;
    /// `y[n, ...] = x[n, ...] * sample_scale[n]` (drop-path: scale is 0 or 1 / keep_prob). Its
    /// own backward: `dx = drop_path(dy, sample_scale)`.
    fn drop_path(
        &self,
        x: &Self::Storage,
        n: usize,
        sample_scale: &Self::Storage,
    ) -> Result<Self::Storage>;
    /// Squeeze-and-excitation's channel scale: `y[n, c, h, w] = x[n, c, h, w] * s[n, c]`,
    /// with `s` of `n * c` elements.
    fn channel_scale_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        s: &Self::Storage,
    ) -> Result<Self::Storage>;
    /// The backward of `channel_scale_fwd` in one pass: `(dx, ds)` with
    /// `dx = dy * s[n, c]` and `ds[n, c] = sum over h, w of dy * x`.
    fn channel_scale_bwd(
        &self,
        x: &Self::Storage,
        s: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
    ) -> Result<(Self::Storage, Self::Storage)>;
}
