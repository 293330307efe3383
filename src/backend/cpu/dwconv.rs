//! CPU depthwise conv2d (groups == in == out channels: the DARTS separable and dilated
//! convs), forward and both backwards, by the names of kernels/conv.cu: `dwconv2d_fwd`,
//! `dwconv2d_bwd_data_into`, `dwconv2d_bwd_weight`. `conv.rs` sends depthwise specs here.
//!
//! The forward (stride 1 and 2) and the stride-1 data gradient run on register tiles over a
//! zero-padded copy of the plane (`tiles.rs`: 2-3x faster, same values bit for bit). The
//! plane loops remain for the strided data gradient and for non-finite weights (where
//! `w * padding` would not be zero): each output row built tap by tap over the valid output
//! range (no bounds checks, so the stride-1 loops vectorise). The stride-1 weight gradient of
//! a 3x3 or 5x5 kernel reads the same padded copy, a kernel row's taps summed together
//! (`weight_rows`; another order than the plane loops, same f32 rounding). All loops are
//! compiled for AVX2 where the CPU has it (`wide`).
//! Forward and data gradient run a channel plane per task; the weight gradient a channel per
//! task, its products summed in lanes over every sample in order (deterministic, and no
//! running sum the loop waits on). The fused input ReLU is applied as in `conv.rs`.

use super::conv::{add_masked, mask_by_input, pre, valid_range};
use super::par_planes;
use super::simd::{wide, Lanes};
use super::tiles::{tiled_plane, PadTap, Padded};
use crate::backend::Element;
use crate::shape::{Conv2dSpec, Nchw};
use rayon::prelude::*;

/// One kernel tap, as the plane loops walk it: output rows `rows` read real input, output
/// row `oh` reads input row `oh * stride + row_off`, and output column `ow` in `lo..hi` reads
/// input column `ow * stride + col_off`.
struct Tap {
    index: usize,
    rows: std::ops::Range<usize>,
    row_off: isize,
    lo: usize,
    hi: usize,
    col_off: isize,
}

impl Tap {
    #[inline(always)]
    fn input_row(&self, oh: usize, stride: usize) -> usize {
        ((oh * stride) as isize + self.row_off) as usize
    }
    /// The input columns a stride-1 tap reads, for output columns `lo..hi`.
    #[inline(always)]
    fn input_cols(&self) -> std::ops::Range<usize> {
        let base = (self.lo as isize + self.col_off) as usize;
        base..base + (self.hi - self.lo)
    }
}

/// The taps that read any real input (a tap that only ever reads padding, as with small
/// inputs and a large dilation, is skipped); listed once per op, walked by every plane.
fn taps(xd: Nchw, spec: &Conv2dSpec, yd: Nchw) -> impl Iterator<Item = Tap> {
    let k = spec.kernel;
    let (s, p, d) = (spec.stride, spec.padding as isize, spec.dilation as isize);
    (0..k * k).filter_map(move |index| {
        let (kh, kw) = ((index / k) as isize, (index % k) as isize);
        let (row_off, col_off) = (kh * d - p, kw * d - p);
        let (oh_lo, oh_hi) = valid_range(yd.h, xd.h, s, row_off);
        let (lo, hi) = valid_range(yd.w, xd.w, s, col_off);
        (lo < hi && oh_lo < oh_hi).then_some(Tap {
            index,
            rows: oh_lo..oh_hi,
            row_off,
            lo,
            hi,
            col_off,
        })
    })
}

/// The twin of `dwconv2d_fwd_f32`: the depthwise convolution, one channel plane per task.
pub fn dwconv2d_fwd<T: Element>(x: &[T], xd: Nchw, w: &[T], spec: &Conv2dSpec, yd: Nchw) -> Vec<T> {
    let taps: Vec<Tap> = taps(xd, spec, yd).collect();
    let mut y = vec![T::ZERO; yd.numel()];
    par_planes(&mut y, yd.plane(), |plane, yp| {
        let c = plane % xd.c;
        let (xp, wc) = (
            &x[plane * xd.plane()..][..xd.plane()],
            &w[c * spec.kernel * spec.kernel..],
        );
        wide(
            #[inline(always)]
            || match (spec.relu_input, tiles_apply(&taps, wc, spec.stride)) {
                (true, true) => dwconv2d_fwd_tiled::<T, true>(&taps, xp, xd, wc, spec, yd, yp),
                (false, true) => dwconv2d_fwd_tiled::<T, false>(&taps, xp, xd, wc, spec, yd, yp),
                (true, false) => dwconv2d_fwd_plane::<T, true>(&taps, xp, xd, wc, spec, yd, yp),
                (false, false) => dwconv2d_fwd_plane::<T, false>(&taps, xp, xd, wc, spec, yd, yp),
            },
        )
    });
    y
}

