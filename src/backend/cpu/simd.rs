//! Runtime choice of the vector width the CPU kernels' inner loops are compiled for, and the
//! lane-wise sums they share (`Lanes`, `sum_f64`).
//!
//! The crate is built for the x86-64 baseline (SSE2: four f32 lanes, no FMA) so one binary
//! runs on every node a Slurm job may land on. `wide(f)` runs `f` compiled a second time with
//! AVX2 and FMA enabled when the CPU has them (checked at run time, cached by std), which
//! doubles the lanes of every loop the compiler vectorises. Results do not change: LLVM
//! neither reorders float sums nor contracts `a * b + c` into an FMA without being told, so
//! both copies compute the same values in the same order.

/// Runs `f` compiled for AVX2 + FMA when the CPU has both, else for the baseline. The wider
/// copy covers only code inlined into it: pass `#[inline(always)] || ...` and mark what it
/// calls `#[inline(always)]` (a closure the compiler kept out of line ran at the baseline
/// width: perf showed the depthwise loops there until it was marked).
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features avx2 enables were just detected on this CPU.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// A dot product's running sum in eight lanes of `T` (so the loop vectorises) plus a scalar
/// for the tails, summed in f64 at the end. The order of the sums depends only on the
/// lengths added, so the result is deterministic.
pub(crate) struct Lanes<T> {
    acc: [T; 8],
    tail: T,
}

impl<T: crate::backend::Element> Lanes<T> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Lanes {
            acc: [T::ZERO; 8],
            tail: T::ZERO,
        }
    }
    /// Adds `sum_i a[i] * f(b[i])` (`f` maps the second operand as it is read, e.g. a fused
    /// ReLU).
    #[inline(always)]
    pub(crate) fn add_dot(&mut self, a: &[T], b: &[T], f: impl Fn(T) -> T) {
        let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
        for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
            self.tail += *x * f(*y);
        }
        for (x, y) in ac.zip(bc) {
            for j in 0..8 {
                self.acc[j] += x[j] * f(y[j]);
            }
        }
    }
    /// Adds one value (a strided row's sum).
    #[inline(always)]
    pub(crate) fn add(&mut self, v: T) {
        self.tail += v;
    }
    /// The lanes and the tail, summed in f64 in a fixed order.
    #[inline(always)]
    pub(crate) fn sum(&self) -> f64 {
        self.acc.iter().map(|v| v.to_f64()).sum::<f64>() + self.tail.to_f64()
    }
}

/// `sum_i f(a[i], b[i])` in eight f64 lanes (vectorised, a fixed order for a given length):
/// the statistics that must stay f64 whatever the element type (batch norm).
#[inline(always)]
pub(crate) fn sum_f64<T: crate::backend::Element>(
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> f64,
) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut tail = 0.0;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += f(*x, *y);
    }
    for (x, y) in ac.zip(bc) {
        for j in 0..8 {
            acc[j] += f(x[j], y[j]);
        }
    }
    acc.iter().sum::<f64>() + tail
}
