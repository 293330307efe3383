//! Launchers for kernels/layout.cu: channel concat / split and the shift-crop of
//! FactorizedReduce.

use super::kernels;
use super::{cfg1d, int, Cuda, CudaBuf};
use crate::backend::{checks, LayoutOps};
use crate::error::Result;
use crate::shape::Nchw;

pub(super) fn concat_channels(d: &Cuda, parts: &[(&CudaBuf, Nchw)]) -> Result<CudaBuf> {
    let yd = checks::concat_channels(d, parts)?;
    let mut y = d.alloc(yd.numel())?;
    let (n, ct, plane) = (int(yd.n)?, int(yd.c)?, int(yd.plane())?);
    let mut off = 0usize;
    for (buf, pd) in parts {
        if pd.numel() > 0 {
            let (cp, coff) = (int(pd.c)?, int(off)?);
            // SAFETY: part holds n*cp*plane (checked), y n*ct*plane (alloc) and
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
    checks::split_channels(d, dy, dd, channels)?;
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
    let len = checks::shift_crop_fwd(d, x, xd)?.numel();
    let mut y = d.alloc(len)?;
    let (planes, h, w) = (int(xd.n * xd.c)?, int(xd.h)?, int(xd.w)?);
    // SAFETY: x holds planes*h*w (checked), y planes*(h-1)*(w-1) (alloc).
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
    checks::shift_crop_bwd(d, dy, xd)?;
    let mut dx = d.alloc(xd.numel())?;
    if xd.numel() > 0 {
        let (planes, h, w) = (int(xd.n * xd.c)?, int(xd.h)?, int(xd.w)?);
        // SAFETY: dy holds planes*(h-1)*(w-1) (checked), dx planes*h*w (alloc).
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
