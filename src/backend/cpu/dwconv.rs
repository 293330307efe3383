//! CPU depthwise conv2d (groups == in == out channels: the DARTS separable and dilated
//! convs), forward and data gradient, by the names of kernels/conv.cu: `dwconv2d_fwd`,
//! `dwconv2d_bwd_data`; the taps both walk (`Tap`), which the weight gradient
//! (`dwconv_weight.rs`) walks too. `conv.rs` sends depthwise specs here.
//!
//! The forward and the data gradient (stride 1 and 2) run on register tiles over a
//! zero-padded copy of the plane (`tiles.rs`: 2-3x faster, same values bit for bit; the
//! strided data gradient one input phase at a time, `Phase`, each a stride-1 correlation of
//! `dy` with the taps that reach it). A task pads into one buffer for all its planes. The
//! plane loops remain for larger strides and non-finite weights (where `w * padding` would
//! not be zero): each output row built tap by tap over the valid output range (no bounds
//! checks, so the loops vectorise; the strided data gradient adds into a copy of the plane
//! split into column phases, `Phases`, where a tap's columns are one run). All loops are
//! compiled for AVX2 where the CPU has it (`wide`), a channel plane per task. The fused
//! input ReLU is applied as in `conv.rs`.

use super::conv::{add_masked, mask_by_input, pre, valid_range};
use super::fresh::{par_planes_into, par_planes_zeroed};
use super::phases::Phases;
use super::simd::wide;
use super::tiles::{tiled_plane, PadTap, Padded, TileScratch, Weighted};
use crate::backend::Element;
use crate::shape::{Conv2dSpec, Nchw};

/// One kernel tap, as the plane loops walk it: output rows `rows` read real input, output
/// row `oh` reads input row `oh * stride + row_off`, and output column `ow` in `lo..hi` reads
/// input column `ow * stride + col_off`.
pub(super) struct Tap {
    pub(super) index: usize,
    pub(super) rows: std::ops::Range<usize>,
    row_off: isize,
    pub(super) lo: usize,
    pub(super) hi: usize,
    pub(super) col_off: isize,
}

impl Tap {
    #[inline(always)]
    pub(super) fn input_row(&self, oh: usize, stride: usize) -> usize {
        ((oh * stride) as isize + self.row_off) as usize
    }
    /// The input columns a stride-1 tap reads, for output columns `lo..hi`.
    #[inline(always)]
    pub(super) fn input_cols(&self) -> std::ops::Range<usize> {
        let base = (self.lo as isize + self.col_off) as usize;
        base..base + (self.hi - self.lo)
    }
}

/// The taps that read any real input (a tap that only ever reads padding, as with small
/// inputs and a large dilation, is skipped); listed once per op, walked by every plane.
pub(super) fn taps(xd: Nchw, spec: &Conv2dSpec, yd: Nchw) -> impl Iterator<Item = Tap> {
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
    par_planes_zeroed(
        yd.numel(),
        yd.plane(),
        || None,
        |scratch, plane, yp| {
            let c = plane % xd.c;
            let (xp, wc) = (
                &x[plane * xd.plane()..][..xd.plane()],
                &w[c * spec.kernel * spec.kernel..],
            );
            wide(
                #[inline(always)]
                || match (spec.relu_input, tiles_apply(&taps, wc, spec.stride)) {
                    (true, true) => {
                        dwconv2d_fwd_tiled::<T, true>(scratch, &taps, xp, xd, wc, spec, yd, yp)
                    }
                    (false, true) => {
                        dwconv2d_fwd_tiled::<T, false>(scratch, &taps, xp, xd, wc, spec, yd, yp)
                    }
                    (true, false) => dwconv2d_fwd_plane::<T, true>(&taps, xp, xd, wc, spec, yd, yp),
                    (false, false) => {
                        dwconv2d_fwd_plane::<T, false>(&taps, xp, xd, wc, spec, yd, yp)
                    }
                },
            )
        },
    )
}

