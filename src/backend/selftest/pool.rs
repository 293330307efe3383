//! Parity cases for pooling: max and average pooling forward and backward (fresh and added
//! into a pending gradient), and global average pooling.

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn pool(&mut self, xd: Nchw, stride: usize) -> Result<()> {
        let spec = Pool2dSpec {
            kernel: 3,
            stride,
            padding: 1,
        };
        let yd = spec.output(xd, "pool")?;
        let s = format!("x {} k3 s{stride} p1 -> {}", xd.shape(), yd.shape());
        let x = self.randn(xd.numel());
        let dy = self.randn(yd.numel());
        let (dx_, ddy) = (self.up(&x)?, self.up(&dy)?);
        let r = self.cpu.max_pool2d_fwd(&x, xd, &spec)?;
        let y = self.dev.max_pool2d_fwd(&dx_, xd, &spec)?;
        self.check("max_pool2d_fwd", &s, &y, &r, TOL)?;
        let r = self.cpu.max_pool2d_bwd(&x, &dy, xd, &spec)?;
        let y = self.dev.max_pool2d_bwd(&dx_, &ddy, xd, &spec)?;
        self.check("max_pool2d_bwd", &s, &y, &r, TOL)?;
        let acc = self.randn(xd.numel());
        let mut r = acc.clone();
        self.cpu.max_pool2d_bwd_into(&x, &dy, xd, &spec, &mut r)?;
        let mut y = self.up(&acc)?;
        self.dev
            .max_pool2d_bwd_into(&dx_, &ddy, xd, &spec, &mut y)?;
        self.check("max_pool2d_bwd_into", &s, &y, &r, TOL)?;
        let r = self.cpu.avg_pool2d_fwd(&x, xd, &spec)?;
        let y = self.dev.avg_pool2d_fwd(&dx_, xd, &spec)?;
        self.check("avg_pool2d_fwd", &s, &y, &r, TOL)?;
        let r = self.cpu.avg_pool2d_bwd(&dy, xd, &spec)?;
        let y = self.dev.avg_pool2d_bwd(&ddy, xd, &spec)?;
        self.check("avg_pool2d_bwd", &s, &y, &r, TOL)?;
        let acc = self.randn(xd.numel());
        let mut r = acc.clone();
        self.cpu.avg_pool2d_bwd_into(&dy, xd, &spec, &mut r)?;
        let mut y = self.up(&acc)?;
        self.dev.avg_pool2d_bwd_into(&ddy, xd, &spec, &mut y)?;
        self.check("avg_pool2d_bwd_into", &s, &y, &r, TOL)
    }

    pub(super) fn global_pool(&mut self, xd: Nchw) -> Result<()> {
        let s = format!("x {}", xd.shape());
        let x = self.randn(xd.numel());
        let dy = self.randn(xd.n * xd.c);
        let r = self.cpu.global_avg_pool_fwd(&x, xd)?;
        let y = self.dev.global_avg_pool_fwd(&self.up(&x)?, xd)?;
        self.check("global_avg_pool_fwd", &s, &y, &r, TOL)?;
        let r = self.cpu.global_avg_pool_bwd(&dy, xd)?;
        let y = self.dev.global_avg_pool_bwd(&self.up(&dy)?, xd)?;
        self.check("global_avg_pool_bwd", &s, &y, &r, TOL)
    }
}
