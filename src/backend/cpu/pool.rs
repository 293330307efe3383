//! CPU max / average pooling and global average pooling, forward and backward, one channel
//! plane per rayon task: the twins of kernels/pool.cu, by the same names (`max_pool2d_fwd`
//! is `max_pool2d_fwd_f32`; the backwards add into `dx`, as the kernels with `accumulate`
//! set). Max and average pooling share one body per direction (`pool2d_fwd`,
//! `pool2d_bwd_into`). Max pooling's backward recomputes the arg-max from the input (first
//! maximum in window order, or the last NaN, as PyTorch) instead of storing indices.

use super::{par_planes, Cpu};
use crate::backend::{checks, Element, PoolOps};
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec, PoolKind};

/// The in-bounds input range `[lo, hi)` of every output position along one axis.
fn window_ranges(out: usize, input: usize, spec: &Pool2dSpec) -> Vec<(usize, usize)> {
    (0..out)
        .map(|o| {
            let start = (o * spec.stride) as isize - spec.padding as isize;
            (
                start.max(0) as usize,
                ((start + spec.kernel as isize).max(0) as usize).min(input),
            )
        })
        .collect()
}

/// Index (into the plane) of the first maximum of a window, scanning rows then columns; a
/// NaN is a maximum, and the last NaN wins (PyTorch's max_pool2d: `val > max || isnan(val)`).
#[inline(always)]
fn argmax<T: Element>(
    xp: &[T],
    w: usize,
    (h0, h1): (usize, usize),
    (w0, w1): (usize, usize),
) -> usize {
    let mut best = h0 * w + w0;
    let mut m = xp[best];
    for ih in h0..h1 {
        let row = &xp[ih * w..][..w];
        for (iw, &v) in row.iter().enumerate().take(w1).skip(w0) {
            if v > m || v.is_nan() {
                m = v;
                best = ih * w + iw;
            }
        }
    }
    best
}

/// The forward of both windowed poolings, one body (`kind` picks the window's reduction).
fn pool2d_fwd<T: Element>(
    kind: PoolKind,
    x: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
) -> Vec<T> {
    let (rh, rw) = (
        window_ranges(yd.h, xd.h, spec),
        window_ranges(yd.w, xd.w, spec),
    );
    let mut y = vec![T::ZERO; yd.numel()];
    par_planes(&mut y, yd.plane(), |plane, yp| {
        let xp = &x[plane * xd.plane()..][..xd.plane()];
        for (oh, &hr) in rh.iter().enumerate() {
            let yr = &mut yp[oh * yd.w..][..yd.w];
            for (yv, &wr) in yr.iter_mut().zip(&rw) {
                *yv = match kind {
                    PoolKind::Max => xp[argmax(xp, xd.w, hr, wr)],
                    PoolKind::Avg => {
                        let mut s = T::ZERO;
                        for ih in hr.0..hr.1 {
                            for &v in &xp[ih * xd.w + wr.0..ih * xd.w + wr.1] {
                                s += v;
                            }
                        }
                        s / T::from_f64(((hr.1 - hr.0) * (wr.1 - wr.0)) as f64)
                    }
                };
            }
        }
    });
    y
}

