//! CPU max / average pooling and global average pooling, forward and backward, one channel
//! plane per rayon task. Max pooling's backward recomputes the arg-max from the input (first
//! maximum in window order, as PyTorch) instead of storing indices.

use super::par_planes;
use crate::backend::Element;
use crate::shape::{Nchw, Pool2dSpec, PoolKind};

/// The in-bounds window of output (oh, ow): rows ih0..ih1, columns iw0..iw1.
#[inline(always)]
fn window(oh: usize, ow: usize, xd: Nchw, spec: &Pool2dSpec) -> (usize, usize, usize, usize) {
    let h0 = (oh * spec.stride) as isize - spec.padding as isize;
    let w0 = (ow * spec.stride) as isize - spec.padding as isize;
    let ih0 = h0.max(0) as usize;
    let iw0 = w0.max(0) as usize;
    let ih1 = ((h0 + spec.kernel as isize) as usize).min(xd.h);
    let iw1 = ((w0 + spec.kernel as isize) as usize).min(xd.w);
    (ih0, ih1, iw0, iw1)
}

pub fn pool2d_fwd<T: Element>(
    kind: PoolKind,
    x: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
) -> Vec<T> {
    let mut y = vec![T::ZERO; yd.numel()];
    par_planes(&mut y, yd.plane(), |plane, yp| {
        let xp = &x[plane * xd.plane()..][..xd.plane()];
        for oh in 0..yd.h {
            for ow in 0..yd.w {
                let (ih0, ih1, iw0, iw1) = window(oh, ow, xd, spec);
                yp[oh * yd.w + ow] = match kind {
                    PoolKind::Max => {
                        let mut m = xp[ih0 * xd.w + iw0];
                        for ih in ih0..ih1 {
                            for iw in iw0..iw1 {
                                let v = xp[ih * xd.w + iw];
                                if v > m {
                                    m = v;
                                }
                            }
                        }
                        m
                    }
                    PoolKind::Avg => {
                        let mut s = T::ZERO;
                        for ih in ih0..ih1 {
                            for iw in iw0..iw1 {
                                s += xp[ih * xd.w + iw];
                            }
                        }
                        s / T::from_f64(((ih1 - ih0) * (iw1 - iw0)) as f64)
                    }
                };
            }
        }
    });
    y
}

pub fn pool2d_bwd<T: Element>(
    kind: PoolKind,
    x: &[T],
    dy: &[T],
    xd: Nchw,
    spec: &Pool2dSpec,
    yd: Nchw,
) -> Vec<T> {
    let mut dx = vec![T::ZERO; xd.numel()];
    par_planes(&mut dx, xd.plane(), |plane, dxp| {
        let dyp = &dy[plane * yd.plane()..][..yd.plane()];
        for oh in 0..yd.h {
            for ow in 0..yd.w {
                let (ih0, ih1, iw0, iw1) = window(oh, ow, xd, spec);
                let g = dyp[oh * yd.w + ow];
                match kind {
                    PoolKind::Max => {
                        let xp = &x[plane * xd.plane()..][..xd.plane()];
                        let mut best = ih0 * xd.w + iw0;
                        for ih in ih0..ih1 {
                            for iw in iw0..iw1 {
                                if xp[ih * xd.w + iw] > xp[best] {
                                    best = ih * xd.w + iw;
                                }
                            }
                        }
                        dxp[best] += g;
                    }
                    PoolKind::Avg => {
                        let share = g / T::from_f64(((ih1 - ih0) * (iw1 - iw0)) as f64);
                        for ih in ih0..ih1 {
                            for iw in iw0..iw1 {
                                dxp[ih * xd.w + iw] += share;
                            }
                        }
                    }
                }
            }
        }
    });
    dx
}

pub fn global_avg_pool_fwd<T: Element>(x: &[T], xd: Nchw) -> Vec<T> {
    let inv = T::from_f64(1.0 / xd.plane() as f64);
    x.chunks(xd.plane())
        .map(|p| {
            let mut s = T::ZERO;
            for &v in p {
                s += v;
            }
            s * inv
        })
        .collect()
}

pub fn global_avg_pool_bwd<T: Element>(dy: &[T], xd: Nchw) -> Vec<T> {
    let inv = T::from_f64(1.0 / xd.plane() as f64);
    let mut dx = vec![T::ZERO; xd.numel()];
    for (p, &g) in dx.chunks_mut(xd.plane()).zip(dy) {
        p.fill(g * inv);
    }
    dx
}
