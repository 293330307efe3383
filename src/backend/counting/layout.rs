//! What the counting backend counts for channel concatenation, splitting and shift-crop
//! (`LayoutOps`).

use super::{CountBuf, Counting, Io};
use crate::backend::{checks, LayoutOps};
use crate::error::Result;
use crate::shape::Nchw;

impl LayoutOps for Counting {
    fn concat_channels(&self, parts: &[(&CountBuf, Nchw)]) -> Result<CountBuf> {
        let yd = checks::concat_channels(self, parts)?;
        let reads: Vec<&CountBuf> = parts.iter().map(|(b, _)| *b).collect();
        self.unary("concat_channels", 0, &reads, yd.numel())
    }
    fn split_channels(&self, dy: &CountBuf, dd: Nchw, channels: &[usize]) -> Result<Vec<CountBuf>> {
        checks::split_channels(self, dy, dd, channels)?;
        let outs = channels
            .iter()
            .map(|&c| self.alloc(dd.n * c * dd.plane()))
            .collect::<Result<Vec<_>>>()?;
        self.rec(
            "split_channels",
            0,
            Io {
                reads: vec![dy],
                writes: outs.iter().collect(),
            },
        )?;
        Ok(outs)
    }
    fn shift_crop_fwd(&self, x: &CountBuf, xd: Nchw) -> Result<CountBuf> {
        let yd = checks::shift_crop_fwd(self, x, xd)?;
        self.unary("shift_crop_fwd", 0, &[x], yd.numel())
    }
    fn shift_crop_bwd(&self, dy: &CountBuf, xd: Nchw) -> Result<CountBuf> {
        checks::shift_crop_bwd(self, dy, xd)?;
        // The cropped row and column are written as zeros: the whole input size is written.
        self.unary("shift_crop_bwd", 0, &[dy], xd.numel())
    }
}
