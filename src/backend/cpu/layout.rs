//! The CPU's channel concatenation, splitting and shift-crop (`LayoutOps`): the reference the CUDA kernels of `kernels/layout.cu` are
//! checked against.

use super::{expect_len, Cpu};
use crate::backend::{Element, LayoutOps};
use crate::error::Error;
use crate::error::Result;
use crate::shape::Nchw;

impl<T: Element> LayoutOps for Cpu<T> {
    fn concat_channels(&self, parts: &[(&Vec<T>, Nchw)]) -> Result<Vec<T>> {
        let first = parts
            .first()
            .ok_or_else(|| Error::shape("concat_channels", "no inputs"))?
            .1;
        for (buf, d) in parts {
            if (d.n, d.h, d.w) != (first.n, first.h, first.w) {
                return Err(Error::shape(
                    "concat_channels",
                    format!(
                        "{} and {} differ outside the channel axis",
                        first.shape(),
                        d.shape()
                    ),
                ));
            }
            expect_len("concat_channels", "input", buf, d.numel())?;
        }
        let plane = first.plane();
        let total_c: usize = parts.iter().map(|p| p.1.c).sum();
        let mut y = Vec::with_capacity(first.n * total_c * plane);
        for n in 0..first.n {
            for (buf, d) in parts {
                y.extend_from_slice(&buf[n * d.c * plane..(n + 1) * d.c * plane]);
            }
        }
        Ok(y)
    }
    fn split_channels(&self, dy: &Vec<T>, dd: Nchw, channels: &[usize]) -> Result<Vec<Vec<T>>> {
        expect_len("split_channels", "input", dy, dd.numel())?;
        if channels.iter().sum::<usize>() != dd.c {
            return Err(Error::shape(
                "split_channels",
                format!("parts of {channels:?} channels do not add up to {}", dd.c),
            ));
        }
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
        expect_len("shift_crop", "input", x, xd.numel())?;
        if xd.h < 2 || xd.w < 2 {
            return Err(Error::shape(
                "shift_crop",
                format!("input {} needs H and W of at least 2", xd.shape()),
            ));
        }
        let (h, w) = (xd.h - 1, xd.w - 1);
        let mut y = Vec::with_capacity(xd.n * xd.c * h * w);
        for p in x.chunks(xd.plane()) {
            for r in 1..xd.h {
                y.extend_from_slice(&p[r * xd.w + 1..(r + 1) * xd.w]);
            }
        }
        Ok(y)
    }
    fn shift_crop_bwd(&self, dy: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        let (h, w) = (xd.h.saturating_sub(1), xd.w.saturating_sub(1));
        expect_len("shift_crop_bwd", "output gradient", dy, xd.n * xd.c * h * w)?;
        let mut dx = vec![T::ZERO; xd.numel()];
        for (p, g) in dx.chunks_mut(xd.plane()).zip(dy.chunks(h * w)) {
            for r in 0..h {
                p[(r + 1) * xd.w + 1..(r + 2) * xd.w].copy_from_slice(&g[r * w..(r + 1) * w]);
            }
        }
        Ok(dx)
    }
}
