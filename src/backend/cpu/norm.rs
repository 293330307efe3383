//! CPU batch norm over (N, H, W) per channel: training forward (batch statistics, running
//! update with PyTorch's unbiased variance), eval forward, and backward. Statistics are
//! accumulated in f64 whatever the element type (in eight lanes, so the sums vectorise), one
//! channel per task; the per-element loops are compiled for AVX2 where the CPU has it.

use super::fresh::written;
use super::simd::{sum_f64, wide};
use super::{par_planes, team, Cpu};
use crate::backend::{checks, BatchNormSaved, Element};
use crate::backend::{NormOps, RunningStats};
use crate::error::Result;
use crate::shape::Nchw;
use std::mem::MaybeUninit;

/// Visits the values of channel `c` plane by plane.
#[inline(always)]
fn channel_planes<T>(x: &[T], xd: Nchw, c: usize) -> impl Iterator<Item = &[T]> {
    (0..xd.n).map(move |n| &x[(n * xd.c + c) * xd.plane()..][..xd.plane()])
}

/// Per-channel (mean, biased variance) in f64, two-pass for accuracy.
pub fn channel_stats<T: Element>(x: &[T], xd: Nchw) -> Vec<(f64, f64)> {
    let count = (xd.n * xd.plane()) as f64;
    team::map(xd.c, |c| {
        wide(
            #[inline(always)]
            || {
                let mut s = 0.0;
                for p in channel_planes(x, xd, c) {
                    s += sum_f64(p, p, |v, _| v.to_f64());
                }
                let mean = s / count;
                let mut q = 0.0;
                for p in channel_planes(x, xd, c) {
                    q += sum_f64(p, p, |v, _| (v.to_f64() - mean) * (v.to_f64() - mean));
                }
                (mean, q / count)
            },
        )
    })
}

/// `y = (x - mean) * invstd * gamma + beta`, channel by channel (the twin of
/// `batch_norm_apply_f32`, which gets the per-channel scale and shift precomputed).
pub fn batch_norm_apply<T: Element>(
    x: &[T],
    xd: Nchw,
    mean: &[f64],
    invstd: &[f64],
    affine: Option<(&[T], &[T])>,
) -> Vec<T> {
    let plane_apply = |_: &mut (), plane: usize, yp: &mut [MaybeUninit<T>]| {
        let c = plane % xd.c;
        let (g, b) = affine.map_or((1.0, 0.0), |(g, b)| (g[c].to_f64(), b[c].to_f64()));
        let a = T::from_f64(invstd[c] * g);
        let shift = T::from_f64(b - mean[c] * invstd[c] * g);
        wide(
            #[inline(always)]
            || {
                for (yv, &xv) in yp.iter_mut().zip(&x[plane * xd.plane()..][..xd.plane()]) {
                    yv.write(xv * a + shift);
                }
            },
        )
    };
    // SAFETY: the planes cover y, and every element of a plane is written.
    unsafe {
        written(xd.numel(), |y| {
            par_planes(y, xd.plane(), || (), plane_apply)
        })
    }
}

pub fn batch_norm_train_fwd<T: Element>(
    x: &[T],
    xd: Nchw,
    affine: Option<(&[T], &[T])>,
    running: Option<(&mut [T], &mut [T], f64)>,
    eps: f64,
) -> (Vec<T>, BatchNormSaved<Vec<T>>) {
    let stats = channel_stats(x, xd);
    let mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
    let invstd: Vec<f64> = stats.iter().map(|s| 1.0 / (s.1 + eps).sqrt()).collect();
    if let Some((rm, rv, momentum)) = running {
        let count = (xd.n * xd.plane()) as f64;
        let unbias = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        for (c, &(m, v)) in stats.iter().enumerate() {
            rm[c] = T::from_f64((1.0 - momentum) * rm[c].to_f64() + momentum * m);
            rv[c] = T::from_f64((1.0 - momentum) * rv[c].to_f64() + momentum * v * unbias);
        }
    }
    let y = batch_norm_apply(x, xd, &mean, &invstd, affine);
    let saved = BatchNormSaved {
        mean: mean.iter().map(|&v| T::from_f64(v)).collect(),
        invstd: invstd.iter().map(|&v| T::from_f64(v)).collect(),
    };
    (y, saved)
}

pub fn batch_norm_eval_fwd<T: Element>(
    x: &[T],
    xd: Nchw,
    affine: Option<(&[T], &[T])>,
    rm: &[T],
    rv: &[T],
    eps: f64,
) -> Vec<T> {
    let mean: Vec<f64> = rm.iter().map(|v| v.to_f64()).collect();
    let invstd: Vec<f64> = rv.iter().map(|v| 1.0 / (v.to_f64() + eps).sqrt()).collect();
    batch_norm_apply(x, xd, &mean, &invstd, affine)
}

