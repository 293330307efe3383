//! Parity cases for the elementwise family: arithmetic, reductions to a host scalar, the
//! activations (ReLU, sigmoid, tanh, SiLU) and the product, copies, the bf16 conversions
//! (bit for bit), drop-path, the SE channel scale, and the device-scalar ops a captured step uses (gradient-norm
//! scalars, scaled axpy, fill, upload into a buffer).

use super::{Harness, TOL};
use crate::backend::prelude::*;
use crate::error::{Error, Result};

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    pub(super) fn elementwise(&mut self, len: usize) -> Result<()> {
        let s = format!("len {len}");
        let (a, b) = (self.randn(len), self.randn(len));
        let (da, db) = (self.up(&a)?, self.up(&b)?);
        let c = &self.cpu;
        let r = c.add(&a, &b)?;
        let y = self.dev.add(&da, &db)?;
        self.check("add", &s, &y, &r, TOL)?;
        let r = self.cpu.scale(&a, -0.37)?;
        let y = self.dev.scale(&da, -0.37)?;
        self.check("scale", &s, &y, &r, TOL)?;
        let (mut ra, mut ya) = (a.clone(), self.dev.copy(&da)?);
        self.cpu.axpy(&mut ra, 1.7, &b)?;
        self.dev.axpy(&mut ya, 1.7, &db)?;
        self.check("axpy", &s, &ya, &ra, TOL)?;
        self.cpu.scale_assign(&mut ra, 0.25)?;
        self.dev.scale_assign(&mut ya, 0.25)?;
        self.check("scale_assign", &s, &ya, &ra, TOL)?;
        let (rs, ys) = (self.cpu.sum_squares(&a)?, self.dev.sum_squares(&da)?);
        self.check_scalar("sum_squares", &s, ys, rs, TOL);
        // Three buffers of different sizes (one empty), so offsets into the shared partials
        // and a zero-block buffer are exercised.
        let (e, half) = (Vec::new(), b[..len.div_ceil(2)].to_vec());
        let (de, dh) = (self.up(&e)?, self.up(&half)?);
        let rs = self.cpu.sum_squares_many(&[&a, &e, &half])?;
        let ys = self.dev.sum_squares_many(&[&da, &de, &dh])?;
        self.check_scalar("sum_squares_many", &s, ys, rs, TOL);
        let (rd, yd) = (self.cpu.dot(&a, &b)?, self.dev.dot(&da, &db)?);
        self.check_scalar("dot", &s, yd, rd, TOL);
        let r = self.cpu.relu_fwd(&a)?;
        let y = self.dev.relu_fwd(&da)?;
        self.check("relu_fwd", &s, &y, &r, TOL)?;
        let ry = r.clone();
        let r = self.cpu.relu_bwd(&ry, &b)?;
        let y = self.dev.relu_bwd(&y, &db)?;
        self.check("relu_bwd", &s, &y, &r, TOL)?;
        // Backward from the CPU's forward output: each op is compared alone.
        let (r, y) = (self.cpu.sigmoid_fwd(&a)?, self.dev.sigmoid_fwd(&da)?);
        self.check("sigmoid_fwd", &s, &y, &r, TOL)?;
        let y = self.dev.sigmoid_bwd(&self.up(&r)?, &db)?;
        self.check("sigmoid_bwd", &s, &y, &self.cpu.sigmoid_bwd(&r, &b)?, TOL)?;
        let (r, y) = (self.cpu.tanh_fwd(&a)?, self.dev.tanh_fwd(&da)?);
        self.check("tanh_fwd", &s, &y, &r, TOL)?;
        let y = self.dev.tanh_bwd(&self.up(&r)?, &db)?;
        self.check("tanh_bwd", &s, &y, &self.cpu.tanh_bwd(&r, &b)?, TOL)?;
        let (r, y) = (self.cpu.silu_fwd(&a)?, self.dev.silu_fwd(&da)?);
        self.check("silu_fwd", &s, &y, &r, TOL)?;
        let (r, y) = (self.cpu.silu_bwd(&a, &b)?, self.dev.silu_bwd(&da, &db)?);
        self.check("silu_bwd", &s, &y, &r, TOL)?;
        let (r, y) = (self.cpu.mul(&a, &b)?, self.dev.mul(&da, &db)?);
        self.check("mul", &s, &y, &r, TOL)?;
        let mut dst = self.dev.zeros(len)?;
        self.dev.copy_into(&mut dst, &da)?;
        self.check("copy_into", &s, &dst, &a, 0.0)?;
        let z = self.dev.zeros(len)?;
        self.check("zeros", &s, &z, &vec![0.0; len], 0.0)?;
        Ok(())
    }

    /// The bf16 conversions at `len`: random values spread over many binades, with exact
    /// rounding ties (even and odd below), infinities and values past bf16's range mixed in.
    /// `to_bf16` is checked through `from_bf16` (the only way to read a bf16 buffer); the
    /// `from_bf16` row widens values that are already bf16, which must come back unchanged.
    /// Both must match the CPU bit for bit (tolerance 0).
    pub(super) fn bf16(&mut self, len: usize) -> Result<()> {
        let s = format!("len {len}");
        let specials = [
            1.0 + 2f32.powi(-8),                     // tie, rounds down to even
            1.0 + 3.0 * 2f32.powi(-8),               // tie, rounds up to even
            -(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), // just above a tie
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -0.0,
            1e-40, // an f32 subnormal
        ];
        let x: Vec<f32> = (0..len)
            .map(|i| match specials.get(i % 64) {
                Some(&v) => v,
                _ => (self.rng.normal() * 8f64.powf(4.0 * self.rng.uniform() - 2.0)) as f32,
            })
            .collect();
        let cpu_h = self.cpu.to_bf16(&x)?;
        let r = self.cpu.from_bf16(&cpu_h)?;
        let h = self.dev.to_bf16(&self.up(&x)?)?;
        if self.dev.half_len(&h) != len {
            return Err(Error::shape(
                "to_bf16",
                format!("{} elements from {len}", self.dev.half_len(&h)),
            ));
        }
        let y = self.dev.from_bf16(&h)?;
        self.check("to_bf16", &s, &y, &r, 0.0)?;
        let y = self.dev.from_bf16(&self.dev.to_bf16(&self.up(&r)?)?)?;
        self.check("from_bf16", &s, &y, &r, 0.0)
    }

    pub(super) fn drop_path(&mut self, n: usize, per: usize) -> Result<()> {
        let x = self.randn(n * per);
        let scale: Vec<f32> = (0..n)
            .map(|i| if i % 3 == 1 { 0.0 } else { 1.0 / 0.7 })
            .collect();
        let r = self.cpu.drop_path(&x, n, &scale)?;
        let y = self.dev.drop_path(&self.up(&x)?, n, &self.up(&scale)?)?;
        self.check("drop_path", &format!("n {n} x {per}"), &y, &r, TOL)
    }

    /// The SE channel scale and its fused backward on `xd` (the plane of `ds` is reduced
    /// in a different order on a GPU: tolerance, not bits).
    pub(super) fn channel_scale(&mut self, xd: crate::shape::Nchw) -> Result<()> {
        let s = format!("{xd:?}");
        let (x, sc, dy) = (
            self.randn(xd.numel()),
            self.randn(xd.n * xd.c),
            self.randn(xd.numel()),
        );
        let (dx_, ds_, ddy) = (self.up(&x)?, self.up(&sc)?, self.up(&dy)?);
        let r = self.cpu.channel_scale_fwd(&x, xd, &sc)?;
        let y = self.dev.channel_scale_fwd(&dx_, xd, &ds_)?;
        self.check("channel_scale_fwd", &s, &y, &r, TOL)?;
        let (rdx, rds) = self.cpu.channel_scale_bwd(&x, &sc, &dy, xd)?;
        let (ydx, yds) = self.dev.channel_scale_bwd(&dx_, &ds_, &ddy, xd)?;
        self.check("channel_scale_bwd", &format!("{s} dx"), &ydx, &rdx, TOL)?;
        self.check("channel_scale_bwd", &format!("{s} ds"), &yds, &rds, TOL)
    }

    /// The ops a captured step uses instead of host round trips.
    pub(super) fn step_scalars(&mut self, lens: &[usize], max_norm: f64) -> Result<()> {
        let s = format!("lens {lens:?} max_norm {max_norm}");
        let xs: Vec<Vec<f32>> = lens.iter().map(|&l| self.randn(l)).collect();
        let dxs: Vec<B::Storage> = xs.iter().map(|x| self.up(x)).collect::<Result<_>>()?;
        let r = self
            .cpu
            .grad_norm_scalars(&xs.iter().collect::<Vec<_>>(), max_norm)?;
        let y = self
            .dev
            .grad_norm_scalars(&dxs.iter().collect::<Vec<_>>(), max_norm)?;
        self.check("grad_norm_scalars", &s, &y, &r, TOL)?;
        let len = lens.iter().copied().max().unwrap_or(0);
        let (a, x) = (self.randn(len), self.randn(len));
        let (mut ra, mut ya) = (a.clone(), self.up(&a)?);
        let dx = self.up(&x)?;
        for index in 0..crate::backend::norm_scalars::LEN {
            let rs = crate::backend::ScalarRef { buf: &r, index };
            let ys = crate::backend::ScalarRef { buf: &y, index };
            self.cpu.axpy_scaled(&mut ra, -0.7, rs, &x)?;
            self.dev.axpy_scaled(&mut ya, -0.7, ys, &dx)?;
        }
        self.check("axpy_scaled", &format!("len {len}"), &ya, &ra, TOL)?;
        let rf = self.cpu.fill(len, 0.375)?;
        let yf = self.dev.fill(len, 0.375)?;
        self.check("fill", &format!("len {len}"), &yf, &rf, 0.0)?;
        let mut yu = self.dev.zeros(len)?;
        self.dev.upload_into(&mut yu, &x)?;
        self.check("upload_into", &format!("len {len}"), &yu, &x, 0.0)
    }
}
