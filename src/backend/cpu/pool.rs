//! CPU max / average pooling and global average pooling, forward and backward, one channel
//! plane per task: the twins of kernels/pool.cu, by the same names (`max_pool2d_fwd`
//! is `max_pool2d_fwd_f32`; the backwards add into `dx`, as the kernels with `accumulate`
//! set). Max and average pooling share one body per direction (`pool2d_fwd`, `pool2d_bwd`).
//! Max pooling's backward recomputes the arg-max from the input (first maximum in window
//! order, or the last NaN, as PyTorch) instead of storing indices. The forward and the
//! arg-max read each plane padded once with a value the reduction ignores (`tiles.rs`'s
//! `Padded`: minus infinity, zero), split into column phases at stride 2, so every tap of a
//! window reads a full contiguous run of each output row: no clipping at the edges, and
//! the loops vectorise across the row (the forward on `tiles.rs`'s register tiles).

use super::conv::valid_range;
use super::fresh::{par_planes_filled, par_planes_into};
use super::simd::wide;
use super::tiles::{tiled_plane, Combine, Padded, TileScratch};
use super::Cpu;
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

/// One kernel column's reads along a row: output columns `lo..hi` read input columns
/// `col + (ow - lo) * stride`.
#[derive(Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    col: usize,
}

/// The taps of every kernel column (left to right) that reads an input column; a column
/// that reads only padding is left out.
fn col_taps(out: usize, input: usize, spec: &Pool2dSpec) -> Vec<Tap> {
    (0..spec.kernel)
        .filter_map(|kw| {
            let off = kw as isize - spec.padding as isize;
            let (lo, hi) = valid_range(out, input, spec.stride, off);
            let col = ((lo * spec.stride) as isize + off) as usize;
            (lo < hi).then_some(Tap { lo, hi, col })
        })
        .collect()
}

/// `v` replaces the running maximum `m` (PyTorch's rule: greater, or NaN). Both tests are
/// evaluated (`|`, not `||`): without the short circuit's branch the loops vectorise.
#[inline(always)]
fn beats<T: Element>(v: T, m: T) -> bool {
    (v > m) | v.is_nan()
}

/// The value a window's sum (Avg) or maximum (Max) starts from, and the padding that leaves
/// it unchanged.
fn start<T: Element>(kind: PoolKind) -> T {
    match kind {
        PoolKind::Avg => T::ZERO,
        PoolKind::Max => T::from_f64(f64::NEG_INFINITY),
    }
}

/// A pooling's windows on one plane: the in-bounds input rows (`rows`) and columns (`cols`)
/// of every output row and column, and the column taps (`col_taps`) of the average's
/// backward.
struct Windows {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
    taps: Vec<Tap>,
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
}

/// A plane padded with `start(kind)` (`Padded`, all padding until a plane is loaded), so
/// that every tap of the window reads a full run of each output row: the forward's tiles
/// and the arg-max read it. A task makes one and loads each of its planes into it.
fn padded<T: Element>(kind: PoolKind, xd: Nchw, spec: &Pool2dSpec, yd: Nchw) -> Padded<T> {
    let p = spec.padding;
    Padded::blank(
        start(kind),
        (xd.h, xd.w),
        (p, p),
        (yd.h, yd.w),
        spec.kernel - 1,
        spec.stride,
    )
}

/// Every output's arg-max as a flat index into the input plane, `[h_out, w_out]`: each
/// output takes its window's taps in row-major order over the minus-infinity-padded plane
/// (`padded`); a tap wins only if it `beats` the maximum so far, starting from minus
/// infinity at the window's first in-bounds element, so the pick is a direct scan's (first
/// maximum in row-major order, or the last NaN). Padding beats nothing, so the wrapped
/// indices of padded taps are never kept. Runs of 8, 4 and 1 outputs of a row keep their
/// maxima and picks in registers across the taps (`arg_max_run`).
#[inline(always)]
fn arg_max<T: Element>(
    src: &Padded<T>,
    win: &Windows,
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
) -> Vec<u32> {
    let mut arg = vec![0u32; yd.plane()];
    for (oh, a) in arg.chunks_exact_mut(yd.w).enumerate() {
        let h0 = win.rows[oh].0;
        for (o, &(w0, _)) in a.iter_mut().zip(&win.cols) {
            *o = (h0 * xd.w + w0) as u32;
        }
        let mut ow = 0;
        while ow + 8 <= yd.w {
            arg_max_run::<T, 8>(src, xd, spec, oh, ow, &mut a[ow..][..8]);
            ow += 8;
        }
        if ow + 4 <= yd.w {
            arg_max_run::<T, 4>(src, xd, spec, oh, ow, &mut a[ow..][..4]);
            ow += 4;
        }
        for ow in ow..yd.w {
            arg_max_run::<T, 1>(src, xd, spec, oh, ow, &mut a[ow..][..1]);
        }
    }
    arg
}

