//! CPU depthwise conv2d weight gradient, the twin of kernels/conv.cu's
//! `dwconv2d_bwd_weight_f32`: one channel per task, its products summed over every
//! sample in order (deterministic, and no running sum the loop waits on). The stride-1 and
//! stride-2 gradient of a 3x3 or 5x5 kernel reads a padded copy of each plane (`tiles.rs`),
//! a kernel row's taps summed together in lanes (`weight_rows`; another order than the plane
//! loops, same f32 rounding); the rest runs the plane loops, tap by tap, summed in `Lanes`.
//! The forward and the data gradient, and the taps both walk, are in `dwconv.rs`.

use super::conv::pre;
use super::dwconv::{taps, Tap};
use super::simd::{wide, Lanes};
use super::team;
use super::tiles::Padded;
use crate::backend::Element;
use crate::shape::{Conv2dSpec, Nchw};

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
    team::chunks_mut(&mut dw, kk, |c, dwc| {
        // (x offset, dy offset) of this channel's plane in every sample, in order.
        let planes = (0..xd.n).map(|n| ((n * xd.c + c) * xd.plane(), (n * xd.c + c) * yd.plane()));
        // Products with padding are exact zeros only for a finite dy (see `dwconv.rs`,
        // `tiles_apply`).
        // Stride 2 reads the phase-split padded copy: since that copy is filled in pairs and
        // made once per channel, 2.4-4.5x faster than the plane loops' strided scalar reads
        // (single thread, C16 and C8 L5 reduction-cell shapes).
        let rows = spec.stride <= 2
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
    // One padded buffer for every sample's plane: the padding is written once.
    let mut src = Padded::blank(T::ZERO, (xd.h, xd.w), (p, p), (yd.h, yd.w), (K - 1) * d, s);
    let starts: [usize; K] = std::array::from_fn(|kw| src.start(kw * d));
    for (xo, yo) in planes {
        src.load::<RELU>(&x[xo..][..xd.plane()]);
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
    use super::*;
    use crate::backend::cpu::dwconv::tests::{cases, random};
    use crate::rng::Rng;

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
