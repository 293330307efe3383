//! What the counting backend counts for elementwise ops, reductions, the activations (ReLU,
//! sigmoid, tanh, SiLU), bf16 conversion, drop-path and the SE channel scale
//! (`ElementwiseOps`). A transcendental
//! (`exp`, `tanh`) counts as one FLOP, as the cross-entropy's `exp` does.

use super::{elem_check, flops, u, CountBuf, Counting, Io, ELEM_BYTES, HALF_BYTES};
use crate::backend::{checks, norm_scalars, ElementwiseOps, ScalarRef};
use crate::error::Result;
use crate::shape::Nchw;

impl ElementwiseOps for Counting {
    fn fill(&self, len: usize, _value: f64) -> Result<CountBuf> {
        self.unary("fill", 0, &[], len)
    }
    fn add(&self, a: &CountBuf, b: &CountBuf) -> Result<CountBuf> {
        checks::add(self, a, b)?;
        self.unary("add", u(a.len), &[a, b], a.len)
    }
    fn scale(&self, x: &CountBuf, _s: f64) -> Result<CountBuf> {
        self.unary("scale", u(x.len), &[x], x.len)
    }
    fn axpy(&self, y: &mut CountBuf, _a: f64, x: &CountBuf) -> Result<()> {
        checks::axpy(self, y, x)?;
        self.rec(
            "axpy",
            2 * u(x.len),
            Io {
                reads: vec![x, &*y],
                writes: vec![&*y],
            },
        )
    }
    fn axpy_scaled(
        &self,
        y: &mut CountBuf,
        _a: f64,
        s: ScalarRef<'_, CountBuf>,
        x: &CountBuf,
    ) -> Result<()> {
        checks::axpy_scaled(self, y, s, x)?;
        self.rec(
            "axpy_scaled",
            2 * u(x.len),
            Io {
                reads: vec![x, &*y, s.buf],
                writes: vec![&*y],
            },
        )
    }
    fn grad_norm_scalars(&self, xs: &[&CountBuf], _max_norm: f64) -> Result<CountBuf> {
        // One reduction over every buffer and a finish writing the scalars; nothing to the host.
        let n: usize = xs.iter().map(|x| x.len).sum();
        self.unary("grad_norm_scalars", 2 * u(n), xs, norm_scalars::LEN)
    }
    fn scale_assign(&self, x: &mut CountBuf, _s: f64) -> Result<()> {
        self.rec(
            "scale_assign",
            u(x.len),
            Io {
                reads: vec![&*x],
                writes: vec![&*x],
            },
        )
    }
    fn sum_squares(&self, x: &CountBuf) -> Result<f64> {
        self.rec(
            "sum_squares",
            2 * u(x.len),
            Io {
                reads: vec![x],
                writes: vec![],
            },
        )?;
        self.host_sync(8)?;
        Ok(x.len as f64)
    }
    fn sum_squares_many(&self, xs: &[&CountBuf]) -> Result<f64> {
        let n: usize = xs.iter().map(|x| x.len).sum();
        self.rec(
            "sum_squares_many",
            2 * u(n),
            Io {
                reads: xs.to_vec(),
                writes: vec![],
            },
        )?;
        self.host_sync(8)?;
        Ok(n as f64)
    }
    fn dot(&self, a: &CountBuf, b: &CountBuf) -> Result<f64> {
        checks::dot(self, a, b)?;
        self.rec(
            "dot",
            2 * u(a.len),
            Io {
                reads: vec![a, b],
                writes: vec![],
            },
        )?;
        self.host_sync(8)?;
        Ok(a.len as f64)
    }
    fn relu_fwd(&self, x: &CountBuf) -> Result<CountBuf> {
        self.unary("relu_fwd", u(x.len), &[x], x.len)
    }
    fn relu_bwd(&self, y: &CountBuf, dy: &CountBuf) -> Result<CountBuf> {
        checks::relu_bwd(self, y, dy)?;
        self.unary("relu_bwd", u(y.len), &[y, dy], y.len)
    }
    fn sigmoid_fwd(&self, x: &CountBuf) -> Result<CountBuf> {
        self.unary("sigmoid_fwd", flops::SIGMOID * u(x.len), &[x], x.len)
    }
    fn sigmoid_bwd(&self, y: &CountBuf, dy: &CountBuf) -> Result<CountBuf> {
        checks::sigmoid_bwd(self, y, dy)?;
        self.unary("sigmoid_bwd", 3 * u(y.len), &[y, dy], y.len)
    }
    fn tanh_fwd(&self, x: &CountBuf) -> Result<CountBuf> {
        self.unary("tanh_fwd", u(x.len), &[x], x.len)
    }
    fn tanh_bwd(&self, y: &CountBuf, dy: &CountBuf) -> Result<CountBuf> {
        checks::tanh_bwd(self, y, dy)?;
        self.unary("tanh_bwd", 3 * u(y.len), &[y, dy], y.len)
    }
    fn silu_fwd(&self, x: &CountBuf) -> Result<CountBuf> {
        self.unary("silu_fwd", flops::SIGMOID * u(x.len), &[x], x.len)
    }
    fn silu_bwd(&self, x: &CountBuf, dy: &CountBuf) -> Result<CountBuf> {
        checks::silu_bwd(self, x, dy)?;
        // The sigmoid again, then `dy * s * (1 + x * (1 - s))` (5).
        self.unary("silu_bwd", (flops::SIGMOID + 5) * u(x.len), &[x, dy], x.len)
    }
    fn mul(&self, a: &CountBuf, b: &CountBuf) -> Result<CountBuf> {
        checks::mul(self, a, b)?;
        self.unary("mul", u(a.len), &[a, b], a.len)
    }
    fn to_bf16(&self, x: &CountBuf) -> Result<CountBuf> {
        elem_check("to_bf16", x, ELEM_BYTES)?;
        let y = self.alloc_sized(x.len, HALF_BYTES)?;
        self.rec(
            "to_bf16",
            u(x.len),
            Io {
                reads: vec![x],
                writes: vec![&y],
            },
        )?;
        Ok(y)
    }
    fn from_bf16(&self, x: &CountBuf) -> Result<CountBuf> {
        elem_check("from_bf16", x, HALF_BYTES)?;
        self.unary("from_bf16", u(x.len), &[x], x.len)
    }
    fn half_len(&self, x: &CountBuf) -> usize {
        x.len
    }
    fn drop_path(&self, x: &CountBuf, n: usize, sample_scale: &CountBuf) -> Result<CountBuf> {
        checks::drop_path(self, x, n, sample_scale)?;
        self.unary("drop_path", u(x.len), &[x, sample_scale], x.len)
    }
    fn channel_scale_fwd(&self, x: &CountBuf, xd: Nchw, s: &CountBuf) -> Result<CountBuf> {
        checks::channel_scale_fwd(self, x, xd, s)?;
        self.unary("channel_scale_fwd", u(x.len), &[x, s], x.len)
    }
    /// One product for dx and a multiply-add for ds per element.
    fn channel_scale_bwd(
        &self,
        x: &CountBuf,
        s: &CountBuf,
        dy: &CountBuf,
        xd: Nchw,
    ) -> Result<(CountBuf, CountBuf)> {
        checks::channel_scale_bwd(self, x, s, dy, xd)?;
        let dx = self.alloc_sized(x.len, ELEM_BYTES)?;
        let ds = self.alloc_sized(s.len, ELEM_BYTES)?;
        self.rec(
            "channel_scale_bwd",
            3 * u(x.len),
            Io {
                reads: vec![x, s, dy],
                writes: vec![&dx, &ds],
            },
        )?;
        Ok((dx, ds))
    }
}
