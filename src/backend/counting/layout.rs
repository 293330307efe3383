//! What the counting backend counts for channel concatenation, splitting and shift-crop (`LayoutOps`).

use super::{CountBuf, Counting, Io};
use crate::backend::LayoutOps;
use crate::error::Result;
use crate::shape::Nchw;

impl LayoutOps for Counting {
    fn concat_channels(&self, parts: &[(&CountBuf, Nchw)]) -> Result<CountBuf> {
        let len = parts.iter().map(|(_, d)| d.numel()).sum();
        let reads: Vec<&CountBuf> = parts.iter().map(|(b, _)| *b).collect();
        self.unary("concat_channels", 0, &reads, len)
    }
    fn split_channels(&self, dy: &CountBuf, dd: Nchw, channels: &[usize]) -> Result<Vec<CountBuf>> {
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
        let len = xd.n * xd.c * xd.h.saturating_sub(1) * xd.w.saturating_sub(1);
        self.unary("shift_crop_fwd", 0, &[x], len)
    }
    fn shift_crop_bwd(&self, dy: &CountBuf, xd: Nchw) -> Result<CountBuf> {
        // The cropped row and column are written as zeros: the whole input size is written.
        self.unary("shift_crop_bwd", 0, &[dy], xd.numel())
    }
}