/// Whether the register tiles (`tiled_plane`) take this plane: a stride the padded copy
/// splits into phases, and finite weights (a tap that reads padding adds `w * 0`, which is
/// an exact zero only for a finite `w`; the plane loops skip such products).
fn tiles_apply<T: Element>(taps: &[Tap], wc: &[T], stride: usize) -> bool {
    stride <= 2 && taps.iter().all(|t| wc[t.index].to_f64().is_finite())
}

/// The forward on register tiles: the input plane padded (into the task's `scratch`), then
/// every output tile sums its taps in the plane loop's order (bit-identical to
/// `dwconv2d_fwd_plane`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dwconv2d_fwd_tiled<T: Element, const RELU: bool>(
    scratch: &mut TileScratch<T>,
    taps: &[Tap],
    xp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    yp: &mut [T],
) {
    let (k, d, p) = (spec.kernel, spec.dilation, spec.padding);
    let (src, pads) = scratch.get_or_insert_with(|| {
        let reach = (k - 1) * d;
        let src = Padded::blank(
            T::ZERO,
            (xd.h, xd.w),
            (p, p),
            (yd.h, yd.w),
            reach,
            spec.stride,
        );
        let pads = taps
            .iter()
            .map(|t| src.tap(T::ZERO, t.index / k * d, t.index % k * d))
            .collect();
        (src, pads)
    });
    src.load::<RELU>(xp);
    for (pt, t) in pads.iter_mut().zip(taps) {
        pt.w = wc[t.index];
    }
    tiled_plane::<T, Weighted>(src, pads, yp, (yd.h, yd.w), yd.w);
}

/// The twin of `dwconv2d_bwd_data_f32` (its `accumulate` flag is `dx.is_some()`): the
/// depthwise data gradient added into `dx`, as `conv2d_bwd_data_into` describes, or without
/// `dx` a fresh one, returned (empty when `dx` was given).
#[allow(clippy::too_many_arguments)]
pub fn dwconv2d_bwd_data<T: Element>(
    x: &[T],
    dy: &[T],
    w: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dx: Option<&mut [T]>,
) -> Vec<T> {
    let masked_add = dx.is_some() && spec.relu_input;
    let taps: Vec<Tap> = taps(xd, spec, yd).collect();
    par_planes_into(
        dx,
        xd.numel(),
        xd.plane(),
        || None,
        |scratch, plane, dxp| {
            let c = plane % xd.c;
            let (dyp, wc) = (
                &dy[plane * yd.plane()..][..yd.plane()],
                &w[c * spec.kernel * spec.kernel..],
            );
            let xp = &x[plane * xd.plane()..][..xd.plane()];
            wide(
                #[inline(always)]
                || {
                    let tiled = tiles_apply(&taps, wc, spec.stride);
                    if masked_add {
                        let mut tmp = vec![T::ZERO; xd.plane()];
                        let tmp_p = &mut tmp;
                        dwconv2d_bwd_data_either(
                            scratch, tiled, &taps, dyp, xd, wc, spec, yd, tmp_p,
                        );
                        add_masked(dxp, &tmp, xp);
                    } else {
                        dwconv2d_bwd_data_either(scratch, tiled, &taps, dyp, xd, wc, spec, yd, dxp);
                        if spec.relu_input {
                            mask_by_input(dxp, xp);
                        }
                    }
                },
            )
        },
    )
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
    // A strided tap adds to every s-th column: on a phase-split copy of the plane those are
    // one run, so the loop vectorises (each element gets the same sums in the same order).
    let ph = Phases::new(xd.w, s);
    let mut split = if s == 1 {
        Vec::new()
    } else {
        ph.split(dxp, xd.w)
    };
    let (buf, row_len) = match s {
        1 => (&mut *dxp, xd.w),
        _ => (&mut split[..], ph.row_len),
    };
    for t in taps {
        let wv = wc[t.index];
        let at = ph.at(((t.lo * s) as isize + t.col_off) as usize);
        for oh in t.rows.clone() {
            let dyr = &dyp[oh * yd.w..][..yd.w];
            let dxr = &mut buf[t.input_row(oh, s) * row_len..][at..][..t.hi - t.lo];
            for (dxv, &dyv) in dxr.iter_mut().zip(&dyr[t.lo..t.hi]) {
                *dxv += wv * dyv;
            }
        }
    }
    if s != 1 {
        ph.merge(&split, dxp, xd.w);
    }
}

