//! Parity cases for conv2d: forward, data gradient (fresh and added into a pending one) and
//! weight gradient, with and without the fused input ReLU.

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::error::Result;
use crate::shape::{Conv2dSpec, Nchw};

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// All three conv passes at `spec` (`relu_input` included: the fused ReLU is checked on
    /// inputs about half negative, as `randn` draws them).
    pub(super) fn conv(&mut self, xd: Nchw, spec: Conv2dSpec) -> Result<()> {
        let yd = spec.output(xd)?;
        let s = format!(
            "x {} k{} s{} p{} d{} g{}{} -> {}",
            xd.shape(),
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.dilation,
            spec.groups,
            if spec.relu_input { " relu" } else { "" },
            yd.shape()
        );
        let x = self.randn(xd.numel());
        let w = self.randn(spec.weight_shape().numel());
        let dy = self.randn(yd.numel());
        let (dx_, dw_, ddy) = (self.up(&x)?, self.up(&w)?, self.up(&dy)?);
        let r = self.cpu.conv2d_fwd(&x, xd, &w, &spec)?;
        let y = self.dev.conv2d_fwd(&dx_, xd, &dw_, &spec)?;
        self.check("conv2d_fwd", &s, &y, &r, TOL)?;
        let r = self.cpu.conv2d_bwd_data(&x, &dy, &w, xd, &spec)?;
        let y = self.dev.conv2d_bwd_data(&dx_, &ddy, &dw_, xd, &spec)?;
        self.check("conv2d_bwd_data", &s, &y, &r, TOL)?;
        // Accumulating into a pending gradient (the fused ReLU masks the contribution only).
        let acc = self.randn(xd.numel());
        let mut r = acc.clone();
        self.cpu
            .conv2d_bwd_data_into(&x, &dy, &w, xd, &spec, &mut r)?;
        let mut y = self.up(&acc)?;
        self.dev
            .conv2d_bwd_data_into(&dx_, &ddy, &dw_, xd, &spec, &mut y)?;
        self.check("conv2d_bwd_data_into", &s, &y, &r, TOL)?;
        let r = self.cpu.conv2d_bwd_weight(&x, &dy, xd, &spec)?;
        let y = self.dev.conv2d_bwd_weight(&dx_, &ddy, xd, &spec)?;
        self.check("conv2d_bwd_weight", &s, &y, &r, TOL)
    }
}
