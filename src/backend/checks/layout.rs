//! Checks of channel concatenation, splitting and the shift-crop (`LayoutOps`).

use super::expect_len;
use crate::backend::DeviceOps;
use crate::error::{Error, Result};
use crate::shape::Nchw;

/// At least one part, all of one N, H and W, each of its own length. Returns the output dims.
pub fn concat_channels<B: DeviceOps>(b: &B, parts: &[(&B::Storage, Nchw)]) -> Result<Nchw> {
    let first = parts
        .first()
        .ok_or_else(|| Error::shape("concat_channels", "no inputs"))?
        .1;
    for &(buf, d) in parts {
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
        expect_len(b, "concat_channels", "input", buf, d.numel())?;
    }
    Ok(Nchw {
        c: parts.iter().map(|p| p.1.c).sum(),
        ..first
    })
}

/// The parts' channels add up to `dy`'s.
pub fn split_channels<B: DeviceOps>(
    b: &B,
    dy: &B::Storage,
    dy_dims: Nchw,
    channels: &[usize],
) -> Result<()> {
    expect_len(b, "split_channels", "input", dy, dy_dims.numel())?;
    if channels.iter().sum::<usize>() != dy_dims.c {
        return Err(Error::shape(
            "split_channels",
            format!(
                "parts of {channels:?} channels do not add up to {}",
                dy_dims.c
            ),
        ));
    }
    Ok(())
}

/// An input of H and W at least 2. Returns the output dims `[N, C, H-1, W-1]`.
pub fn shift_crop_fwd<B: DeviceOps>(b: &B, x: &B::Storage, x_dims: Nchw) -> Result<Nchw> {
    expect_len(b, "shift_crop", "input", x, x_dims.numel())?;
    if x_dims.h < 2 || x_dims.w < 2 {
        return Err(Error::shape(
            "shift_crop",
            format!("input {} needs H and W of at least 2", x_dims.shape()),
        ));
    }
    Ok(Nchw {
        h: x_dims.h - 1,
        w: x_dims.w - 1,
        ..x_dims
    })
}

pub fn shift_crop_bwd<B: DeviceOps>(b: &B, dy: &B::Storage, x_dims: Nchw) -> Result<()> {
    let (h, w) = (x_dims.h.saturating_sub(1), x_dims.w.saturating_sub(1));
    let len = x_dims.n * x_dims.c * h * w;
    expect_len(b, "shift_crop_bwd", "output gradient", dy, len)
}
