//! The CPU's elementwise ops, reductions, the activations (ReLU, sigmoid, tanh, SiLU), bf16
//! conversion, drop-path and the SE channel scale (`ElementwiseOps`): the reference the CUDA kernels of `kernels/elementwise.cu` are
//! checked against.

use super::{chunked_sum, group_tasks, scalar_at, team, zip_map, Cpu, ELEMS_PER_TASK};
use crate::backend::{checks, Element, ElementwiseOps, ScalarRef};
use crate::error::Result;
use crate::shape::Nchw;

impl<T: Element> ElementwiseOps for Cpu<T> {
    fn fill(&self, len: usize, value: f64) -> Result<Vec<T>> {
        Ok(vec![T::from_f64(value); len])
    }
    fn add(&self, a: &Vec<T>, b: &Vec<T>) -> Result<Vec<T>> {
        checks::add(self, a, b)?;
        Ok(zip_map(a, b, |x, y| x + y))
    }
    fn scale(&self, x: &Vec<T>, s: f64) -> Result<Vec<T>> {
        let s = T::from_f64(s);
        Ok(zip_map(x, x, |v, _| v * s))
    }
    fn axpy(&self, y: &mut Vec<T>, a: f64, x: &Vec<T>) -> Result<()> {
        checks::axpy(self, y, x)?;
        let a = T::from_f64(a);
        team::chunks_mut(y, ELEMS_PER_TASK, |i, y| {
            for (y, &x) in y.iter_mut().zip(&x[i * ELEMS_PER_TASK..]) {
                *y += a * x;
            }
        });
        Ok(())
    }
    fn axpy_scaled(
        &self,
        y: &mut Vec<T>,
        a: f64,
        s: ScalarRef<'_, Vec<T>>,
        x: &Vec<T>,
    ) -> Result<()> {
        checks::axpy_scaled(self, y, s, x)?;
        self.axpy(y, a * scalar_at(&s).to_f64(), x)
    }
    fn scale_assign(&self, x: &mut Vec<T>, s: f64) -> Result<()> {
        let s = T::from_f64(s);
        team::chunks_mut(x, ELEMS_PER_TASK, |_, c| c.iter_mut().for_each(|v| *v *= s));
        Ok(())
    }
    fn sum_squares(&self, x: &Vec<T>) -> Result<f64> {
        Ok(chunked_sum(x, x, |a, _| a.to_f64() * a.to_f64()))
    }
    /// One parallel pass over every buffer's fixed chunks (tiny buffers grouped into tasks),
    /// then each buffer's partials and the buffers added in order: the very sums of
    /// `sum_squares` per buffer, added as the default does, so the result is bitwise equal.
    fn sum_squares_many(&self, xs: &[&Vec<T>]) -> Result<f64> {
        let square = |c: &[T]| -> f64 { c.iter().map(|&a| a.to_f64() * a.to_f64()).sum() };
        let pieces = xs
            .iter()
            .flat_map(|x| x.chunks(ELEMS_PER_TASK).map(|c| (c.len(), c)));
        let tasks = group_tasks(pieces);
        let partials: Vec<f64> = team::map(tasks.len(), |t| {
            tasks[t].iter().map(|&c| square(c)).collect::<Vec<f64>>()
        })
        .concat();
        let mut sq = 0.0;
        let mut off = 0;
        for x in xs {
            let n = x.len().div_ceil(ELEMS_PER_TASK);
            sq += partials[off..off + n].iter().sum::<f64>();
            off += n;
        }
        Ok(sq)
    }
    fn dot(&self, a: &Vec<T>, b: &Vec<T>) -> Result<f64> {
        checks::dot(self, a, b)?;
        Ok(chunked_sum(a, b, |x, y| x.to_f64() * y.to_f64()))
    }
    /// PyTorch's rule: NaN stays NaN (`v <= 0`, not `!(v > 0)`, selects the zero).
    fn relu_fwd(&self, x: &Vec<T>) -> Result<Vec<T>> {
        Ok(zip_map(x, x, |v, _| if v <= T::ZERO { T::ZERO } else { v }))
    }
    /// `threshold_backward(dy, y, 0)`: a NaN output passes its gradient, as in PyTorch.
    fn relu_bwd(&self, y: &Vec<T>, dy: &Vec<T>) -> Result<Vec<T>> {
        checks::relu_bwd(self, y, dy)?;
        Ok(zip_map(
            y,
            dy,
            |v, g| if v <= T::ZERO { T::ZERO } else { g },
        ))
    }
    fn sigmoid_fwd(&self, x: &Vec<T>) -> Result<Vec<T>> {
        Ok(zip_map(x, x, |v, _| sigmoid(v)))
    }
    fn sigmoid_bwd(&self, y: &Vec<T>, dy: &Vec<T>) -> Result<Vec<T>> {
        checks::sigmoid_bwd(self, y, dy)?;
        Ok(zip_map(y, dy, |y, g| g * y * (T::ONE - y)))
    }
    fn tanh_fwd(&self, x: &Vec<T>) -> Result<Vec<T>> {
        Ok(zip_map(x, x, |v, _| T::from_f64(v.to_f64().tanh())))
    }
    fn tanh_bwd(&self, y: &Vec<T>, dy: &Vec<T>) -> Result<Vec<T>> {
        checks::tanh_bwd(self, y, dy)?;
        Ok(zip_map(y, dy, |y, g| g * (T::ONE - y * y)))
    }
    fn silu_fwd(&self, x: &Vec<T>) -> Result<Vec<T>> {
        Ok(zip_map(x, x, |v, _| {
            v / (T::ONE + T::from_f64((-v.to_f64()).exp()))
        }))
    }
    fn silu_bwd(&self, x: &Vec<T>, dy: &Vec<T>) -> Result<Vec<T>> {
        checks::silu_bwd(self, x, dy)?;
        Ok(zip_map(x, dy, |x, g| {
            let s = sigmoid(x);
            g * s * (T::ONE + x * (T::ONE - s))
        }))
    }
    fn mul(&self, a: &Vec<T>, b: &Vec<T>) -> Result<Vec<T>> {
        checks::mul(self, a, b)?;
        Ok(zip_map(a, b, |x, y| x * y))
    }
    /// `half`'s conversion, which rounds to nearest even. An f64 element is rounded to f32
    /// first (exact for the f32 product; the f64 gradient checks never use bf16).
    fn to_bf16(&self, x: &Vec<T>) -> Result<Vec<half::bf16>> {
        Ok(zip_map(
            x,
            x,
            |v, _| half::bf16::from_f32(v.to_f64() as f32),
        ))
    }
    fn from_bf16(&self, x: &Vec<half::bf16>) -> Result<Vec<T>> {
        Ok(zip_map(x, x, |h, _| T::from_f64(h.to_f64())))
    }
    fn half_len(&self, x: &Vec<half::bf16>) -> usize {
        x.len()
    }
    fn drop_path(&self, x: &Vec<T>, n: usize, sample_scale: &Vec<T>) -> Result<Vec<T>> {
        checks::drop_path(self, x, n, sample_scale)?;
        let per = x.len() / n;
        let mut y = vec![T::ZERO; x.len()];
        team::chunks_mut(&mut y, per, |i, y| {
            let s = sample_scale[i];
            for (y, &x) in y.iter_mut().zip(&x[i * per..]) {
                *y = x * s;
            }
        });
        Ok(y)
    }
    /// One plane per task; `ds` sums its plane in order (the kernel's block sum differs only
    /// in rounding).
    fn channel_scale_fwd(&self, x: &Vec<T>, xd: Nchw, s: &Vec<T>) -> Result<Vec<T>> {
        checks::channel_scale_fwd(self, x, xd, s)?;
        let mut y = vec![T::ZERO; x.len()];
        if xd.plane() > 0 {
            team::chunks_mut(&mut y, xd.plane(), |i, y| {
                let s = s[i];
                for (y, &x) in y.iter_mut().zip(&x[i * xd.plane()..]) {
                    *y = x * s;
                }
            });
        }
        Ok(y)
    }
    fn channel_scale_bwd(
        &self,
        x: &Vec<T>,
        s: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
    ) -> Result<(Vec<T>, Vec<T>)> {
        checks::channel_scale_bwd(self, x, s, dy, xd)?;
        let mut dx = vec![T::ZERO; x.len()];
        let mut ds = vec![T::ZERO; s.len()];
        if xd.plane() > 0 {
            let p = xd.plane();
            team::chunks_mut2(&mut dx, p, &mut ds, 1, |i, dx, ds| {
                let (x, dy) = (&x[i * p..][..p], &dy[i * p..][..p]);
                let mut acc = T::ZERO;
                for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = g * s[i];
                    acc += g * x;
                }
                ds[0] = acc;
            });
        }
        Ok((dx, ds))
    }
}

/// `1 / (1 + exp(-v))`, exp in f64 (exact enough for f32 and the f64 gradient checks): a
/// large negative `v` gives `1 / inf = 0`, never a NaN; a NaN stays NaN.
fn sigmoid<T: Element>(v: T) -> T {
    T::ONE / (T::ONE + T::from_f64((-v.to_f64()).exp()))
}
