//! Register tiles for ops that combine shifted runs of one plane (the depthwise forward and
//! stride-1 data gradient in `dwconv.rs`, the pooling forward in `pool.rs`; the weight
//! gradient in `dwconv_weight.rs` reads the same padded copy): the plane is copied once into
//! a padded buffer (`Padded`), then each R x N tile of the output keeps its running values
//! in registers while every tap's run is combined in (`Combine`: a weighted sum, a sum, a
//! maximum), where plane loops re-load and re-store the output row once per tap and clip
//! every tap at the plane's edges. Each output element still takes its taps in the order
//! given, starting from its value in the output, so the results are bit-identical to those
//! loops wherever the padding value leaves a combination unchanged (zero for the sums, minus
//! infinity for the maximum).

use super::conv::pre;
use crate::backend::Element;

/// A channel plane copied into a buffer padded with a given value (the fused ReLU applied
/// on the way), its columns split into `stride` phases, so that every tap reads one
/// contiguous run per output row with no bounds to clip: output (oh, ow) of the tap at
/// padded offset (row, col) reads padded row `oh * stride + row`, phase `col % stride`,
/// column `ow + col / stride`.
pub(super) struct Padded<T> {
    pub(super) buf: Vec<T>,
    /// Columns per phase.
    width: usize,
    /// Elements per padded row (`stride` phases).
    pub(super) row_len: usize,
    stride: usize,
    /// The source plane's rows and columns, and where it starts in the padded one.
    src: (usize, usize),
    at: (usize, usize),
}

impl<T: Element> Padded<T> {
    /// A padded buffer, all `fill`, for planes of h x w with `top` / `left` elements of
    /// padding before them, sized for an `out_h x out_w` output of taps reaching `reach`
    /// padded rows/columns past an output's first. `load` copies a plane in; a task reuses
    /// one buffer for all its planes, as `load` writes the same elements each time and
    /// leaves the padding as it is.
    #[inline(always)]
    pub(super) fn blank(
        fill: T,
        (h, w): (usize, usize),
        (top, left): (usize, usize),
        (out_h, out_w): (usize, usize),
        reach: usize,
        stride: usize,
    ) -> Self {
        // (An empty output never reaches here: its op has no planes to run.)
        let rows = (out_h.max(1) - 1) * stride + reach + 1;
        let width = ((out_w.max(1) - 1) * stride + reach) / stride + 1;
        let row_len = width * stride;
        Padded {
            buf: vec![fill; rows * row_len],
            width,
            row_len,
            stride,
            src: (h, w),
            at: (top, left),
        }
    }

    /// Copies plane `src` into the padded buffer (the fused ReLU applied on the way).
    #[inline(always)]
    pub(super) fn load<const RELU: bool>(&mut self, src: &[T]) {
        let ((h, w), (top, left)) = (self.src, self.at);
        let (width, row_len, stride) = (self.width, self.row_len, self.stride);
        let rows = self.buf.len() / row_len;
        for (ih, sr) in src.chunks_exact(w).take(h).enumerate() {
            let r = ih + top;
            if r >= rows {
                break;
            }
            let dst = &mut self.buf[r * row_len..][..row_len];
            if stride == 1 {
                let n = w.min(row_len.saturating_sub(left));
                for (d, &v) in dst[left.min(row_len)..][..n].iter_mut().zip(sr) {
                    *d = pre::<T, RELU>(v);
                }
            } else if stride == 2 {
                // Column pairs from an even padded column on: the compiler deinterleaves
                // them with vector shuffles (per element, the `%` and `/` kept it scalar).
                let (even, odd) = dst.split_at_mut(width);
                let skip = left % 2;
                if skip == 1 && left / 2 < width {
                    odd[left / 2] = pre::<T, RELU>(sr[0]);
                }
                let c0 = ((skip + left) / 2).min(width);
                let pairs = sr[skip.min(w)..].chunks_exact(2);
                if let [v] = pairs.remainder() {
                    if (w - 1 + left) / 2 < width {
                        even[(w - 1 + left) / 2] = pre::<T, RELU>(*v);
                    }
                }
                let run = even[c0..].iter_mut().zip(&mut odd[c0..]).zip(pairs);
                for ((e, o), p) in run {
                    (*e, *o) = (pre::<T, RELU>(p[0]), pre::<T, RELU>(p[1]));
                }
            } else {
                for (iw, &v) in sr.iter().enumerate() {
                    let pc = iw + left;
                    let (phase, col) = (pc % stride, pc / stride);
                    if col < width {
                        dst[phase * width + col] = pre::<T, RELU>(v);
                    }
                }
            }
        }
    }

