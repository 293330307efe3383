//! The CPU's channel concatenation, splitting and shift-crop (`LayoutOps`): the reference
//! the CUDA kernels of `kernels/layout.cu` are checked against.

use super::Cpu;
use crate::backend::{checks, Element, LayoutOps};
use crate::error::Result;
use crate::shape::Nchw;

impl<T: Element> LayoutOps for Cpu<T> {
    fn concat_channels(&self, parts: &[(&Vec<T>, Nchw)]) -> Result<Vec<T>> {
        let yd = checks::concat_channels(self, parts)?;
        let plane = yd.plane();
        let mut y = Vec::with_capacity(yd.numel());
        for n in 0..yd.n {
            for (buf, d) in parts {
                y.extend_from_slice(&buf[n * d.c * plane..(n + 1) * d.c * plane]);
            }
        }
        Ok(y)
    }
    fn split_channels(&self, dy: &Vec<T>, dd: Nchw, channels: &[usize]) -> Result<Vec<Vec<T>>> {
        checks::split_channels(self, dy, dd, channels)?;
        let plane = dd.plane();
        let mut out: Vec<Vec<T>> = channels
            .iter()
            .map(|&c| Vec::with_capacity(dd.n * c * plane))
            .collect();
        for n in 0..dd.n {
            let mut off = n * dd.c * plane;
            for (o, &c) in out.iter_mut().zip(channels) {
                o.extend_from_slice(&dy[off..off + c * plane]);
                off += c * plane;
            }
        }
        Ok(out)
    }
    fn shift_crop_fwd(&self, x: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        let yd = checks::shift_crop_fwd(self, x, xd)?;
        let mut y = Vec::with_capacity(yd.numel());
        for p in x.chunks(xd.plane()) {
            for r in 1..xd.h {
                y.extend_from_slice(&p[r * xd.w + 1..(r + 1) * xd.w]);
            }
        }
        Ok(y)
    }
    fn shift_crop_bwd(&self, dy: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        checks::shift_crop_bwd(self, dy, xd)?;
        let (h, w) = (xd.h.saturating_sub(1), xd.w.saturating_sub(1));
        let mut dx = vec![T::ZERO; xd.numel()];
        for (p, g) in dx.chunks_mut(xd.plane()).zip(dy.chunks(h * w)) {
            for r in 0..h {
                p[(r + 1) * xd.w + 1..(r + 2) * xd.w].copy_from_slice(&g[r * w..(r + 1) * w]);
            }
        }
        Ok(dx)
    }
}
