//! Parity cases for the layout family: channel concatenation and split, and the shift-crop
//! forward and backward (exact: tolerance 0).

use super::Harness;
use crate::backend::prelude::*;
use crate::error::Result;
use crate::shape::Nchw;

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn layout(
        &mut self,
        n: usize,
        h: usize,
        w: usize,
        channels: &[usize],
    ) -> Result<()> {
        let dims: Vec<Nchw> = channels.iter().map(|&c| Nchw { n, c, h, w }).collect();
        let s = format!("n {n} c {channels:?} {h}x{w}");
        let hosts: Vec<Vec<f32>> = dims.iter().map(|d| self.randn(d.numel())).collect();
        let devs: Vec<B::Storage> = hosts.iter().map(|h| self.up(h)).collect::<Result<_>>()?;
        let cparts: Vec<(&Vec<f32>, Nchw)> =
            hosts.iter().zip(&dims).map(|(h, d)| (h, *d)).collect();
        let dparts: Vec<(&B::Storage, Nchw)> =
            devs.iter().zip(&dims).map(|(h, d)| (h, *d)).collect();
        let r = self.cpu.concat_channels(&cparts)?;
        let y = self.dev.concat_channels(&dparts)?;
        self.check("concat_channels", &s, &y, &r, 0.0)?;
        let total = Nchw {
            n,
            c: channels.iter().sum(),
            h,
            w,
        };
        let dy = self.randn(total.numel());
        let rs = self.cpu.split_channels(&dy, total, channels)?;
        let ys = self.dev.split_channels(&self.up(&dy)?, total, channels)?;
        for (i, (y, r)) in ys.iter().zip(&rs).enumerate() {
            self.check(&format!("split_channels[{i}]"), &s, y, r, 0.0)?;
        }
        let xd = Nchw {
            n,
            c: channels[0],
            h,
            w,
        };
        let s = format!("x {}", xd.shape());
        let r = self.cpu.shift_crop_fwd(&hosts[0], xd)?;
        let y = self.dev.shift_crop_fwd(&devs[0], xd)?;
        self.check("shift_crop_fwd", &s, &y, &r, 0.0)?;
        let g = self.randn(r.len());
        let r = self.cpu.shift_crop_bwd(&g, xd)?;
        let y = self.dev.shift_crop_bwd(&self.up(&g)?, xd)?;
        self.check("shift_crop_bwd", &s, &y, &r, 0.0)
    }
}