/// The arg-max of outputs `ow..ow + N` of row `oh` (`arg_max`), onto their first in-bounds
/// elements in `a`.
#[inline(always)]
fn arg_max_run<T: Element, const N: usize>(
    src: &Padded<T>,
    xd: Nchw,
    spec: &Pool2dSpec,
    oh: usize,
    ow: usize,
    a: &mut [u32],
) {
    let (k, p, s) = (spec.kernel, spec.padding as u32, spec.stride);
    let mut max = [start::<T>(PoolKind::Max); N];
    let mut pick: [u32; N] = std::array::from_fn(|j| a[j]);
    for kh in 0..k {
        let row = &src.buf[(oh * s + kh) * src.row_len..][..src.row_len];
        // Input row and column of this tap's first output, wrapped where they fall in the
        // padding (such a tap never wins).
        let ih = ((oh * s + kh) as u32).wrapping_sub(p);
        let iw0 = ((ow * s) as u32).wrapping_sub(p);
        for kw in 0..k {
            let base = ih
                .wrapping_mul(xd.w as u32)
                .wrapping_add(iw0)
                .wrapping_add(kw as u32);
            let run = &row[src.start(kw) + ow..][..N];
            for j in 0..N {
                let win = beats(run[j], max[j]);
                max[j] = if win { run[j] } else { max[j] };
                let at = base.wrapping_add((j * s) as u32);
                pick[j] = if win { at } else { pick[j] };
            }
        }
    }
    a.copy_from_slice(&pick);
}

/// A window's running maximum takes `v` when `v` beats it (`beats`): the max pooling's
/// register tiles, over a plane padded with minus infinity (which beats nothing).
struct MaxOf;

impl<T: Element> Combine<T> for MaxOf {
    #[inline(always)]
    fn step(acc: T, _: T, v: T) -> T {
        if beats(v, acc) {
            v
        } else {
            acc
        }
    }
}

/// A window's running sum adds `v`: the average pooling's register tiles, over a plane
/// padded with zeros (adding +0 to a sum started from +0 leaves every bit as it was).
struct SumOf;

impl<T: Element> Combine<T> for SumOf {
    #[inline(always)]
    fn step(acc: T, _: T, v: T) -> T {
        acc + v
    }
}

/// The forward of both windowed poolings, one body: each plane is padded once with a value
/// that leaves the reduction unchanged (`start`: minus infinity, zero), then every window is
/// reduced on register tiles (`tiled_plane`) over its taps in row-major order, as a direct
/// scan (and the GPU kernel) reduces it; an average then divides by its in-bounds count.
fn pool2d_fwd<T: Element>(
    kind: PoolKind,
    x: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
) -> Vec<T> {
    let win = Windows::new(xd, spec, yd);
    let k = spec.kernel;
    let init = || -> TileScratch<T> { None };
    par_planes_filled(
        yd.numel(),
        yd.plane(),
        start(kind),
        init,
        |scratch, plane, yp| {
            let xp = &x[plane * xd.plane()..][..xd.plane()];
            wide(
                #[inline(always)]
                || {
                    let (src, taps) = scratch.get_or_insert_with(|| {
                        let src = padded(kind, xd, spec, yd);
                        let taps = (0..k * k).map(|i| src.tap(T::ONE, i / k, i % k)).collect();
                        (src, taps)
                    });
                    src.load::<false>(xp);
                    let (src, taps) = (&*src, &taps[..]);
                    match kind {
                        PoolKind::Max => tiled_plane::<T, MaxOf>(src, taps, yp, (yd.h, yd.w), yd.w),
                        PoolKind::Avg => {
                            tiled_plane::<T, SumOf>(src, taps, yp, (yd.h, yd.w), yd.w);
                            for (yr, &(h0, h1)) in yp.chunks_exact_mut(yd.w).zip(&win.rows) {
                                for (o, &(w0, w1)) in yr.iter_mut().zip(&win.cols) {
                                    *o = *o / T::from_f64(((h1 - h0) * (w1 - w0)) as f64);
                                }
                            }
                        }
                    }
                },
            )
        },
    )
}

