//! CPU twin of the fused DARTS MixedOp: `y = sum_k softmax(alpha)_k x_k` and its one-pass
//! backward (every `dx_k` and `dalpha`). An absent input (`None`, the `none` op) is all zero:
//! it keeps its softmax weight but is skipped in every sum and its `<dy, x_k>` is 0. Dot
//! products are accumulated in f64 over fixed chunks summed in order, so the result does not
//! depend on the thread count.

use super::fresh::par_planes_zeroed;
use super::simd::{wide, Lanes};
use super::{team, zip_map, Cpu};
use crate::backend::{checks, softmax, Element, MixedOpOps};
use crate::error::Result;

const CHUNK: usize = 1 << 14;

pub fn mixed_op_fwd<T: Element>(xs: &[Option<&[T]>], alpha: &[T], len: usize) -> Vec<T> {
    let w: Vec<T> = softmax(&alpha.iter().map(|a| a.to_f64()).collect::<Vec<_>>())
        .into_iter()
        .map(T::from_f64)
        .collect();
    par_planes_zeroed(
        len,
        CHUNK,
        || (),
        |_, ci, yc| {
            let base = ci * CHUNK;
            let n = yc.len();
            for (x, &wk) in xs.iter().zip(&w) {
                let Some(x) = x else { continue };
                for (yv, &xv) in yc.iter_mut().zip(&x[base..base + n]) {
                    *yv += wk * xv;
                }
            }
        },
    )
}

/// `<a, b>` over one chunk, in lanes (`Lanes`: vectorised, summed in f64).
fn dot_lanes<T: Element>(a: &[T], b: &[T]) -> f64 {
    let mut lanes = Lanes::new();
    wide(
        #[inline(always)]
        || lanes.add_dot(a, b, |v| v),
    );
    lanes.sum()
}

/// `mixed_op_bwd`, with a wanted `dx_k` added into `acc[k]` (`acc[k] += w_k dy`, returned as
/// None) where one is given. Without `want_dalpha` the dots are skipped and the returned
/// `dalpha` is empty.
#[allow(clippy::type_complexity)]
pub fn mixed_op_bwd<T: Element>(
    dy: &[T],
    xs: &[Option<&[T]>],
    alpha: &[T],
    len: usize,
    need_dx: &[bool],
    acc: &mut [Option<&mut [T]>],
    want_dalpha: bool,
) -> (Vec<Option<Vec<T>>>, Vec<T>) {
    let w = softmax(&alpha.iter().map(|a| a.to_f64()).collect::<Vec<_>>());
    let k = xs.len();
    let dalpha = if want_dalpha {
        alpha_grad(dy, xs, &w, len)
    } else {
        Vec::new()
    };
    let dxs = (0..k)
        .map(|i| {
            let wanted = xs[i].is_some() && need_dx.get(i).copied().unwrap_or(false);
            let wk = T::from_f64(w[i]);
            match acc.get_mut(i).and_then(|a| a.as_deref_mut()) {
                Some(a) if wanted => {
                    team::chunks_mut(a, CHUNK, |ci, a| {
                        let g = &dy[ci * CHUNK..];
                        a.iter_mut().zip(g).for_each(|(a, &g)| *a += wk * g)
                    });
                    None
                }
                _ => wanted.then(|| zip_map(dy, dy, |g, _| wk * g)),
            }
        })
        .collect();
    (dxs, dalpha)
}

/// `dalpha_k = w_k (<dy, x_k> - sum_j w_j <dy, x_j>)`.
fn alpha_grad<T: Element>(dy: &[T], xs: &[Option<&[T]>], w: &[f64], len: usize) -> Vec<T> {
    // <dy, x_k> for every k: per chunk (read while dy's chunk is in cache), then the chunk
    // partials summed in order.
    let partials: Vec<Vec<f64>> = team::map(len.div_ceil(CHUNK), |ci| {
        let r = ci * CHUNK..((ci + 1) * CHUNK).min(len);
        xs.iter()
            .map(|x| x.map_or(0.0, |x| dot_lanes(&dy[r.clone()], &x[r.clone()])))
            .collect()
    });
    let mut dots = vec![0.0; xs.len()];
    for p in &partials {
        for (d, v) in dots.iter_mut().zip(p) {
            *d += v;
        }
    }
    let mean: f64 = w.iter().zip(&dots).map(|(a, b)| a * b).sum();
    w.iter()
        .zip(&dots)
        .map(|(&wk, &d)| T::from_f64(wk * (d - mean)))
        .collect()
}

/// The accumulators as slices (`None` stays absent).
fn slices_mut<'a, T>(acc: &'a mut [Option<&mut Vec<T>>]) -> Vec<Option<&'a mut [T]>> {
    acc.iter_mut()
        .map(|a| a.as_deref_mut().map(Vec::as_mut_slice))
        .collect()
}

/// The inputs as slices (`None` stays absent).
fn slices<'a, T>(xs: &[Option<&'a Vec<T>>]) -> Vec<Option<&'a [T]>> {
    xs.iter().map(|x| x.map(Vec::as_slice)).collect()
}

impl<T: Element> MixedOpOps for Cpu<T> {
    fn mixed_op_fwd(&self, xs: &[Option<&Vec<T>>], alpha: &Vec<T>, len: usize) -> Result<Vec<T>> {
        checks::mixed_op_fwd(self, xs, alpha, len)?;
        Ok(mixed_op_fwd(&slices(xs), alpha, len))
    }
    #[allow(clippy::type_complexity)]
    fn mixed_op_bwd(
        &self,
        dy: &Vec<T>,
        xs: &[Option<&Vec<T>>],
        alpha: &Vec<T>,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<Vec<T>>>, Vec<T>)> {
        checks::mixed_op_bwd(self, dy, xs, alpha, len)?;
        Ok(mixed_op_bwd(
            dy,
            &slices(xs),
            alpha,
            len,
            need_dx,
            &mut [],
            true,
        ))
    }
    #[allow(clippy::type_complexity)]
    fn mixed_op_bwd_into(
        &self,
        dy: &Vec<T>,
        xs: &[Option<&Vec<T>>],
        alpha: &Vec<T>,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut Vec<T>>],
    ) -> Result<(Vec<Option<Vec<T>>>, Vec<T>)> {
        checks::mixed_op_bwd_into(self, dy, xs, alpha, len, acc)?;
        let mut into = slices_mut(acc);
        Ok(mixed_op_bwd(
            dy,
            &slices(xs),
            alpha,
            len,
            need_dx,
            &mut into,
            true,
        ))
    }
    fn mixed_op_bwd_dx(
        &self,
        dy: &Vec<T>,
        xs: &[Option<&Vec<T>>],
        alpha: &Vec<T>,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut Vec<T>>],
    ) -> Result<Vec<Option<Vec<T>>>> {
        checks::mixed_op_bwd_into(self, dy, xs, alpha, len, acc)?;
        let mut into = slices_mut(acc);
        let (dxs, _) = mixed_op_bwd(dy, &slices(xs), alpha, len, need_dx, &mut into, false);
        Ok(dxs)
    }
}