/// The data gradient of one plane on register tiles or by the plane loops (a function, not
/// a closure, so that it is inlined into `wide`'s AVX2 copy).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dwconv2d_bwd_data_either<T: Element>(
    scratch: &mut PhaseScratch<T>,
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
        true => dwconv2d_bwd_data_tiled(scratch, taps, dyp, xd, wc, spec, yd, dxp),
        false => dwconv2d_bwd_data_plane(taps, dyp, xd, wc, spec, yd, dxp),
    }
}

/// One phase of the data gradient on register tiles: the input elements (rows `a + i * s`,
/// columns `b + j * s`, an `h x w` plane) that the taps congruent to (a, b) mod the stride
/// reach. For them the strided transposed conv is a stride-1 correlation of `dy` (a padded
/// copy shared by every phase) with those taps, shifted (`pads`, weights from kernel index
/// `index`).
struct Phase<T> {
    a: usize,
    b: usize,
    h: usize,
    w: usize,
    pads: Vec<PadTap<T>>,
    index: Vec<usize>,
}

/// A task's padded copy of `dy` and every phase with a tap (`Phase`), made once per task.
type PhaseScratch<T> = Option<(Padded<T>, Vec<Phase<T>>)>;

/// The padded copy of `dy` and the phases of `PhaseScratch`.
fn phases<T: Element>(
    taps: &[Tap],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
) -> (Padded<T>, Vec<Phase<T>>) {
    let s = spec.stride as isize;
    let (k, d, p) = (spec.kernel, spec.dilation as isize, spec.padding as isize);
    // Tap (row_off, col_off) adds dy[oh][ow] into input (oh * s + row_off, ...): for input
    // row a + i * s that is oh = i + (a - row_off) / s, where it divides. Each phase's taps
    // with their (row, column) shifts in dy:
    let mut found = Vec::new();
    for (a, b) in (0..spec.stride).flat_map(|a| (0..spec.stride).map(move |b| (a, b))) {
        let h = xd.h.saturating_sub(a).div_ceil(spec.stride);
        let w = xd.w.saturating_sub(b).div_ceil(spec.stride);
        let mine: Vec<(usize, isize, isize)> = taps
            .iter()
            .filter_map(|t| {
                let r = (t.index / k) as isize * d - p;
                let c = (t.index % k) as isize * d - p;
                let (dr, dc) = (a as isize - r, b as isize - c);
                (dr % s == 0 && dc % s == 0).then_some((t.index, dr / s, dc / s))
            })
            .collect();
        if !mine.is_empty() && h > 0 && w > 0 {
            found.push((a, b, h, w, mine));
        }
    }
    // One padded copy for all: padding before dy for the most negative shift, and after it
    // for the furthest reach (phase (0, 0) has the most rows and columns).
    let all = || found.iter().flat_map(|f| f.4.iter());
    let top = (-all().map(|m| m.1).min().unwrap_or(0)).max(0);
    let left = (-all().map(|m| m.2).min().unwrap_or(0)).max(0);
    let reach = all()
        .map(|m| (m.1 + top).max(m.2 + left))
        .max()
        .unwrap_or(0);
    let (h0, w0) = (xd.h.div_ceil(spec.stride), xd.w.div_ceil(spec.stride));
    let at = (top as usize, left as usize);
    let src = Padded::blank(T::ZERO, (yd.h, yd.w), at, (h0, w0), reach as usize, 1);
    let phases = found
        .into_iter()
        .map(|(a, b, h, w, mine)| Phase {
            a,
            b,
            h,
            w,
            pads: mine
                .iter()
                .map(|m| src.tap(T::ZERO, (m.1 + top) as usize, (m.2 + left) as usize))
                .collect(),
            index: mine.iter().map(|m| m.0).collect(),
        })
        .collect();
    (src, phases)
}