/// Whether the register tiles (`tiled_plane`) take this plane: a stride the padded copy
/// splits into phases, and finite weights (a tap that reads padding adds `w * 0`, which is
/// an exact zero only for a finite `w`; the plane loops skip such products).
fn tiles_apply<T: Element>(taps: &[Tap], wc: &[T], stride: usize) -> bool {
    stride <= 2 && taps.iter().all(|t| wc[t.index].to_f64().is_finite())
}

/// The forward on register tiles: the input plane padded once, then every output tile sums
/// its taps in the plane loop's order (bit-identical to `dwconv2d_fwd_plane`).
#[inline(always)]
fn dwconv2d_fwd_tiled<T: Element, const RELU: bool>(
    taps: &[Tap],
    xp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    yp: &mut [T],
) {
    let (k, d, p) = (spec.kernel, spec.dilation, spec.padding);
    let src = Padded::new::<RELU>(
        xp,
        (xd.h, xd.w),
        (p, p),
        (yd.h, yd.w),
        (k - 1) * d,
        spec.stride,
    );
    let taps: Vec<PadTap<T>> = taps
        .iter()
        .map(|t| src.tap(wc[t.index], t.index / k * d, t.index % k * d))
        .collect();
    tiled_plane(&src, &taps, yp, yd.w);
}

/// The twin of `dwconv2d_bwd_data_f32` (its `accumulate` flag included): the depthwise data
/// gradient added into `dx`, as `conv2d_bwd_data_into` describes.
#[allow(clippy::too_many_arguments)]
pub fn dwconv2d_bwd_data_into<T: Element>(
    x: &[T],
    dy: &[T],
    w: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dx: &mut [T],
    accumulate: bool,
) {
    let masked_add = accumulate && spec.relu_input;
    let taps: Vec<Tap> = taps(xd, spec, yd).collect();
    par_planes(dx, xd.plane(), |plane, dxp| {
        let c = plane % xd.c;
        let (dyp, wc) = (
            &dy[plane * yd.plane()..][..yd.plane()],
            &w[c * spec.kernel * spec.kernel..],
        );
        let xp = &x[plane * xd.plane()..][..xd.plane()];
        wide(
            #[inline(always)]
            || {
                let tiled = spec.stride == 1
                    && spec.padding <= (spec.kernel - 1) * spec.dilation
                    && tiles_apply(&taps, wc, 1);
                if masked_add {
                    let mut tmp = vec![T::ZERO; xd.plane()];
                    dwconv2d_bwd_data_either(tiled, &taps, dyp, xd, wc, spec, yd, &mut tmp);
                    add_masked(dxp, &tmp, xp);
                } else {
                    dwconv2d_bwd_data_either(tiled, &taps, dyp, xd, wc, spec, yd, dxp);
                    if spec.relu_input {
                        mask_by_input(dxp, xp);
                    }
                }
            },
        )
    });
}

/// The twin of `dwconv2d_bwd_weight_f32`: one channel per task, summing samples in order
/// (deterministic and contention-free).
pub fn dwconv2d_bwd_weight<T: Element>(
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
) -> Vec<T> {
    let kk = spec.kernel * spec.kernel;
    let taps: Vec<Tap> = taps(xd, spec, yd).collect();
    let mut dw = vec![T::ZERO; xd.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, dwc)| {
        // (x offset, dy offset) of this channel's plane in every sample, in order.
        let planes = (0..xd.n).map(|n| ((n * xd.c + c) * xd.plane(), (n * xd.c + c) * yd.plane()));
        // Products with padding are exact zeros only for a finite dy (see `tiles_apply`).
        // Stride 2 stays on the plane loops: with the phase-split copy, criterion showed 3x3
        // slower (+30-60%) and 5x5 faster (-20-45%), under this box's noise; not worth a rule.
        let rows = spec.stride == 1
            && planes.clone().all(|(_, yo)| {
                dy[yo..][..yd.plane()]
                    .iter()
                    .all(|v| v.to_f64().is_finite())
            });
        wide(
            #[inline(always)]
            || match (spec.relu_input, rows, spec.kernel) {
                (true, true, 3) => weight_rows::<T, true, 3>(planes, x, dy, xd, spec, yd, dwc),
                (false, true, 3) => weight_rows::<T, false, 3>(planes, x, dy, xd, spec, yd, dwc),
                (true, true, 5) => weight_rows::<T, true, 5>(planes, x, dy, xd, spec, yd, dwc),
                (false, true, 5) => weight_rows::<T, false, 5>(planes, x, dy, xd, spec, yd, dwc),
                (true, ..) => {
                    dwconv2d_bwd_weight_channel::<T, true>(&taps, planes, x, dy, xd, spec, yd, dwc)
                }
                (false, ..) => {
                    dwconv2d_bwd_weight_channel::<T, false>(&taps, planes, x, dy, xd, spec, yd, dwc)
                }
            },
        )
    });
    dw
}

