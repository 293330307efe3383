//! CPU max / average pooling and global average pooling, forward and backward, one channel
//! plane per rayon task: the twins of kernels/pool.cu, by the same names (`max_pool2d_fwd`
//! is `max_pool2d_fwd_f32`; the backwards add into `dx`, as the kernels with `accumulate`
//! set). Max and average pooling share one body per direction (`pool2d_fwd`,
//! `pool2d_bwd_into`). Max pooling's backward recomputes the arg-max from the input (first
//! maximum in window order, or the last NaN, as PyTorch) instead of storing indices.

use super::conv::valid_range;
use super::simd::wide;
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

/// The columns each kernel column `kw` reads along a row: output columns `lo..hi` read input
/// column `ow * stride + off` (in bounds), as `(lo, hi, off)`; a column that reads only
/// padding is left out.
fn col_taps(out: usize, input: usize, spec: &Pool2dSpec) -> Vec<(usize, usize, isize)> {
    (0..spec.kernel)
        .filter_map(|kw| {
            let off = kw as isize - spec.padding as isize;
            let (lo, hi) = valid_range(out, input, spec.stride, off);
            (lo < hi).then_some((lo, hi, off))
        })
        .collect()
}

/// `v` replaces the running maximum `m` (PyTorch's rule: greater, or NaN).
#[inline(always)]
fn beats<T: Element>(v: T, m: T) -> bool {
    v > m || v.is_nan()
}

/// The value a window's sum (Avg) or maximum (Max) starts from.
fn start<T: Element>(kind: PoolKind) -> T {
    match kind {
        PoolKind::Avg => T::ZERO,
        PoolKind::Max => T::from_f64(f64::NEG_INFINITY),
    }
}

/// One input row's part of each window: `out[ow]` += (Avg) or max= (Max) input row `xr` over
/// output column `ow`'s window columns, taken in column order; with `arg`, the column of a
/// new maximum (the first, or the last NaN) goes to `arg[ow]`.
#[inline(always)]
fn row_pass<T: Element>(
    kind: PoolKind,
    xr: &[T],
    taps: &[(usize, usize, isize)],
    stride: usize,
    out: &mut [T],
    mut arg: Option<&mut [u32]>,
) {
    for &(lo, hi, off) in taps {
        let col = |ow: usize| ((ow * stride) as isize + off) as usize;
        match (kind, arg.as_mut()) {
            (PoolKind::Avg, _) if stride == 1 => {
                for (o, &v) in out[lo..hi].iter_mut().zip(&xr[col(lo)..col(hi - 1) + 1]) {
                    *o += v;
                }
            }
            (PoolKind::Avg, _) => (lo..hi).for_each(|ow| out[ow] += xr[col(ow)]),
            (PoolKind::Max, None) if stride == 1 => {
                for (o, &v) in out[lo..hi].iter_mut().zip(&xr[col(lo)..col(hi - 1) + 1]) {
                    *o = if beats(v, *o) { v } else { *o };
                }
            }
            (PoolKind::Max, None) => (lo..hi).for_each(|ow| {
                let v = xr[col(ow)];
                out[ow] = if beats(v, out[ow]) { v } else { out[ow] };
            }),
            (PoolKind::Max, Some(a)) => (lo..hi).for_each(|ow| {
                let v = xr[col(ow)];
                let win = beats(v, out[ow]);
                out[ow] = if win { v } else { out[ow] };
                a[ow] = if win { col(ow) as u32 } else { a[ow] };
            }),
        }
    }
}

/// A pooling's windows on one plane: the in-bounds input rows (`rows`) and columns (`cols`)
/// of every output row and column, the column taps (`col_taps`) and the stride.
struct Windows {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
    taps: Vec<(usize, usize, isize)>,
    stride: usize,
}

impl Windows {
    fn new(xd: Nchw, spec: &Pool2dSpec, yd: Nchw) -> Self {
        Windows {
            rows: window_ranges(yd.h, xd.h, spec),
            cols: window_ranges(yd.w, xd.w, spec),
            taps: col_taps(yd.w, xd.w, spec),
            stride: spec.stride,
        }
    }

    /// Every input row's maximum over each output column's window columns (`row_pass`),
    /// `[h_in, w_out]`, with the column of each maximum: the first half of re-finding the
    /// arg-max separably.
    #[inline(always)]
    fn row_maxima<T: Element>(&self, xp: &[T], xd: Nchw, yd: Nchw) -> (Vec<T>, Vec<u32>) {
        let mut rows = vec![start(PoolKind::Max); xd.h * yd.w];
        // Until something beats minus infinity, a window's maximum is its first column.
        let first: Vec<u32> = self.cols.iter().map(|c| c.0 as u32).collect();
        let mut cols: Vec<u32> = first.repeat(xd.h);
        for ih in 0..xd.h {
            row_pass(
                PoolKind::Max,
                &xp[ih * xd.w..][..xd.w],
                &self.taps,
                self.stride,
                &mut rows[ih * yd.w..][..yd.w],
                Some(&mut cols[ih * yd.w..][..yd.w]),
            );
        }
        (rows, cols)
    }
}