/// The data gradient on register tiles, phase by phase (`Phase`; one phase, the plane
/// itself, at stride 1): each tile adds its taps in the plane loop's order onto the values
/// already in `dxp` (bit-identical to `dwconv2d_bwd_data_plane`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dwconv2d_bwd_data_tiled<T: Element>(
    scratch: &mut PhaseScratch<T>,
    taps: &[Tap],
    dyp: &[T],
    xd: Nchw,
    wc: &[T],
    spec: &Conv2dSpec,
    yd: Nchw,
    dxp: &mut [T],
) {
    let s = spec.stride;
    // At stride 2 and more the gradient is split into column phases (`Phases`), so that a
    // phase's rows are runs the tiles add into in place (rows `s` apart).
    let cols = Phases::new(xd.w, s);
    let mut split = if s == 1 {
        Vec::new()
    } else {
        cols.split(dxp, xd.w)
    };
    let (buf, row_len) = match s {
        1 => (&mut *dxp, xd.w),
        _ => (&mut split[..], cols.row_len),
    };
    let (src, phases) = scratch.get_or_insert_with(|| phases(taps, xd, spec, yd));
    src.load::<false>(dyp);
    for ph in phases {
        for (pt, &i) in ph.pads.iter_mut().zip(&ph.index) {
            pt.w = wc[i];
        }
        let out = &mut buf[ph.a * row_len + cols.at(ph.b)..];
        tiled_plane::<T, Weighted>(src, &ph.pads, out, (ph.h, ph.w), s * row_len);
    }
    if s != 1 {
        cols.merge(&split, dxp, xd.w);
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The register tiles must give exactly the plane loops' values (same products, same
    //! order), at odd shapes, both strides, dilation 1 and 2, every padding from 0 up.
    use super::*;
    use crate::rng::Rng;

    pub(in crate::backend::cpu) fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Every case both tests run: odd and even planes of `n` samples, 3x3 and 5x5, dilation
    /// 1 and 2, stride 1 and 2, every padding up to the kernel's reach: (input, spec, output).
    pub(in crate::backend::cpu) fn cases(n: usize) -> Vec<(Nchw, Conv2dSpec, Nchw)> {
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
            dwconv2d_fwd_tiled::<f32, false>(&mut None, &taps, &x, xd, &wc, &spec, yd, &mut b);
            assert_eq!(a, b, "forward {xd:?} {spec:?}");
            dwconv2d_fwd_plane::<f32, true>(&taps, &x, xd, &wc, &spec, yd, &mut a);
            dwconv2d_fwd_tiled::<f32, true>(&mut None, &taps, &x, xd, &wc, &spec, yd, &mut b);
            assert_eq!(a, b, "forward with ReLU {xd:?} {spec:?}");
            // Onto an existing gradient, as the accumulating backward does: the tiles
            // (phase by phase at stride 2) against the plane loops...
            let dy = random(&mut rng, yd.plane());
            let start = random(&mut rng, xd.plane());
            let (mut a, mut b) = (start.clone(), start.clone());
            dwconv2d_bwd_data_plane(&taps, &dy, xd, &wc, &spec, yd, &mut a);
            dwconv2d_bwd_data_tiled(&mut None, &taps, &dy, xd, &wc, &spec, yd, &mut b);
            assert_eq!(a, b, "data gradient {xd:?} {spec:?}");
            // ...and the plane loops against a strided scatter, tap by tap.
            let mut want = start;
            for t in &taps {
                for oh in t.rows.clone() {
                    for ow in t.lo..t.hi {
                        let iw = ((ow * spec.stride) as isize + t.col_off) as usize;
                        want[t.input_row(oh, spec.stride) * xd.w + iw] +=
                            wc[t.index] * dy[oh * yd.w + ow];
                    }
                }
            }
            assert_eq!(a, want, "data gradient scatter {xd:?} {spec:?}");
        }
        assert!(cases(1).len() > 100);
    }
}
