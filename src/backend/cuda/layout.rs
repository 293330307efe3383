//! Launchers for kernels/layout.cu: channel concat / split and the shift-crop of
//! FactorizedReduce.

use super::kernels;
use super::{cfg1d, expect_len, int, Cuda, CudaBuf};
use crate::backend::LayoutOps;
use crate::error::{Error, Result};
use crate::shape::Nchw;

pub(super) fn concat_channels(d: &Cuda, parts: &[(&CudaBuf, Nchw)]) -> Result<CudaBuf> {
    let first = parts
        .first()
        .ok_or_else(|| Error::shape("concat_channels", "no inputs"))?
        .1;
    for (buf, pd) in parts {
        if (pd.n, pd.h, pd.w) != (first.n, first.h, first.w) {
            return Err(Error::shape(
                "concat_channels",
                format!(
                    "{} and {} differ outside the channel axis",
                    first.shape(),
                    pd.shape()
                ),
            ));
        }
        expect_len("concat_channels", "input", buf, pd.numel())?;
    }
    let total_c: usize = parts.iter().map(|p| p.1.c).sum();
    let mut y = d.alloc(first.n * total_c * first.plane())?;
    let (n, ct, plane) = (int(first.n)?, int(total_c)?, int(first.plane())?);
    let mut off = 0usize;
    for (buf, pd) in parts {
        if pd.numel() > 0 {
            let (cp, coff) = (int(pd.c)?, int(off)?);
            // SAFETY: part holds n*cp*plane (expect_len), y n*ct*plane (alloc) and
            // coff + cp <= ct (the offsets add up the parts' channels).
            unsafe {
                kernels::concat_channels_f32(
                    d.drv(),
                    cfg1d(pd.numel()),
                    n,
                    cp,
                    ct,
                    coff,
                    plane,
                    buf.data.dev(),
                    y.data.dev_mut(),
                )
            }?;
        }
        off += pd.c;
    }
    Ok(y)
}

pub(super) fn split_channels(
    d: &Cuda,
    dy: &CudaBuf,
    dd: Nchw,
    channels: &[usize],
) -> Result<Vec<CudaBuf>> {
    expect_len("split_channels", "input", dy, dd.numel())?;
    if channels.iter().sum::<usize>() != dd.c {
        return Err(Error::shape(
            "split_channels",
            format!("parts of {channels:?} channels do not add up to {}", dd.c),
        ));
    }
    let (n, ct, plane) = (int(dd.n)?, int(dd.c)?, int(dd.plane())?);
    let mut out = Vec::with_capacity(channels.len());
    let mut off = 0usize;
    for &c in channels {
        let len = dd.n * c * dd.plane();
        let mut part = d.alloc(len)?;
        if len > 0 {
            let (cp, coff) = (int(c)?, int(off)?);
            // SAFETY: dy holds n*ct*plane, part n*cp*plane (alloc); coff + cp <= ct (the
            // channels add up to ct, checked).
            unsafe {
                kernels::split_channels_f32(
                    d.drv(),
                    cfg1d(len),
                    n,
                    cp,
                    ct,
                    coff,
                    plane,
                    dy.data.dev(),
                    part.data.dev_mut(),
                )
            }?;
        }
        off += c;
        out.push(part);
    }
    Ok(out)
}

pub(super) fn shift_crop_fwd(d: &Cuda, x: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
    expect_len("shift_crop", "input", x, xd.numel())?;
    if xd.h < 2 || xd.w < 2 {
        return Err(Error::shape(
            "shift_crop",
            format!("input {} needs H and W of at least 2", xd.shape()),
        ));
    }
    let len = xd.n * xd.c * (xd.h - 1) * (xd.w - 1);
    let mut y = d.alloc(len)?;
    let (planes, h, w) = (int(xd.n * xd.c)?, int(xd.h)?, int(xd.w)?);
    // SAFETY: x holds planes*h*w (expect_len), y planes*(h-1)*(w-1) (alloc).
    unsafe {
        kernels::shift_crop_fwd_f32(
            d.drv(),
            cfg1d(len),
            planes,
            h,
            w,
            x.data.dev(),
            y.data.dev_mut(),
        )
    }?;
    Ok(y)
}

pub(super) fn shift_crop_bwd(d: &Cuda, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
    let (ho, wo) = (xd.h.saturating_sub(1), xd.w.saturating_sub(1));
    expect_len(
        "shift_crop_bwd",
        "output gradient",
        dy,
        xd.n * xd.c * ho * wo,
    )?;
    let mut dx = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (planes, h, w) = (int(xd.n * xd.c)?, int(xd.h)?, int(xd.w)?);
        // SAFETY: dy holds planes*(h-1)*(w-1) (expect_len), dx planes*h*w (alloc).
        unsafe {
            kernels::shift_crop_bwd_f32(
                d.drv(),
                cfg1d(xd.numel()),
                planes,
                h,
                w,
                dy.data.dev(),
                dx.data.dev_mut(),
            )
        }?;
    }
    Ok(dx)
}

impl LayoutOps for Cuda {
    fn concat_channels(&self, parts: &[(&CudaBuf, Nchw)]) -> Result<CudaBuf> {
        concat_channels(self, parts)
    }
    fn split_channels(&self, dy: &CudaBuf, dd: Nchw, channels: &[usize]) -> Result<Vec<CudaBuf>> {
        split_channels(self, dy, dd, channels)
    }
    fn shift_crop_fwd(&self, x: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        shift_crop_fwd(self, x, xd)
    }
    fn shift_crop_bwd(&self, dy: &CudaBuf, xd: Nchw) -> Result<CudaBuf> {
        shift_crop_bwd(self, dy, xd)
    }
}