/// One channel's weight gradient (a K x K kernel) on a padded copy of each sample's input
/// plane: per kernel row, the K taps' sums sit in lanes (registers) while each output row is
/// read once for all of them, where the plane loops re-read `dy` per tap. Rows of 16 or more
/// take 16 lanes per tap (two independent sums per tap, enough to cover the add latency).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn weight_rows<T: Element, const RELU: bool, const K: usize>(
    planes: impl Iterator<Item = (usize, usize)>,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dwc: &mut [T],
) {
    if yd.w >= 16 {
        weight_lanes::<T, RELU, K, 16>(planes, x, dy, xd, spec, yd, dwc)
    } else {
        weight_lanes::<T, RELU, K, 8>(planes, x, dy, xd, spec, yd, dwc)
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn weight_lanes<T: Element, const RELU: bool, const K: usize, const L: usize>(
    planes: impl Iterator<Item = (usize, usize)>,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dwc: &mut [T],
) {
    let (d, s, p) = (spec.dilation, spec.stride, spec.padding);
    let mut lanes = [[[T::ZERO; L]; K]; K];
    let mut tails = [[T::ZERO; K]; K];
    let chunks = yd.w / L;
    for (xo, yo) in planes {
        let xp = &x[xo..][..xd.plane()];
        let src = Padded::new::<RELU>(xp, (xd.h, xd.w), (p, p), (yd.h, yd.w), (K - 1) * d, s);
        let starts: [usize; K] = std::array::from_fn(|kw| src.start(kw * d));
        for kh in 0..K {
            let (mut acc, mut tail) = (lanes[kh], tails[kh]);
            for oh in 0..yd.h {
                let dyr = &dy[yo + oh * yd.w..][..yd.w];
                let row = &src.buf[(oh * s + kh * d) * src.row_len..][..src.row_len];
                for ch in 0..chunks {
                    let g = &dyr[ch * L..][..L];
                    for (a, &st) in acc.iter_mut().zip(&starts) {
                        let xs = &row[st + ch * L..][..L];
                        for j in 0..L {
                            a[j] += g[j] * xs[j];
                        }
                    }
                }
                for ow in chunks * L..yd.w {
                    for (t, &st) in tail.iter_mut().zip(&starts) {
                        *t += dyr[ow] * row[st + ow];
                    }
                }
            }
            (lanes[kh], tails[kh]) = (acc, tail);
        }
    }
    for kh in 0..K {
        for kw in 0..K {
            let sum = lanes[kh][kw].iter().map(|v| v.to_f64()).sum::<f64>();
            dwc[kh * K + kw] += T::from_f64(sum + tails[kh][kw].to_f64());
        }
    }
}

#[inline(always)]
fn dwconv2d_fwd_plane<T: Element, const RELU: bool>(
    taps: &[Tap],
    xp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    yp: &mut [T],
) {
    let s = spec.stride;
    for t in taps {
        let wv = wc[t.index];
        for oh in t.rows.clone() {
            let xr = &xp[t.input_row(oh, s) * xd.w..][..xd.w];
            let yr = &mut yp[oh * yd.w..][..yd.w];
            if s == 1 {
                for (yv, &xv) in yr[t.lo..t.hi].iter_mut().zip(&xr[t.input_cols()]) {
                    *yv += wv * pre::<T, RELU>(xv);
                }
            } else {
                for ow in t.lo..t.hi {
                    yr[ow] += wv * pre::<T, RELU>(xr[((ow * s) as isize + t.col_off) as usize]);
                }
            }
        }
    }
}

#[inline(always)]
fn dwconv2d_bwd_data_plane<T: Element>(
    taps: &[Tap],
    dyp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    dxp: &mut [T],
) {
    let s = spec.stride;
    for t in taps {
        let wv = wc[t.index];
        for oh in t.rows.clone() {
            let dyr = &dyp[oh * yd.w..][..yd.w];
            let dxr = &mut dxp[t.input_row(oh, s) * xd.w..][..xd.w];
            if s == 1 {
                for (dxv, &dyv) in dxr[t.input_cols()].iter_mut().zip(&dyr[t.lo..t.hi]) {
                    *dxv += wv * dyv;
                }
            } else {
                for ow in t.lo..t.hi {
                    dxr[((ow * s) as isize + t.col_off) as usize] += wv * dyr[ow];
                }
            }
        }
    }
}

/// The data gradient of one plane on register tiles or by the plane loops (a function, not
/// a closure, so that it is inlined into `wide`'s AVX2 copy).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dwconv2d_bwd_data_either<T: Element>(
    tiled: bool,
    taps: &[Tap],
    dyp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    dxp: &mut [T],
) {
    match tiled {
        true => dwconv2d_bwd_data_tiled(taps, dyp, xd, wc, spec, yd, dxp),
        false => dwconv2d_bwd_data_plane(taps, dyp, xd, wc, spec, yd, dxp),
    }
}

/// The stride-1 data gradient on register tiles: a correlation of `dy`, padded by
/// `(k - 1) * d - padding`, with the flipped kernel; each tile adds its taps in the plane
/// loop's order onto the values already in `dxp` (bit-identical to `dwconv2d_bwd_data_plane`).
#[inline(always)]
fn dwconv2d_bwd_data_tiled<T: Element>(
    taps: &[Tap],
    dyp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    dxp: &mut [T],
) {
    let (k, d) = (spec.kernel, spec.dilation);
    let reach = (k - 1) * d;
    let q = reach - spec.padding;
    let src = Padded::new::<false>(dyp, (yd.h, yd.w), (q, q), (xd.h, xd.w), reach, 1);
    let taps: Vec<PadTap<T>> = taps
        .iter()
        .map(|t| {
            let (kh, kw) = (t.index / k, t.index % k);
            src.tap(wc[t.index], (k - 1 - kh) * d, (k - 1 - kw) * d)
        })
        .collect();
    tiled_plane(&src, &taps, dxp, xd.w);
}

/// One channel's weight gradient over all its samples' planes (`planes`: the x and dy
/// offsets of each, in order): per tap, the products of every row are summed in lanes and
/// reduced once, in f64.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dwconv2d_bwd_weight_channel<T: Element, const RELU: bool>(
    taps: &[Tap],
    planes: impl Iterator<Item = (usize, usize)> + Clone,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dwc: &mut [T],
) {
    let s = spec.stride;
    for t in taps {
        let mut lanes = Lanes::new();
        for (xo, yo) in planes.clone() {
            for oh in t.rows.clone() {
                let dyr = &dy[yo + oh * yd.w..][..yd.w];
                let xr = &x[xo + t.input_row(oh, s) * xd.w..][..xd.w];
                if s == 1 {
                    lanes.add_dot(&dyr[t.lo..t.hi], &xr[t.input_cols()], pre::<T, RELU>);
                } else {
                    let mut acc = T::ZERO;
                    for (ow, &g) in dyr.iter().enumerate().take(t.hi).skip(t.lo) {
                        acc += g * pre::<T, RELU>(xr[((ow * s) as isize + t.col_off) as usize]);
                    }
                    lanes.add(acc);
                }
            }
        }
        dwc[t.index] += T::from_f64(lanes.sum());
    }
}

