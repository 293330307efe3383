//! New output buffers without the up-front zero fill `vec![ZERO; n]` pays: that fill is a
//! whole extra pass over the output's memory, which then leaves the cache before the op
//! comes back to it (perf, C16 L8: 9% of a DARTS step was mimalloc's memset).
//! - `written`: an op that writes every element gets them as `MaybeUninit`, so none can be
//!   read before it is written; a GEMM with beta 0 writes through a raw pointer
//!   (matrixmultiply: "if beta is zero, then C does not need to be initialized").
//! - `par_planes_zeroed` / `par_planes_filled` / `par_planes_into`: an op that adds into its
//!   output from zero (or takes a maximum from minus infinity) gets each plane filled by
//!   the task about to use it, while it is in that core's cache.

use super::par_planes;
use crate::backend::Element;
use std::mem::MaybeUninit;

/// A vector of `len` elements, every one written by `fill`.
///
/// # Safety
/// `fill` must write every element of the slice it is given (a panic inside `fill` is
/// fine: the vector is then dropped empty).
#[inline]
pub(super) unsafe fn written<T: Copy>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's contract: `fill` wrote elements 0..len.
    unsafe { v.set_len(len) };
    v
}

/// A slice of `MaybeUninit<T>` as the raw pointer a GEMM writes with beta 0.
#[inline(always)]
pub(super) fn out_ptr<T>(s: &mut [MaybeUninit<T>]) -> *mut T {
    s.as_mut_ptr().cast::<T>()
}

/// `par_planes` over a new vector of `len` zeros, each plane zeroed by the task that then
/// runs `f` on it (while the plane is in that core's cache), not all at once up front: for
/// ops that add into their output from zero (the depthwise forward's taps, the MixedOp
/// sum), the same values without a separate pass over the whole output. `init` and `f`'s
/// scratch are `par_planes`'s.
pub(super) fn par_planes_zeroed<T: Element, S>(
    len: usize,
    plane: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    par_planes_filled(len, plane, T::ZERO, init, f)
}

/// `par_planes_zeroed` with planes that start as `fill` (a maximum starts from minus
/// infinity).
pub(super) fn par_planes_filled<T: Element, S>(
    len: usize,
    plane: usize,
    fill: T,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    if plane == 0 {
        return vec![fill; len];
    }
    let run = |s: &mut S, i: usize, p: &mut [MaybeUninit<T>]| {
        p.fill(MaybeUninit::new(fill));
        // SAFETY: every element of `p` was just written.
        let p = unsafe { std::slice::from_raw_parts_mut(p.as_mut_ptr().cast::<T>(), p.len()) };
        f(s, i, p)
    };
    // SAFETY: `par_planes` hands every element of the buffer to `run` (consecutive
    // planes, the last one possibly short), which writes all of it first.
    unsafe { written(len, |buf| par_planes(buf, plane, init, run)) }
}

/// `par_planes` into `dst` when given (an op adding into a pending gradient), else into
/// a new vector of `len` zeros zeroed plane by plane (`par_planes_zeroed`), returned (empty
/// when `dst` was given).
pub(super) fn par_planes_into<T: Element, S>(
    dst: Option<&mut [T]>,
    len: usize,
    plane: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    match dst {
        Some(dst) => {
            par_planes(dst, plane, init, f);
            Vec::new()
        }
        None => par_planes_zeroed(len, plane, init, f),
    }
}
