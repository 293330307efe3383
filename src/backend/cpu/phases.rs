//! A plane's columns split into stride phases: row by row, columns `0, s, 2s, ..`, then
//! `1, 1 + s, ..`, up to phase `s - 1`. A strided op's tap reads (or writes) input columns
//! `c, c + s, c + 2s, ..`, which in the phased copy are one contiguous run (`Phases::at`), so
//! its loop vectorises where the strided one stays scalar. The strided depthwise data
//! gradient adds into its output this way (`dwconv.rs`); the register tiles' padded copy
//! (`tiles.rs`, which the depthwise forward and pooling read) splits the same way, with
//! padding around it.

use crate::backend::Element;

/// The phased layout of rows `w` columns wide at stride `stride`.
#[derive(Clone, Copy)]
pub(super) struct Phases {
    stride: usize,
    /// Columns per phase (the last ones of a phase may be unused: `w` need not divide).
    len: usize,
    /// Elements per phased row (`stride` phases).
    pub(super) row_len: usize,
}

impl Phases {
    pub(super) fn new(w: usize, stride: usize) -> Self {
        let len = w.div_ceil(stride);
        Phases {
            stride,
            len,
            row_len: stride * len,
        }
    }

    /// Where input column `col` lies within a phased row; columns `col + j * stride` follow
    /// it in order.
    #[inline(always)]
    pub(super) fn at(&self, col: usize) -> usize {
        (col % self.stride) * self.len + col / self.stride
    }

    /// A phased copy of `src`'s rows of `w` columns (unused slots zero).
    #[inline(always)]
    pub(super) fn split<T: Element>(&self, src: &[T], w: usize) -> Vec<T> {
        let mut out = vec![T::ZERO; src.len() / w.max(1) * self.row_len];
        for (row, sr) in out.chunks_exact_mut(self.row_len).zip(src.chunks_exact(w)) {
            if self.stride == 2 {
                // Pairs of columns: the compiler deinterleaves these with vector shuffles.
                let (even, odd) = row.split_at_mut(self.len);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(sr.chunks_exact(2)) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                if w % 2 == 1 {
                    even[self.len - 1] = sr[w - 1];
                }
                continue;
            }
            for (p, phase) in row.chunks_exact_mut(self.len).enumerate() {
                for (d, &v) in phase.iter_mut().zip(sr.iter().skip(p).step_by(self.stride)) {
                    *d = v;
                }
            }
        }
        out
    }

    /// `split`'s inverse: `dst`'s rows of `w` columns written back from the phased `src`.
    #[inline(always)]
    pub(super) fn merge<T: Element>(&self, src: &[T], dst: &mut [T], w: usize) {
        for (row, dr) in src.chunks_exact(self.row_len).zip(dst.chunks_exact_mut(w)) {
            if self.stride == 2 {
                let (even, odd) = row.split_at(self.len);
                for ((&e, &o), pair) in even.iter().zip(odd).zip(dr.chunks_exact_mut(2)) {
                    (pair[0], pair[1]) = (e, o);
                }
                if w % 2 == 1 {
                    dr[w - 1] = even[self.len - 1];
                }
                continue;
            }
            for (p, phase) in row.chunks_exact(self.len).enumerate() {
                for (d, &v) in dr.iter_mut().skip(p).step_by(self.stride).zip(phase) {
                    *d = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge_is_the_identity_and_at_finds_each_column() {
        for (w, s) in [(1, 1), (7, 2), (8, 2), (1, 2), (9, 3), (5, 7)] {
            let h = 3;
            let src: Vec<f32> = (0..h * w).map(|v| v as f32).collect();
            let ph = Phases::new(w, s);
            let split = ph.split(&src, w);
            assert_eq!(split.len(), h * ph.row_len);
            for r in 0..h {
                for c in 0..w {
                    assert_eq!(split[r * ph.row_len + ph.at(c)], src[r * w + c], "{w} {s}");
                }
            }
            let mut back = vec![-1.0; h * w];
            ph.merge(&split, &mut back, w);
            assert_eq!(back, src);
        }
    }
}
