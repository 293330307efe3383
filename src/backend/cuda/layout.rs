//! Launchers for kernels/layout.cu: channel concat / split and the shift-crop of
//! FactorizedReduce.

use super::{cfg1d, expect_len, int, CuResult, Cuda, CudaBuf};
use crate::error::{Error, Result};
use crate::shape::Nchw;
use cudarc::driver::PushKernelArg;

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
            unsafe {
                d.stream()
                    .launch_builder(d.func("concat_channels_f32")?)
                    .arg(&n)
                    .arg(&cp)
                    .arg(&ct)
                    .arg(&coff)
                    .arg(&plane)
                    .arg(&buf.data)
                    .arg(&mut y.data)
                    .launch(cfg1d(pd.numel()))
            }
            .cu("concat_channels_f32")?;
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
            unsafe {
                d.stream()
                    .launch_builder(d.func("split_channels_f32")?)
                    .arg(&n)
                    .arg(&cp)
                    .arg(&ct)
                    .arg(&coff)
                    .arg(&plane)
                    .arg(&dy.data)
                    .arg(&mut part.data)
                    .launch(cfg1d(len))
            }
            .cu("split_channels_f32")?;
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
    unsafe {
        d.stream()
            .launch_builder(d.func("shift_crop_fwd_f32")?)
            .arg(&planes)
            .arg(&h)
            .arg(&w)
            .arg(&x.data)
            .arg(&mut y.data)
            .launch(cfg1d(len))
    }
    .cu("shift_crop_fwd_f32")?;
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
        unsafe {
            d.stream()
                .launch_builder(d.func("shift_crop_bwd_f32")?)
                .arg(&planes)
                .arg(&h)
                .arg(&w)
                .arg(&dy.data)
                .arg(&mut dx.data)
                .launch(cfg1d(xd.numel()))
        }
        .cu("shift_crop_bwd_f32")?;
    }
    Ok(dx)
}
