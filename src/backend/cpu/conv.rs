//! CPU conv2d (no bias), forward and both backwards. Two paths, named as in kernels/conv.cu:
//! - depthwise (groups == in == out channels, the DARTS separable and dilated convs): sent
//!   to `dwconv.rs` (`dwconv2d_fwd`, `dwconv2d_bwd_data`) and `dwconv_weight.rs`
//!   (`dwconv2d_bwd_weight`);
//! - everything else (stem, 1x1 pointwise, grouped): `im2col` + GEMM (matrixmultiply) and
//!   `col2im`; a 1x1 stride-1 unpadded conv skips im2col and multiplies the input in place.
//!
//! Work is split over samples (or channel planes) on the team (`team.rs`). Weight gradients
//! are summed over fixed chunks of samples in a fixed order, so results do not depend on the
//! thread count.
//!
//! `spec.relu_input` (a ReLU fused into the conv): the depthwise loops read `relu(x)`
//! (`RELU` const generic, so the unfused loops are unchanged) and zero each data-gradient
//! plane where `x <= 0` right after computing it (a NaN stays NaN forward and passes its
//! gradient backward, as PyTorch's ReLU); the GEMM path applies the ReLU while
//! gathering (`im2col`, which then also serves 1x1 stride-1 convs) and masks after `col2im`.
//!
//! `conv2d_bwd_data_into` adds the data gradient into a pending one (the tape's
//! accumulation): the depthwise loops and `col2im` already add, the direct GEMM takes beta 1.

use super::dwconv::{dwconv2d_bwd_data, dwconv2d_fwd};
use super::dwconv_weight::dwconv2d_bwd_weight;
use super::fresh::{out_ptr, written};
use super::{team, Cpu, SAMPLES_PER_CHUNK};
use crate::backend::{checks, ConvOps, Element};
use crate::error::Result;
use crate::shape::{Conv2dSpec, Nchw};
use std::mem::MaybeUninit;

/// `relu(v)` when `RELU` (the fused ReLU as an input is read; `relu_fwd`'s rule: NaN stays
/// NaN).
#[inline(always)]
pub(super) fn pre<T: Element, const RELU: bool>(v: T) -> T {
    if RELU && v <= T::ZERO {
        T::ZERO
    } else {
        v
    }
}

/// `dx = 0 where x <= 0`: the fused ReLU's backward (`relu_bwd`'s rule: a NaN input passes
/// its gradient), applied as the data gradient is finished.
#[inline(always)]
pub(super) fn mask_by_input<T: Element>(dx: &mut [T], x: &[T]) {
    for (d, &v) in dx.iter_mut().zip(x) {
        *d = if v <= T::ZERO { T::ZERO } else { *d };
    }
}

/// The im2col path is skipped (the GEMM reads the input in place) for a 1x1 stride-1
/// unpadded conv, unless a fused ReLU must be applied while gathering.
fn direct(spec: &Conv2dSpec) -> bool {
    spec.kernel == 1 && spec.stride == 1 && spec.padding == 0 && !spec.relu_input
}

/// Output positions `o` in `0..out` with `0 <= o*stride + offset < input`, as a range.
#[inline]
pub(crate) fn valid_range(
    out: usize,
    input: usize,
    stride: usize,
    offset: isize,
) -> (usize, usize) {
    // o*stride + offset >= 0  =>  o >= ceil(-offset / stride)
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) as usize).div_ceil(stride)
    };
    // o*stride + offset <= input - 1  =>  o <= floor((input - 1 - offset) / stride)
    let last = input as isize - 1 - offset;
    let hi = if last < 0 {
        0
    } else {
        (last as usize / stride + 1).min(out)
    };
    (lo.min(hi), hi)
}

pub fn conv2d_fwd<T: Element>(x: &[T], xd: Nchw, w: &[T], spec: &Conv2dSpec, yd: Nchw) -> Vec<T> {
    if spec.is_depthwise() {
        return dwconv2d_fwd(x, xd, w, spec, yd);
    }
    let g = spec.groups;
    let (cg, og) = (spec.in_channels / g, spec.out_channels / g);
    let kk = spec.kernel * spec.kernel;
    let rows = cg * kk;
    let cols = yd.plane();
    let sample = |n: usize, ys: &mut [MaybeUninit<T>]| {
        let xs = &x[n * xd.c * xd.plane()..][..xd.c * xd.plane()];
        let mut col = Vec::new();
        for gi in 0..g {
            let b = gemm_input(xs, gi, cg, xd, spec, yd, &mut col);
            let wg = &w[gi * og * rows..][..og * rows];
            let yg = &mut ys[gi * og * cols..][..og * cols];
            // y_g [og, cols] = w_g [og, rows] * col [rows, cols], written with beta 0.
            unsafe {
                T::gemm(
                    og,
                    rows,
                    cols,
                    T::ONE,
                    wg.as_ptr(),
                    rows as isize,
                    1,
                    b.as_ptr(),
                    cols as isize,
                    1,
                    T::ZERO,
                    out_ptr(yg),
                    cols as isize,
                    1,
                );
            }
        }
    };
    // SAFETY: the samples' groups cover y, each written by a GEMM with beta 0.
    unsafe { written(yd.numel(), |y| team::chunks_mut(y, yd.c * cols, sample)) }
}