/// `dx += ` the gradient of both windowed poolings, one body; without `dx`, a fresh
/// gradient (this into zeros), returned. `x` is read only for `PoolKind::Max`, whose
/// arg-max is re-found separably (`arg_max`: the element the forward's scan picks) and
/// gets the whole gradient: each input sums the `dy` of the outputs that picked it from
/// zero in (oh, ow) order, then adds the sum to `dx`, as kernels/pool.cu does. An average's
/// share is spread back over rows, then along each row (the forward's transpose).
fn pool2d_bwd<T: Element>(
    kind: PoolKind,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
    dx: Option<&mut [T]>,
) -> Vec<T> {
    let win = Windows::new(xd, spec, yd);
    let s = win.stride;
    let init = || -> Option<Padded<T>> { None };
    par_planes_into(dx, xd.numel(), xd.plane(), init, |scratch, plane, dxp| {
        let dyp = &dy[plane * yd.plane()..][..yd.plane()];
        wide(
            #[inline(always)]
            || match kind {
                PoolKind::Max => {
                    let xp = &x[plane * xd.plane()..][..xd.plane()];
                    // Each input's sum starts from zero and takes its outputs in (oh, ow)
                    // order, then goes to dx: kernels/pool.cu's order. (A vectorised
                    // gather over each input's covering outputs was 2x slower: criterion.)
                    let src = scratch.get_or_insert_with(|| padded(kind, xd, spec, yd));
                    src.load::<false>(xp);
                    let arg = arg_max(src, &win, xd, spec, yd);
                    let mut acc = vec![T::ZERO; xd.plane()];
                    for (&at, &g) in arg.iter().zip(dyp) {
                        acc[at as usize] += g;
                    }
                    for (d, &a) in dxp.iter_mut().zip(&acc) {
                        *d += a;
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
                        for t in &win.taps {
                            let r = &r[t.lo..t.hi];
                            if s == 1 {
                                for (d, &g) in dxr[t.col..].iter_mut().zip(r) {
                                    *d += g;
                                }
                            } else {
                                let cols = dxr[t.col..].iter_mut().step_by(s);
                                cols.zip(r).for_each(|(d, &g)| *d += g);
                            }
                        }
                    }
                }
            },
        )
    })
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
    pool2d_bwd(PoolKind::Max, x, dy, xd, spec, yd, Some(dx));
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
    pool2d_bwd(PoolKind::Avg, &[], dy, xd, spec, yd, Some(dx));
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
        Ok(pool2d_bwd(PoolKind::Max, x, dy, xd, spec, yd, None))
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
        Ok(pool2d_bwd(PoolKind::Avg, &[], dy, xd, spec, yd, None))
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

#[cfg(test)]
mod tests {
    //! The separable, vectorised passes against a direct scan of each window in the order of
    //! kernels/pool.cu (row-major, first maximum or last NaN; a max backward's covering
    //! outputs summed from zero in (oh, ow) order, then added to `dx`): bit for bit, at odd
    //! shapes, strides 1 to 3, kernels 2 and 3, every padding, with ties and NaNs in `x`.
    use super::*;
    use crate::rng::Rng;

    /// Window of output (oh, ow): in-bounds rows `h0..h1` and columns `w0..w1`.
    fn window(oh: usize, ow: usize, xd: Nchw, sp: &Pool2dSpec) -> (usize, usize, usize, usize) {
        let at = |o: usize| (o * sp.stride) as isize - sp.padding as isize;
        let clip = |v: isize, n: usize| (v.max(0) as usize).min(n);
        let (h, w) = (at(oh), at(ow));
        let k = sp.kernel as isize;
        (
            clip(h, xd.h),
            clip(h + k, xd.h),
            clip(w, xd.w),
            clip(w + k, xd.w),
        )
    }

    /// Forward and `dx0 +` backward of one plane by direct scan.
    fn scan(
        kind: PoolKind,
        x: &[f32],
        dy: &[f32],
        dx0: &[f32],
        xd: Nchw,
        sp: &Pool2dSpec,
        yd: Nchw,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut y = vec![0.0; yd.plane()];
        let mut acc = vec![0.0f32; xd.plane()];
        for oh in 0..yd.h {
            for ow in 0..yd.w {
                let (h0, h1, w0, w1) = window(oh, ow, xd, sp);
                let (mut s, mut best) = (0.0f32, h0 * xd.w + w0);
                for r in h0..h1 {
                    for q in w0..w1 {
                        let v = x[r * xd.w + q];
                        s += v;
                        if v > x[best] || v.is_nan() {
                            best = r * xd.w + q;
                        }
                    }
                }
                let o = oh * yd.w + ow;
                let count = ((h1 - h0) * (w1 - w0)) as f32;
                match kind {
                    PoolKind::Max => {
                        y[o] = x[best];
                        acc[best] += dy[o];
                    }
                    PoolKind::Avg => {
                        y[o] = s / count;
                        for r in h0..h1 {
                            for q in w0..w1 {
                                acc[r * xd.w + q] += dy[o] / count;
                            }
                        }
                    }
                }
            }
        }
        (y, dx0.iter().zip(&acc).map(|(d, a)| d + a).collect())
    }

    #[test]
    fn separable_passes_match_a_direct_scan() {
        let mut rng = Rng::new(3);
        let mut cases = 0;
        for (h, w) in [
            (7, 9),
            (13, 5),
            (1, 6),
            (8, 8),
            (5, 17),
            (32, 32),
            (2, 3),
            (16, 15),
        ] {
            for (kernel, stride) in [(3, 1), (3, 2), (2, 2), (2, 1), (3, 3)] {
                for padding in 0..kernel {
                    let sp = Pool2dSpec {
                        kernel,
                        stride,
                        padding,
                    };
                    let xd = Nchw { n: 1, c: 1, h, w };
                    let Ok(yd) = sp.output(xd, "test") else {
                        continue;
                    };
                    // Small integers: many ties; a few NaNs.
                    let mut x: Vec<f32> = (0..xd.plane())
                        .map(|_| (rng.below(5) as f32) - 2.0)
                        .collect();
                    for _ in 0..xd.plane() / 10 {
                        x[rng.below(xd.plane())] = f32::NAN;
                    }
                    let dy: Vec<f32> = (0..yd.plane()).map(|_| rng.normal() as f32).collect();
                    let dx0: Vec<f32> = (0..xd.plane()).map(|_| rng.normal() as f32).collect();
                    for kind in [PoolKind::Max, PoolKind::Avg] {
                        let (y, dx) = scan(kind, &x, &dy, &dx0, xd, &sp, yd);
                        let mut got = dx0.clone();
                        pool2d_bwd(kind, &x, &dy, xd, &sp, yd, Some(&mut got));
                        let fwd = pool2d_fwd(kind, &x, xd, &sp, yd);
                        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&fwd), bits(&y), "{kind:?} forward {xd:?} {sp:?}");
                        if kind == PoolKind::Max {
                            assert_eq!(got, dx, "max backward {xd:?} {sp:?}");
                        } else {
                            // The average's shares are summed per row first: another order.
                            for (g, d) in got.iter().zip(&dx) {
                                assert!(
                                    (g - d).abs() <= 1e-5 * (1.0 + d.abs()),
                                    "avg backward {xd:?} {sp:?}"
                                );
                            }
                        }
                    }
                    cases += 1;
                }
            }
        }
        assert!(cases > 60, "{cases} cases");
    }
}