/// dx = gamma * invstd / M * (M dy - sum(dy) - xhat * sum(dy * xhat)); dgamma = sum(dy * xhat);
/// dbeta = sum(dy), with M = N*H*W and xhat the normalised input.
#[allow(clippy::type_complexity)]
pub fn batch_norm_bwd<T: Element>(
    x: &[T],
    dy: &[T],
    xd: Nchw,
    gamma: Option<&[T]>,
    saved: &BatchNormSaved<Vec<T>>,
) -> (Vec<T>, Option<(Vec<T>, Vec<T>)>) {
    let count = (xd.n * xd.plane()) as f64;
    // Per channel: (sum dy, sum dy * xhat).
    let sums: Vec<(f64, f64)> = team::map(xd.c, |c| {
        let (m, is) = (saved.mean[c].to_f64(), saved.invstd[c].to_f64());
        let (mut sdy, mut sdyx) = (0.0, 0.0);
        wide(
            #[inline(always)]
            || {
                for (xp, dyp) in channel_planes(x, xd, c).zip(channel_planes(dy, xd, c)) {
                    sdy += sum_f64(dyp, dyp, |g, _| g.to_f64());
                    sdyx += sum_f64(xp, dyp, |xv, g| g.to_f64() * (xv.to_f64() - m) * is);
                }
            },
        );
        (sdy, sdyx)
    });
    let plane_grad = |_: &mut (), plane: usize, dxp: &mut [MaybeUninit<T>]| {
        let c = plane % xd.c;
        let (m, is) = (saved.mean[c].to_f64(), saved.invstd[c].to_f64());
        let g = gamma.map_or(1.0, |g| g[c].to_f64());
        let (sdy, sdyx) = sums[c];
        let k = g * is;
        let mean_dy = sdy / count;
        let mean_dyx = sdyx / count;
        let xp = &x[plane * xd.plane()..][..xd.plane()];
        let dyp = &dy[plane * xd.plane()..][..xd.plane()];
        wide(
            #[inline(always)]
            || {
                for ((d, &xv), &gy) in dxp.iter_mut().zip(xp).zip(dyp) {
                    let xhat = (xv.to_f64() - m) * is;
                    d.write(T::from_f64(k * (gy.to_f64() - mean_dy - xhat * mean_dyx)));
                }
            },
        )
    };
    // SAFETY: the planes cover dx, and every element of a plane is written.
    let dx = unsafe {
        written(xd.numel(), |dx| {
            par_planes(dx, xd.plane(), || (), plane_grad)
        })
    };
    let param_grads = gamma.map(|_| {
        let dgamma = sums.iter().map(|s| T::from_f64(s.1)).collect();
        let dbeta = sums.iter().map(|s| T::from_f64(s.0)).collect();
        (dgamma, dbeta)
    });
    (dx, param_grads)
}

impl<T: Element> NormOps for Cpu<T> {
    fn batch_norm_train_fwd(
        &self,
        x: &Vec<T>,
        xd: Nchw,
        affine: Option<(&Vec<T>, &Vec<T>)>,
        running: Option<RunningStats<'_, Vec<T>>>,
        eps: f64,
    ) -> Result<(Vec<T>, BatchNormSaved<Vec<T>>)> {
        checks::batch_norm_train_fwd(self, x, xd, affine, running.as_ref())?;
        let running = running.map(|r| (r.mean.as_mut_slice(), r.var.as_mut_slice(), r.momentum));
        Ok(batch_norm_train_fwd(
            x,
            xd,
            affine.map(|(g, b)| (g.as_slice(), b.as_slice())),
            running,
            eps,
        ))
    }
    fn batch_norm_eval_fwd(
        &self,
        x: &Vec<T>,
        xd: Nchw,
        affine: Option<(&Vec<T>, &Vec<T>)>,
        rm: &Vec<T>,
        rv: &Vec<T>,
        eps: f64,
    ) -> Result<Vec<T>> {
        checks::batch_norm_eval_fwd(self, x, xd, affine, rm, rv)?;
        Ok(batch_norm_eval_fwd(
            x,
            xd,
            affine.map(|(g, b)| (g.as_slice(), b.as_slice())),
            rm,
            rv,
            eps,
        ))
    }
    #[allow(clippy::type_complexity)]
    fn batch_norm_bwd(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        gamma: Option<&Vec<T>>,
        saved: &BatchNormSaved<Vec<T>>,
    ) -> Result<(Vec<T>, Option<(Vec<T>, Vec<T>)>)> {
        checks::batch_norm_bwd(self, x, dy, xd, gamma, saved)?;
        Ok(batch_norm_bwd(
            x,
            dy,
            xd,
            gamma.map(|g| g.as_slice()),
            saved,
        ))
    }
}