/// The data gradient added into `dx`: with `accumulate`, to the gradient it holds (the
/// fused ReLU's mask applied to the contribution only); without, `dx` must be all zero (a
/// fresh gradient, masked whole). Without a fused ReLU the loops add into
/// `dx` directly; with one, each plane (depthwise) or sample (GEMM) is computed in a scratch
/// buffer, masked and added, so the mask never touches the accumulated gradient.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bwd_data_into<T: Element>(
    x: &[T],
    dy: &[T],
    w: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dx: &mut [T],
    accumulate: bool,
) {
    if spec.is_depthwise() {
        if accumulate {
            dwconv2d_bwd_data(x, dy, w, xd, spec, yd, Some(dx));
        } else {
            dx.copy_from_slice(&dwconv2d_bwd_data(x, dy, w, xd, spec, yd, None));
        }
        return;
    }
    let masked_add = accumulate && spec.relu_input;
    let g = spec.groups;
    let (cg, og) = (spec.in_channels / g, spec.out_channels / g);
    let kk = spec.kernel * spec.kernel;
    let rows = cg * kk;
    let cols = yd.plane();
    let direct = direct(spec);
    team::chunks_mut(dx, xd.c * xd.plane(), |n, dxs_acc| {
        let dys = &dy[n * yd.c * cols..][..yd.c * cols];
        // The GEMM writes col whole (beta 0) before col2im reads it: no zero fill.
        let mut col: Vec<T> = Vec::new();
        if !direct {
            col.reserve_exact(rows * cols);
        }
        // With a masked accumulation, this sample's contribution goes to a scratch buffer.
        let mut scratch = if masked_add {
            vec![T::ZERO; xd.c * xd.plane()]
        } else {
            Vec::new()
        };
        let dxs: &mut [T] = if masked_add {
            &mut scratch
        } else {
            &mut *dxs_acc
        };
        // col2im and the direct GEMM add into dx only when accumulating in place.
        let add_in_place = accumulate && !masked_add;
        for gi in 0..g {
            let wg = &w[gi * og * rows..][..og * rows];
            let dyg = &dys[gi * og * cols..][..og * cols];
            let dxg = &mut dxs[gi * cg * xd.plane()..][..cg * xd.plane()];
            // dcol [rows, cols] = w_g^T [rows, og] * dy_g [og, cols]
            let (out, beta): (*mut T, T) = if direct {
                (
                    dxg.as_mut_ptr(),
                    if add_in_place { T::ONE } else { T::ZERO },
                )
            } else {
                (col.as_mut_ptr(), T::ZERO)
            };
            unsafe {
                T::gemm(
                    rows,
                    og,
                    cols,
                    T::ONE,
                    wg.as_ptr(),
                    1,
                    rows as isize,
                    dyg.as_ptr(),
                    cols as isize,
                    1,
                    beta,
                    out,
                    cols as isize,
                    1,
                );
            }
            if !direct {
                // SAFETY: the GEMM above wrote all rows * cols elements (beta 0).
                unsafe { col.set_len(rows * cols) };
                col2im(&col, cg, xd, spec, yd, dxg);
            }
        }
        let xs = &x[n * xd.c * xd.plane()..][..xd.c * xd.plane()];
        if masked_add {
            add_masked(dxs_acc, &scratch, xs);
        } else if spec.relu_input {
            mask_by_input(dxs_acc, xs);
        }
    });
}