#[cfg(test)]
mod tests {
    //! The register tiles must give exactly the plane loops' values (same products, same
    //! order), at odd shapes, both strides, dilation 1 and 2, every padding from 0 up.
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Every case both tests run: odd and even planes of `n` samples, 3x3 and 5x5, dilation
    /// 1 and 2, stride 1 and 2, every padding up to the kernel's reach: (input, spec, output).
    fn cases(n: usize) -> Vec<(Nchw, Conv2dSpec, Nchw)> {
        let mut out = Vec::new();
        for (h, w) in [(7, 9), (32, 32), (13, 5), (4, 4), (1, 21), (18, 37)] {
            for (k, d, s) in [
                (3, 1, 1),
                (5, 1, 1),
                (3, 2, 1),
                (5, 2, 1),
                (3, 1, 2),
                (5, 2, 2),
            ] {
                for p in 0..=(k - 1) * d {
                    let xd = Nchw { n, c: 1, h, w };
                    let spec = Conv2dSpec::new(1, 1, k).stride(s).padding(p).dilation(d);
                    if let Ok(yd) = spec.output(xd) {
                        out.push((xd, spec, yd));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn tiles_match_the_plane_loops_bit_for_bit() {
        let mut rng = Rng::new(7);
        for (xd, spec, yd) in cases(1) {
            let x = random(&mut rng, xd.plane());
            let wc = random(&mut rng, spec.kernel * spec.kernel);
            let taps: Vec<Tap> = taps(xd, &spec, yd).collect();
            let (mut a, mut b) = (vec![0.0; yd.plane()], vec![0.0; yd.plane()]);
            dwconv2d_fwd_plane::<f32, false>(&taps, &x, xd, &wc, &spec, yd, &mut a);
            dwconv2d_fwd_tiled::<f32, false>(&taps, &x, xd, &wc, &spec, yd, &mut b);
            assert_eq!(a, b, "forward {xd:?} {spec:?}");
            dwconv2d_fwd_plane::<f32, true>(&taps, &x, xd, &wc, &spec, yd, &mut a);
            dwconv2d_fwd_tiled::<f32, true>(&taps, &x, xd, &wc, &spec, yd, &mut b);
            assert_eq!(a, b, "forward with ReLU {xd:?} {spec:?}");
            if spec.stride == 1 {
                // Onto an existing gradient, as the accumulating backward does.
                let dy = random(&mut rng, yd.plane());
                let start = random(&mut rng, xd.plane());
                let (mut a, mut b) = (start.clone(), start);
                dwconv2d_bwd_data_plane(&taps, &dy, xd, &wc, &spec, yd, &mut a);
                dwconv2d_bwd_data_tiled(&taps, &dy, xd, &wc, &spec, yd, &mut b);
                assert_eq!(a, b, "data gradient {xd:?} {spec:?}");
            }
        }
        assert!(cases(1).len() > 100);
    }

    /// The weight gradient by the plane loops and by `weight_rows` (f32), by the plane loops
    /// in f64, and the f64 sums of the products' magnitudes (the scale of the rounding).
    fn weight_grads<const RELU: bool, const K: usize>(
        x: &[f32],
        dy: &[f32],
        xd: Nchw,
        spec: &Conv2dSpec,
        yd: Nchw,
    ) -> [Vec<f64>; 4] {
        let taps: Vec<Tap> = taps(xd, spec, yd).collect();
        let planes = (0..xd.n).map(|n| (n * xd.plane(), n * yd.plane()));
        let (mut a, mut b) = (vec![0.0f32; K * K], vec![0.0f32; K * K]);
        dwconv2d_bwd_weight_channel::<f32, RELU>(
            &taps,
            planes.clone(),
            x,
            dy,
            xd,
            spec,
            yd,
            &mut a,
        );
        weight_rows::<f32, RELU, K>(planes.clone(), x, dy, xd, spec, yd, &mut b);
        let wide = |v: &[f32], abs: bool| -> Vec<f64> {
            v.iter()
                .map(|&u| if abs { (u as f64).abs() } else { u as f64 })
                .collect()
        };
        let (mut r, mut m) = (vec![0.0f64; K * K], vec![0.0f64; K * K]);
        let (x64, dy64) = (wide(x, false), wide(dy, false));
        dwconv2d_bwd_weight_channel::<f64, RELU>(
            &taps,
            planes.clone(),
            &x64,
            &dy64,
            xd,
            spec,
            yd,
            &mut r,
        );
        let (xa, dya) = (wide(x, true), wide(dy, true));
        dwconv2d_bwd_weight_channel::<f64, RELU>(&taps, planes, &xa, &dya, xd, spec, yd, &mut m);
        [wide(&a, false), wide(&b, false), r, m]
    }

    /// The lane-per-tap weight gradient sums the same products as the plane loops in another
    /// order: both within f32 rounding of the f64 sum, over several samples, both strides,
    /// every padding.
    #[test]
    fn weight_rows_match_the_plane_loops() {
        let mut rng = Rng::new(8);
        for (xd, spec, yd) in cases(3) {
            let k = spec.kernel;
            let x = random(&mut rng, xd.numel());
            let dy = random(&mut rng, yd.numel());
            let relu = spec.relu_input();
            let runs = match k {
                3 => [
                    weight_grads::<false, 3>(&x, &dy, xd, &spec, yd),
                    weight_grads::<true, 3>(&x, &dy, xd, &relu, yd),
                ],
                _ => [
                    weight_grads::<false, 5>(&x, &dy, xd, &spec, yd),
                    weight_grads::<true, 5>(&x, &dy, xd, &relu, yd),
                ],
            };
            for [loops, rows, exact, scale] in runs {
                for i in 0..k * k {
                    let tol = 1e-6 * scale[i] + 1e-6;
                    for (name, v) in [("loops", loops[i]), ("rows", rows[i])] {
                        let e = (v - exact[i]).abs();
                        assert!(
                            e <= tol,
                            "{name} tap {i}: {v} vs {}, {xd:?} {spec:?}",
                            exact[i]
                        );
                    }
                }
            }
        }
    }
}
