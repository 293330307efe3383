//! CPU twin of the fused DARTS MixedOp: `y = sum_k softmax(alpha)_k x_k` and its one-pass
//! backward (every `dx_k` and `dalpha`). An absent input (`None`, the `none` op) is all zero:
//! it keeps its softmax weight but is skipped in every sum and its `<dy, x_k>` is 0. Dot
//! products are accumulated in f64 over fixed chunks summed in order, so the result does not
//! depend on the thread count.

use super::fresh::par_planes_zeroed;
use super::simd::{wide, Lanes};
use super::team::{self, Parts};
use super::Cpu;
use crate::backend::{checks, softmax, Element, MixedOpOps};
use crate::error::Result;
use std::mem::MaybeUninit;

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
    let wanted = |i: usize| xs[i].is_some() && need_dx.get(i).copied().unwrap_or(false);
    // A wanted dx_k without an accumulator is a new vector, every element written below.
    let mut fresh: Vec<Option<Vec<T>>> = (0..xs.len())
        .map(|i| {
            let has_acc = matches!(acc.get(i), Some(Some(_)));
            (wanted(i) && !has_acc).then(|| Vec::with_capacity(len))
        })
        .collect();
    let targets: Vec<(Target<'_, T>, T)> = acc
        .iter_mut()
        .map(Some)
        .chain(std::iter::repeat_with(|| None))
        .zip(fresh.iter_mut())
        .enumerate()
        .filter(|&(i, _)| wanted(i))
        .filter_map(|(i, (a, f))| {
            let t = match (a.and_then(|a| a.as_deref_mut()), f) {
                (Some(a), _) => Target::Add(Parts::new(a)),
                (None, Some(f)) => Target::Write(Parts::new(&mut f.spare_capacity_mut()[..len])),
                (None, None) => return None,
            };
            Some((t, T::from_f64(w[i])))
        })
        .collect();
    // One loop over dy's chunks: every dx_k's chunk and (for dalpha) every <dy, x_k>'s
    // partial, read while dy's chunk is in cache; the partials then summed in chunk order.
    let partials: Vec<Vec<f64>> = team::map(len.div_ceil(CHUNK), |ci| {
        let r = team::chunk_range(ci, CHUNK, len);
        let g = &dy[r.clone()];
        for (target, wk) in &targets {
            let wk = *wk;
            // SAFETY: task ci takes chunk ci of each output, disjoint from other tasks'.
            match target {
                Target::Add(p) => {
                    let a = unsafe { p.part(r.clone()) };
                    a.iter_mut().zip(g).for_each(|(a, &g)| *a += wk * g);
                }
                Target::Write(p) => {
                    let d = unsafe { p.part(r.clone()) };
                    d.iter_mut().zip(g).for_each(|(d, &g)| {
                        d.write(wk * g);
                    });
                }
            }
        }
        if !want_dalpha {
            return Vec::new();
        }
        xs.iter()
            .map(|x| x.map_or(0.0, |x| dot_lanes(g, &x[r.clone()])))
            .collect()
    });
    drop(targets);
    for v in fresh.iter_mut().flatten() {
        // SAFETY: the loop above wrote every element of each new dx_k.
        unsafe { v.set_len(len) };
    }
    let dalpha = if want_dalpha {
        alpha_grad(&partials, &w)
    } else {
        Vec::new()
    };
    (fresh, dalpha)
}

/// Where the backward writes a wanted `dx_k`: added into an accumulator, or into a new
/// vector.
enum Target<'a, T> {
    Add(Parts<'a, T>),
    Write(Parts<'a, MaybeUninit<T>>),
}

/// `dalpha_k = w_k (<dy, x_k> - sum_j w_j <dy, x_j>)`, from the dots' per-chunk partials
/// (summed in chunk order).
fn alpha_grad<T: Element>(partials: &[Vec<f64>], w: &[f64]) -> Vec<T> {
    let mut dots = vec![0.0; w.len()];
    for p in partials {
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