/// A fresh data gradient of a direct (1x1 stride-1, unfused) conv: one GEMM per sample and
/// group writing its part of dx with beta 0, so dx needs no zero fill first.
fn direct_bwd_data<T: Element>(dy: &[T], w: &[T], xd: Nchw, spec: &Conv2dSpec, yd: Nchw) -> Vec<T> {
    let g = spec.groups;
    let (cg, og) = (spec.in_channels / g, spec.out_channels / g);
    let cols = yd.plane();
    let sample = |n: usize, dxs: &mut [MaybeUninit<T>]| {
        let dys = &dy[n * yd.c * cols..][..yd.c * cols];
        for gi in 0..g {
            let wg = &w[gi * og * cg..][..og * cg];
            let dyg = &dys[gi * og * cols..][..og * cols];
            let dxg = &mut dxs[gi * cg * cols..][..cg * cols];
            // dx_g [cg, cols] = w_g^T [cg, og] * dy_g [og, cols]
            unsafe {
                T::gemm(
                    cg,
                    og,
                    cols,
                    T::ONE,
                    wg.as_ptr(),
                    1,
                    cg as isize,
                    dyg.as_ptr(),
                    cols as isize,
                    1,
                    T::ZERO,
                    out_ptr(dxg),
                    cols as isize,
                    1,
                );
            }
        }
    };
    // SAFETY: the samples' groups cover dx, each written by a GEMM with beta 0.
    unsafe {
        written(xd.numel(), |dx| {
            team::chunks_mut(dx, xd.c * xd.plane(), sample)
        })
    }
}

/// `acc += (x <= 0 ? 0 : g)`: a fused ReLU's masked contribution added to a pending
/// gradient (`mask_by_input`'s rule). A select, not a branch, so it vectorises and does not
/// mispredict on half-negative inputs.
#[inline(always)]
pub(super) fn add_masked<T: Element>(acc: &mut [T], g: &[T], x: &[T]) {
    for ((a, &gv), &v) in acc.iter_mut().zip(g).zip(x) {
        *a += if v <= T::ZERO { T::ZERO } else { gv };
    }
}

pub fn conv2d_bwd_weight<T: Element>(
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
) -> Vec<T> {
    if spec.is_depthwise() {
        return dwconv2d_bwd_weight(x, dy, xd, spec, yd);
    }
    let kk = spec.kernel * spec.kernel;
    let wlen = spec.out_channels * (spec.in_channels / spec.groups) * kk;
    let g = spec.groups;
    let (cg, og) = (spec.in_channels / g, spec.out_channels / g);
    let rows = cg * kk;
    let cols = yd.plane();
    let chunks: Vec<(usize, usize)> = (0..xd.n)
        .step_by(SAMPLES_PER_CHUNK)
        .map(|s| (s, (s + SAMPLES_PER_CHUNK).min(xd.n)))
        .collect();
    let partials: Vec<Vec<T>> = team::map(chunks.len(), |ci| {
        let (s, e) = chunks[ci];
        let mut dw = vec![T::ZERO; wlen];
        let mut col = Vec::new();
        for n in s..e {
            let xs = &x[n * xd.c * xd.plane()..][..xd.c * xd.plane()];
            let dys = &dy[n * yd.c * cols..][..yd.c * cols];
            for gi in 0..g {
                let b = gemm_input(xs, gi, cg, xd, spec, yd, &mut col);
                let dyg = &dys[gi * og * cols..][..og * cols];
                let dwg = &mut dw[gi * og * rows..][..og * rows];
                // dw_g [og, rows] += dy_g [og, cols] * col^T [cols, rows]
                unsafe {
                    T::gemm(
                        og,
                        cols,
                        rows,
                        T::ONE,
                        dyg.as_ptr(),
                        cols as isize,
                        1,
                        b.as_ptr(),
                        1,
                        cols as isize,
                        T::ONE,
                        dwg.as_mut_ptr(),
                        rows as isize,
                        1,
                    );
                }
            }
        }
        dw
    });
    let mut it = partials.into_iter();
    let mut dw = it.next().unwrap_or_else(|| vec![T::ZERO; wlen]);
    for p in it {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    dw
}

/// Group `gi`'s input (of sample `xs`) as the GEMM reads it: in place for a direct conv,
/// else gathered by `im2col` into `col` (grown to size once, reused without a zero fill).
#[allow(clippy::too_many_arguments)]
fn gemm_input<'a, T: Element>(
    xs: &'a [T],
    gi: usize,
    cg: usize,
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    col: &'a mut Vec<T>,
) -> &'a [T] {
    let xg = &xs[gi * cg * xd.plane()..][..cg * xd.plane()];
    if direct(spec) {
        return xg;
    }
    let len = cg * spec.kernel * spec.kernel * yd.plane();
    col.reserve_exact(len);
    im2col(xg, cg, xd, spec, yd, &mut col.spare_capacity_mut()[..len])
}

/// Lays out every k x k window of `cg` input channels as columns: col [cg*k*k, Ho*Wo],
/// rectified as gathered when `spec.relu_input`. Writes every element of `col` (a buffer
/// reused without a zero fill) and returns it.
fn im2col<'a, T: Element>(
    xg: &[T],
    cg: usize,
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    col: &'a mut [MaybeUninit<T>],
) -> &'a [T] {
    if spec.relu_input {
        im2col_impl::<T, true>(xg, cg, xd, spec, yd, col)
    } else {
        im2col_impl::<T, false>(xg, cg, xd, spec, yd, col)
    }
    // SAFETY: `im2col_impl` wrote every row of `col` (each is filled before its taps).
    unsafe { std::slice::from_raw_parts(col.as_ptr().cast::<T>(), col.len()) }
}

