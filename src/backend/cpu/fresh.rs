//! Output buffers an op writes in full before anything reads them, allocated without the
//! zero fill `vec![ZERO; n]` pays: that fill is a whole extra pass over the output's memory
//! (perf, C16 L8: 9% of a DARTS step was mimalloc's memset for outputs the op then
//! overwrote). The op gets the elements as `MaybeUninit`, so no element can be read before
//! it is written; a GEMM with beta 0 writes through a raw pointer (matrixmultiply: "if beta
//! is zero, then C does not need to be initialized").

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