    /// Where a tap at padded column offset `col` starts reading within a padded row.
    pub(super) fn start(&self, col: usize) -> usize {
        (col % self.stride) * self.width + col / self.stride
    }

    /// The tap at padded offset (`row`, `col`) with weight `w`.
    pub(super) fn tap(&self, w: T, row: usize, col: usize) -> PadTap<T> {
        PadTap {
            w,
            row,
            start: self.start(col),
        }
    }
}

/// A task's padded plane and taps on it, made for its first plane and reused for the rest
/// (`par_planes`'s scratch): the padding is written once, the taps' offsets found once.
pub(super) type TileScratch<T> = Option<(Padded<T>, Vec<PadTap<T>>)>;

/// One tap on a `Padded` plane: its weight, its padded row offset and where its run starts
/// within a padded row.
pub(super) struct PadTap<T> {
    /// The weight (set per plane where taps are reused across channels).
    pub(super) w: T,
    row: usize,
    start: usize,
}

/// Rows per register tile: with 16 columns, 4 rows are 8 AVX accumulators, enough
/// independent sums to cover the add latency.
const TILE_ROWS: usize = 4;

/// How a tile takes one tap's value `v` (weight `w`) into an output's running value `acc`.
pub(super) trait Combine<T> {
    fn step(acc: T, w: T, v: T) -> T;
}

/// `acc + w * v`: the convolutions (a product then a sum, as the plane loops round them).
pub(super) struct Weighted;

impl<T: Element> Combine<T> for Weighted {
    #[inline(always)]
    fn step(acc: T, w: T, v: T) -> T {
        acc + w * v
    }
}

/// `out` (out_h x out_w, rows `row_stride` apart) combined with every tap's run of `src`
/// (`C`), tile by tile. Each output element takes its taps in the order given, starting from
/// its value in `out`: the same values, in the same order, as tap-by-tap plane loops, but
/// kept in registers across taps.
#[inline(always)]
pub(super) fn tiled_plane<T: Element, C: Combine<T>>(
    src: &Padded<T>,
    taps: &[PadTap<T>],
    out: &mut [T],
    (out_h, out_w): (usize, usize),
    row_stride: usize,
) {
    let mut oh = 0;
    while oh + TILE_ROWS <= out_h {
        tiled_rows::<T, C, TILE_ROWS>(src, taps, out, (out_w, row_stride), oh);
        oh += TILE_ROWS;
    }
    for oh in oh..out_h {
        tiled_rows::<T, C, 1>(src, taps, out, (out_w, row_stride), oh);
    }
}

#[inline(always)]
fn tiled_rows<T: Element, C: Combine<T>, const R: usize>(
    src: &Padded<T>,
    taps: &[PadTap<T>],
    out: &mut [T],
    (out_w, row_stride): (usize, usize),
    oh: usize,
) {
    let mut ow = 0;
    while ow + 16 <= out_w {
        tile::<T, C, R, 16>(src, taps, out, row_stride, oh, ow);
        ow += 16;
    }
    if ow + 8 <= out_w {
        tile::<T, C, R, 8>(src, taps, out, row_stride, oh, ow);
        ow += 8;
    }
    if ow + 4 <= out_w {
        tile::<T, C, R, 4>(src, taps, out, row_stride, oh, ow);
        ow += 4;
    }
    for ow in ow..out_w {
        tile::<T, C, R, 1>(src, taps, out, row_stride, oh, ow);
    }
}

/// One R x N tile of the output, its sums held in registers across every tap.
#[inline(always)]
fn tile<T: Element, C: Combine<T>, const R: usize, const N: usize>(
    src: &Padded<T>,
    taps: &[PadTap<T>],
    out: &mut [T],
    row_stride: usize,
    oh: usize,
    ow: usize,
) {
    let mut acc = [[T::ZERO; N]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&out[(oh + r) * row_stride + ow..][..N]);
    }
    let s = src.stride;
    for t in taps {
        for (r, a) in acc.iter_mut().enumerate() {
            let run = &src.buf[((oh + r) * s + t.row) * src.row_len + t.start + ow..][..N];
            for (av, &v) in a.iter_mut().zip(run) {
                *av = C::step(*av, t.w, v);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        out[(oh + r) * row_stride + ow..][..N].copy_from_slice(a);
    }
}