fn im2col_impl<T: Element, const RELU: bool>(
    xg: &[T],
    cg: usize,
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    col: &mut [MaybeUninit<T>],
) {
    let k = spec.kernel;
    let (s, p, d) = (spec.stride, spec.padding as isize, spec.dilation);
    for c in 0..cg {
        let xp = &xg[c * xd.plane()..][..xd.plane()];
        for kh in 0..k {
            let (oh_lo, oh_hi) = valid_range(yd.h, xd.h, s, kh as isize * d as isize - p);
            for kw in 0..k {
                let (ow_lo, ow_hi) = valid_range(yd.w, xd.w, s, kw as isize * d as isize - p);
                let row = &mut col[((c * k + kh) * k + kw) * yd.plane()..][..yd.plane()];
                row.fill(MaybeUninit::new(T::ZERO));
                for oh in oh_lo..oh_hi {
                    let ih = (oh * s) as isize + kh as isize * d as isize - p;
                    let xr = &xp[ih as usize * xd.w..][..xd.w];
                    let rr = &mut row[oh * yd.w..][..yd.w];
                    for ow in ow_lo..ow_hi {
                        let iw = (ow * s) as isize + kw as isize * d as isize - p;
                        rr[ow].write(pre::<T, RELU>(xr[iw as usize]));
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds every column entry back into its input position (into what
/// `dxg` holds: the caller zeroes it for a fresh gradient).
fn col2im<T: Element>(col: &[T], cg: usize, xd: Nchw, spec: &Conv2dSpec, yd: Nchw, dxg: &mut [T]) {
    let k = spec.kernel;
    let (s, p, d) = (spec.stride, spec.padding as isize, spec.dilation);
    for c in 0..cg {
        let dxp = &mut dxg[c * xd.plane()..][..xd.plane()];
        for kh in 0..k {
            let (oh_lo, oh_hi) = valid_range(yd.h, xd.h, s, kh as isize * d as isize - p);
            for kw in 0..k {
                let (ow_lo, ow_hi) = valid_range(yd.w, xd.w, s, kw as isize * d as isize - p);
                let row = &col[((c * k + kh) * k + kw) * yd.plane()..][..yd.plane()];
                for oh in oh_lo..oh_hi {
                    let ih = (oh * s) as isize + kh as isize * d as isize - p;
                    let dr = &mut dxp[ih as usize * xd.w..][..xd.w];
                    let rr = &row[oh * yd.w..][..yd.w];
                    for ow in ow_lo..ow_hi {
                        let iw = (ow * s) as isize + kw as isize * d as isize - p;
                        dr[iw as usize] += rr[ow];
                    }
                }
            }
        }
    }
}

impl<T: Element> ConvOps for Cpu<T> {
    fn conv2d_fwd(&self, x: &Vec<T>, xd: Nchw, w: &Vec<T>, spec: &Conv2dSpec) -> Result<Vec<T>> {
        let yd = checks::conv2d_fwd(self, x, xd, w, spec)?;
        Ok(conv2d_fwd(x, xd, w, spec, yd))
    }
    fn conv2d_bwd_data(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        w: &Vec<T>,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Vec<T>> {
        let yd = checks::conv2d_bwd_data(self, x, dy, w, xd, spec)?;
        if direct(spec) {
            return Ok(direct_bwd_data(dy, w, xd, spec, yd));
        }
        if spec.is_depthwise() {
            return Ok(dwconv2d_bwd_data(x, dy, w, xd, spec, yd, None));
        }
        let mut dx = vec![T::ZERO; xd.numel()];
        conv2d_bwd_data_into(x, dy, w, xd, spec, yd, &mut dx, false);
        Ok(dx)
    }
    fn conv2d_bwd_data_into(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        w: &Vec<T>,
        xd: Nchw,
        spec: &Conv2dSpec,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        let yd = checks::conv2d_bwd_data_into(self, x, dy, w, xd, spec, dx)?;
        conv2d_bwd_data_into(x, dy, w, xd, spec, yd, dx, true);
        Ok(())
    }
    fn conv2d_bwd_weight(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Vec<T>> {
        let yd = checks::conv2d_bwd_weight(self, x, dy, xd, spec)?;
        Ok(conv2d_bwd_weight(x, dy, xd, spec, yd))
    }
}