/// `dx += ` the gradient of both windowed poolings, one body: the backward scatters into
/// `dx` anyway, so a pending gradient is accumulated into at no extra cost (a fresh one
/// starts from zeros). `x` is read only for `PoolKind::Max`.
fn pool2d_bwd_into<T: Element>(
    kind: PoolKind,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
    dx: &mut [T],
) {
    let (rh, rw) = (
        window_ranges(yd.h, xd.h, spec),
        window_ranges(yd.w, xd.w, spec),
    );
    par_planes(dx, xd.plane(), |plane, dxp| {
        let dyp = &dy[plane * yd.plane()..][..yd.plane()];
        for (oh, &hr) in rh.iter().enumerate() {
            let dyr = &dyp[oh * yd.w..][..yd.w];
            for (&g, &wr) in dyr.iter().zip(&rw) {
                match kind {
                    PoolKind::Max => {
                        let xp = &x[plane * xd.plane()..][..xd.plane()];
                        dxp[argmax(xp, xd.w, hr, wr)] += g;
                    }
                    PoolKind::Avg => {
                        let share = g / T::from_f64(((hr.1 - hr.0) * (wr.1 - wr.0)) as f64);
                        for ih in hr.0..hr.1 {
                            for d in &mut dxp[ih * xd.w + wr.0..ih * xd.w + wr.1] {
                                *d += share;
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The twin of `max_pool2d_fwd_f32`.
pub fn max_pool2d_fwd<T: Element>(x: &[T], xd: Nchw, spec: &Pool2dSpec, yd: Nchw) -> Vec<T> {
    pool2d_fwd(PoolKind::Max, x, xd, spec, yd)
}

/// The twin of `avg_pool2d_fwd_f32`.
pub fn avg_pool2d_fwd<T: Element>(x: &[T], xd: Nchw, spec: &Pool2dSpec, yd: Nchw) -> Vec<T> {
    pool2d_fwd(PoolKind::Avg, x, xd, spec, yd)
}

/// The twin of `max_pool2d_bwd_f32` with `accumulate` set: `dx +=` the gradient, routed to
/// each window's arg-max (a fresh gradient is this into zeros).
pub fn max_pool2d_bwd_into<T: Element>(
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
    dx: &mut [T],
) {
    pool2d_bwd_into(PoolKind::Max, x, dy, xd, spec, yd, dx)
}

/// The twin of `avg_pool2d_bwd_f32` with `accumulate` set: `dx +=` each output gradient
/// shared over its window's in-bounds inputs.
pub fn avg_pool2d_bwd_into<T: Element>(
    dy: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
    dx: &mut [T],
) {
    pool2d_bwd_into(PoolKind::Avg, &[], dy, xd, spec, yd, dx)
}

pub fn global_avg_pool_fwd<T: Element>(x: &[T], xd: Nchw) -> Vec<T> {
    let inv = T::from_f64(1.0 / xd.plane() as f64);
    x.chunks(xd.plane())
        .map(|p| {
            let mut s = T::ZERO;
            for &v in p {
                s += v;
            }
            s * inv
        })
        .collect()
}

pub fn global_avg_pool_bwd<T: Element>(dy: &[T], xd: Nchw) -> Vec<T> {
    let inv = T::from_f64(1.0 / xd.plane() as f64);
    let mut dx = vec![T::ZERO; xd.numel()];
    for (p, &g) in dx.chunks_mut(xd.plane()).zip(dy) {
        p.fill(g * inv);
    }
    dx
}

impl<T: Element> PoolOps for Cpu<T> {
    fn max_pool2d_fwd(&self, x: &Vec<T>, xd: Nchw, spec: &Pool2dSpec) -> Result<Vec<T>> {
        let yd = checks::max_pool2d_fwd(self, x, xd, spec)?;
        Ok(max_pool2d_fwd(x, xd, spec, yd))
    }
    fn max_pool2d_bwd(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Vec<T>> {
        let yd = checks::max_pool2d_bwd(self, x, dy, xd, spec)?;
        let mut dx = vec![T::ZERO; xd.numel()];
        max_pool2d_bwd_into(x, dy, xd, spec, yd, &mut dx);
        Ok(dx)
    }
    fn max_pool2d_bwd_into(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        let yd = checks::max_pool2d_bwd_into(self, x, dy, xd, spec, dx)?;
        max_pool2d_bwd_into(x, dy, xd, spec, yd, dx);
        Ok(())
    }
    fn avg_pool2d_fwd(&self, x: &Vec<T>, xd: Nchw, spec: &Pool2dSpec) -> Result<Vec<T>> {
        let yd = checks::avg_pool2d_fwd(self, x, xd, spec)?;
        Ok(avg_pool2d_fwd(x, xd, spec, yd))
    }
    fn avg_pool2d_bwd(&self, dy: &Vec<T>, xd: Nchw, spec: &Pool2dSpec) -> Result<Vec<T>> {
        let yd = checks::avg_pool2d_bwd(self, dy, xd, spec)?;
        let mut dx = vec![T::ZERO; xd.numel()];
        avg_pool2d_bwd_into(dy, xd, spec, yd, &mut dx);
        Ok(dx)
    }
    fn avg_pool2d_bwd_into(
        &self,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        let yd = checks::avg_pool2d_bwd_into(self, dy, xd, spec, dx)?;
        avg_pool2d_bwd_into(dy, xd, spec, yd, dx);
        Ok(())
    }
    fn global_avg_pool_fwd(&self, x: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        checks::global_avg_pool_fwd(self, x, xd)?;
        Ok(global_avg_pool_fwd(x, xd))
    }
    fn global_avg_pool_bwd(&self, dy: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        checks::global_avg_pool_bwd(self, dy, xd)?;
        Ok(global_avg_pool_bwd(dy, xd))
    }
}