/// The forward of both windowed poolings, one body: each output row takes its window's input
/// rows one by one (`row_pass`, vectorised across the row), so every window is reduced in
/// row-major order, as a direct scan (and the GPU kernel) reduces it.
fn pool2d_fwd<T: Element>(
    kind: PoolKind,
    x: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
) -> Vec<T> {
    let win = Windows::new(xd, spec, yd);
    let mut y = vec![T::ZERO; yd.numel()];
    par_planes(&mut y, yd.plane(), |plane, yp| {
        let xp = &x[plane * xd.plane()..][..xd.plane()];
        wide(
            #[inline(always)]
            || {
                // Each output row takes its window's input rows in order, each row's
                // columns in order: the row-major order of a direct scan (the same sums
                // and maximum as a scalar scan), vectorised across the output row.
                for (oh, &(h0, h1)) in win.rows.iter().enumerate() {
                    let yr = &mut yp[oh * yd.w..][..yd.w];
                    yr.fill(start(kind));
                    for ih in h0..h1 {
                        let xr = &xp[ih * xd.w..][..xd.w];
                        row_pass(kind, xr, &win.taps, win.stride, yr, None);
                    }
                    if kind == PoolKind::Avg {
                        for (o, &(w0, w1)) in yr.iter_mut().zip(&win.cols) {
                            *o = *o / T::from_f64(((h1 - h0) * (w1 - w0)) as f64);
                        }
                    }
                }
            },
        )
    });
    y
}

/// `dx += ` the gradient of both windowed poolings, one body: the backward scatters into
/// `dx` anyway, so a pending gradient is accumulated into at no extra cost (a fresh one
/// starts from zeros). `x` is read only for `PoolKind::Max`, whose arg-max is re-found
/// separably (the same element the forward's scan picks) and gets the whole gradient; an
/// average's share is spread back over rows, then along each row (the forward's transpose).
fn pool2d_bwd_into<T: Element>(
    kind: PoolKind,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
    dx: &mut [T],
) {
    let win = Windows::new(xd, spec, yd);
    let s = win.stride;
    par_planes(dx, xd.plane(), |plane, dxp| {
        let dyp = &dy[plane * yd.plane()..][..yd.plane()];
        wide(
            #[inline(always)]
            || match kind {
                PoolKind::Max => {
                    let xp = &x[plane * xd.plane()..][..xd.plane()];
                    let (rows, cols) = win.row_maxima(xp, xd, yd);
                    for (oh, &(h0, h1)) in win.rows.iter().enumerate() {
                        for ow in 0..yd.w {
                            let (mut m, mut at) = (start(PoolKind::Max), h0 * yd.w + ow);
                            for ih in h0..h1 {
                                let v = rows[ih * yd.w + ow];
                                if beats(v, m) {
                                    (m, at) = (v, ih * yd.w + ow);
                                }
                            }
                            let ih = at / yd.w;
                            dxp[ih * xd.w + cols[at] as usize] += dyp[oh * yd.w + ow];
                        }
                    }
                }
                PoolKind::Avg => {
                    // The output gradients' shares, summed per input row.
                    let mut rows = vec![T::ZERO; xd.h * yd.w];
                    for (oh, &(h0, h1)) in win.rows.iter().enumerate() {
                        let dyr = &dyp[oh * yd.w..][..yd.w];
                        for ih in h0..h1 {
                            let r = &mut rows[ih * yd.w..][..yd.w];
                            for ((o, &g), &(w0, w1)) in r.iter_mut().zip(dyr).zip(&win.cols) {
                                *o += g / T::from_f64(((h1 - h0) * (w1 - w0)) as f64);
                            }
                        }
                    }
                    for ih in 0..xd.h {
                        let (r, dxr) = (&rows[ih * yd.w..][..yd.w], &mut dxp[ih * xd.w..][..xd.w]);
                        for &(lo, hi, off) in &win.taps {
                            let col = |ow: usize| ((ow * s) as isize + off) as usize;
                            if s == 1 {
                                for (d, &g) in
                                    dxr[col(lo)..col(hi - 1) + 1].iter_mut().zip(&r[lo..hi])
                                {
                                    *d += g;
                                }
                            } else {
                                (lo..hi).for_each(|ow| dxr[col(ow)] += r[ow]);
                            }
                        }
                    }
                }
            },
        )
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
