//! Parity self-test: runs every [`Backend`] op, forward and backward, on a device and on the
//! CPU reference (`Cpu<f32>`) with the same fresh random inputs at several shapes, and reports
//! the worst error per (op, shape). Generic over the device, so the same harness checks the
//! CUDA backend on a GPU and, run CPU against CPU, checks itself in `cargo test`.
//!
//! Error measure (per element, the maximum is reported):
//! `|dev - cpu| / (|cpu| + 1e-3 + 0.1 * rms(cpu))`. The rms term keeps near-zero results
//! of long sums (convolutions, GEMMs, reductions) from being judged against zero: two
//! correct f32 summation orders differ by rounding relative to the size of the terms, not
//! of the result. A row passes when the error is at most its tolerance ([`TOL`] unless the
//! row says otherwise).

use crate::backend::cpu::Cpu;
use crate::backend::prelude::*;
use crate::backend::{AdamStep, Backend, RunningStats, SgdStep};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Nchw, Pool2dSpec};

/// Default tolerance on the error measure above.
pub const TOL: f64 = 1e-4;

/// One compared output.
#[derive(Clone, Debug)]
pub struct ParityRow {
    /// The trait method, plus which output when it has several ("batch_norm_bwd.dgamma").
    pub op: String,
    /// The configuration ("x [2, 6, 13, 11] k3 s2 p1 d1 g6").
    pub shape: String,
    /// Worst error over the elements (measure in the module docs).
    pub max_err: f64,
    pub tol: f64,
    pub passed: bool,
}

/// The error measure of the module docs; non-finite values or a length mismatch count as
/// infinite error.
pub fn max_error(dev: &[f32], cpu: &[f32]) -> f64 {
    if dev.len() != cpu.len() {
        return f64::INFINITY;
    }
    if cpu.is_empty() {
        return 0.0;
    }
    let rms = (cpu.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cpu.len() as f64).sqrt();
    let floor = 1e-3 + 0.1 * rms;
    let mut worst = 0.0f64;
    for (&a, &b) in dev.iter().zip(cpu) {
        let (a, b) = (a as f64, b as f64);
        if !a.is_finite() || !b.is_finite() {
            if a.to_bits() != b.to_bits() {
                return f64::INFINITY;
            }
            continue;
        }
        worst = worst.max((a - b).abs() / (b.abs() + floor));
    }
    worst
}

struct Harness<'a, B: Backend<Elem = f32>> {
    dev: &'a B,
    cpu: Cpu<f32>,
    rng: Rng,
    rows: Vec<ParityRow>,
}

impl<'a, B: Backend<Elem = f32>> Harness<'a, B> {
    fn randn(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.rng.normal() as f32).collect()
    }
    fn uniform(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..len)
            .map(|_| (lo + (hi - lo) * self.rng.uniform()) as f32)
            .collect()
    }
    fn up(&self, host: &[f32]) -> Result<B::Storage> {
        self.dev.upload(host)
    }
    fn check(
        &mut self,
        op: &str,
        shape: &str,
        dev: &B::Storage,
        cpu: &[f32],
        tol: f64,
    ) -> Result<()> {
        let got = self.dev.download(dev)?;
        let err = max_error(&got, cpu);
        self.row(op, shape, err, tol);
        Ok(())
    }
    /// Records one compared output (an error of infinity marks a missing or mis-sized one).
    fn row(&mut self, op: impl Into<String>, shape: impl Into<String>, max_err: f64, tol: f64) {
        self.rows.push(ParityRow {
            op: op.into(),
            shape: shape.into(),
            max_err,
            tol,
            passed: max_err <= tol,
        });
    }
    /// Host scalars (sum_squares, dot): both sides sum in f64, so plain `|a-b| / (|b| + 1e-3)`.
    fn check_scalar(&mut self, op: &str, shape: &str, dev: f64, cpu: f64, tol: f64) {
        let err = if dev.is_finite() && cpu.is_finite() {
            (dev - cpu).abs() / (cpu.abs() + 1e-3)
        } else {
            f64::INFINITY
        };
        self.row(op, shape, err, tol);
    }

    fn elementwise(&mut self, len: usize) -> Result<()> {
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
    fn bf16(&mut self, len: usize) -> Result<()> {
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

    fn drop_path(&mut self, n: usize, per: usize) -> Result<()> {
        let x = self.randn(n * per);
        let scale: Vec<f32> = (0..n)
            .map(|i| if i % 3 == 1 { 0.0 } else { 1.0 / 0.7 })
            .collect();
        let r = self.cpu.drop_path(&x, n, &scale)?;
        let y = self.dev.drop_path(&self.up(&x)?, n, &self.up(&scale)?)?;
        self.check("drop_path", &format!("n {n} x {per}"), &y, &r, TOL)
    }

    /// All three conv passes at `spec` (`relu_input` included: the fused ReLU is checked on
    /// inputs about half negative, as `randn` draws them).
    fn conv(&mut self, xd: Nchw, spec: Conv2dSpec) -> Result<()> {
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

    fn pool(&mut self, xd: Nchw, stride: usize) -> Result<()> {
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

    fn global_pool(&mut self, xd: Nchw) -> Result<()> {
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

    fn batch_norm(&mut self, xd: Nchw, affine: bool, running: bool) -> Result<()> {
        let s = format!("x {} affine={affine} running={running}", xd.shape());
        // A non-zero mean and non-unit scale, so the statistics are exercised.
        let x: Vec<f32> = self
            .randn(xd.numel())
            .iter()
            .map(|v| v * 1.5 + 0.3)
            .collect();
        let dy = self.randn(xd.numel());
        let (g, b) = (self.uniform(xd.c, 0.5, 1.5), self.randn(xd.c));
        let (rm0, rv0) = (self.randn(xd.c), self.uniform(xd.c, 0.5, 1.5));
        let (dx_, ddy, dg, dbeta) = (self.up(&x)?, self.up(&dy)?, self.up(&g)?, self.up(&b)?);
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let (mut drm, mut drv) = (self.up(&rm0)?, self.up(&rv0)?);
        let eps = 1e-5;
        let (ry, rsaved) = self.cpu.batch_norm_train_fwd(
            &x,
            xd,
            affine.then_some((&g, &b)),
            running.then_some(RunningStats {
                mean: &mut rm,
                var: &mut rv,
                momentum: 0.1,
            }),
            eps,
        )?;
        let (y, saved) = self.dev.batch_norm_train_fwd(
            &dx_,
            xd,
            affine.then_some((&dg, &dbeta)),
            running.then_some(RunningStats {
                mean: &mut drm,
                var: &mut drv,
                momentum: 0.1,
            }),
            eps,
        )?;
        self.check("batch_norm_train_fwd", &s, &y, &ry, TOL)?;
        self.check(
            "batch_norm_train_fwd.mean",
            &s,
            &saved.mean,
            &rsaved.mean,
            TOL,
        )?;
        self.check(
            "batch_norm_train_fwd.invstd",
            &s,
            &saved.invstd,
            &rsaved.invstd,
            TOL,
        )?;
        if running {
            self.check("batch_norm_train_fwd.running_mean", &s, &drm, &rm, TOL)?;
            self.check("batch_norm_train_fwd.running_var", &s, &drv, &rv, TOL)?;
        }
        let r =
            self.cpu
                .batch_norm_eval_fwd(&x, xd, affine.then_some((&g, &b)), &rm0, &rv0, eps)?;
        let de = self.dev.batch_norm_eval_fwd(
            &dx_,
            xd,
            affine.then_some((&dg, &dbeta)),
            &self.up(&rm0)?,
            &self.up(&rv0)?,
            eps,
        )?;
        self.check("batch_norm_eval_fwd", &s, &de, &r, TOL)?;
        let (rdx, rgrads) = self
            .cpu
            .batch_norm_bwd(&x, &dy, xd, affine.then_some(&g), &rsaved)?;
        let (ddx, grads) =
            self.dev
                .batch_norm_bwd(&dx_, &ddy, xd, affine.then_some(&dg), &saved)?;
        self.check("batch_norm_bwd", &s, &ddx, &rdx, TOL)?;
        match (rgrads, grads) {
            (Some((rgg, rgb)), Some((gg, gb))) => {
                self.check("batch_norm_bwd.dgamma", &s, &gg, &rgg, TOL)?;
                self.check("batch_norm_bwd.dbeta", &s, &gb, &rgb, TOL)?;
            }
            (None, None) => {}
            _ => self.row("batch_norm_bwd.param_grads", s.clone(), f64::INFINITY, TOL),
        }
        Ok(())
    }

    fn layout(&mut self, n: usize, h: usize, w: usize, channels: &[usize]) -> Result<()> {
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

    fn linear(&mut self, n: usize, in_f: usize, out_f: usize, bias: bool) -> Result<()> {
        let s = format!("x [{n}, {in_f}] -> [{n}, {out_f}] bias={bias}");
        let (x, w, b, dy) = (
            self.randn(n * in_f),
            self.randn(out_f * in_f),
            self.randn(out_f),
            self.randn(n * out_f),
        );
        let (dx_, dw_, db_, ddy) = (self.up(&x)?, self.up(&w)?, self.up(&b)?, self.up(&dy)?);
        let r = self
            .cpu
            .linear_fwd(&x, &w, bias.then_some(&b), n, in_f, out_f)?;
        let y = self
            .dev
            .linear_fwd(&dx_, &dw_, bias.then_some(&db_), n, in_f, out_f)?;
        self.check("linear_fwd", &s, &y, &r, TOL)?;
        let (rx, rw, rb) = self.cpu.linear_bwd(&x, &w, &dy, n, in_f, out_f, bias)?;
        let (gx, gw, gb) = self
            .dev
            .linear_bwd(&dx_, &dw_, &ddy, n, in_f, out_f, bias)?;
        self.check("linear_bwd.dx", &s, &gx, &rx, TOL)?;
        self.check("linear_bwd.dw", &s, &gw, &rw, TOL)?;
        match (rb, gb) {
            (Some(rb), Some(gb)) => self.check("linear_bwd.db", &s, &gb, &rb, TOL)?,
            (None, None) => {}
            _ => self.row("linear_bwd.db", s.clone(), f64::INFINITY, TOL),
        }
        Ok(())
    }

    fn softmax_ce(&mut self, n: usize, k: usize) -> Result<()> {
        let s = format!("logits [{n}, {k}]");
        let logits: Vec<f32> = self.randn(n * k).iter().map(|v| v * 3.0).collect();
        let labels: Vec<u32> = (0..n).map(|_| self.rng.below(k) as u32).collect();
        let dl = self.up(&logits)?;
        let (clab, dlab) = (
            self.cpu.upload_labels(&labels, k)?,
            self.dev.upload_labels(&labels, k)?,
        );
        let (rl, rp) = self.cpu.softmax_cross_entropy_fwd(&logits, n, k, &clab)?;
        let (yl, yp) = self.dev.softmax_cross_entropy_fwd(&dl, n, k, &dlab)?;
        self.check("softmax_cross_entropy_fwd.loss", &s, &yl, &rl, TOL)?;
        self.check("softmax_cross_entropy_fwd.probs", &s, &yp, &rp, TOL)?;
        let r = self
            .cpu
            .softmax_cross_entropy_bwd(&rp, &vec![0.8], n, k, &clab)?;
        let y = self
            .dev
            .softmax_cross_entropy_bwd(&yp, &self.up(&[0.8])?, n, k, &dlab)?;
        self.check("softmax_cross_entropy_bwd", &s, &y, &r, TOL)?;
        // Ties on purpose (rounded logits): the first maximum wins on both devices.
        let tied: Vec<f32> = logits.iter().map(|v| v.round()).collect();
        let r = self.cpu.count_correct(&tied, n, k, &clab)?;
        let y = self.dev.count_correct(&self.up(&tied)?, n, k, &dlab)?;
        self.check("count_correct", &s, &y, &r, 0.0)?;
        // Staged labels: overwritten in place, then used again.
        let relabel: Vec<u32> = (0..n).map(|_| self.rng.below(k) as u32).collect();
        let (mut clab, mut dlab) = (clab, dlab);
        self.cpu.upload_labels_into(&mut clab, &relabel, k)?;
        self.dev.upload_labels_into(&mut dlab, &relabel, k)?;
        let r = self.cpu.count_correct(&tied, n, k, &clab)?;
        let y = self.dev.count_correct(&self.up(&tied)?, n, k, &dlab)?;
        self.check("upload_labels_into", &s, &y, &r, 0.0)
    }

    /// The ops a captured step uses instead of host round trips.
    fn step_scalars(&mut self, lens: &[usize], max_norm: f64) -> Result<()> {
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

    /// `zero`: the inputs passed as absent (all-zero, the `none` op).
    fn mixed_op(&mut self, k: usize, len: usize, zero: &[usize]) -> Result<()> {
        let s = if zero.is_empty() {
            format!("K {k} len {len}")
        } else {
            format!("K {k} len {len} none {zero:?}")
        };
        let xs: Vec<Vec<f32>> = (0..k).map(|_| self.randn(len)).collect();
        let dxs_dev: Vec<B::Storage> = xs.iter().map(|x| self.up(x)).collect::<Result<_>>()?;
        let alpha = self
            .randn(k)
            .iter()
            .map(|v| v * 1e-3 * (len as f32).sqrt())
            .collect::<Vec<_>>();
        let dalpha_in = self.up(&alpha)?;
        let dy = self.randn(len);
        let present = |i: usize| !zero.contains(&i);
        let cx: Vec<Option<&Vec<f32>>> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| present(i).then_some(x))
            .collect();
        let dx: Vec<Option<&B::Storage>> = dxs_dev
            .iter()
            .enumerate()
            .map(|(i, x)| present(i).then_some(x))
            .collect();
        let r = self.cpu.mixed_op_fwd(&cx, &alpha, len)?;
        let y = self.dev.mixed_op_fwd(&dx, &dalpha_in, len)?;
        self.check("mixed_op_fwd", &s, &y, &r, TOL)?;
        // Every other gradient requested, so both the written and the skipped paths run (an
        // absent input asked for one must still get none).
        let need: Vec<bool> = (0..k).map(|i| i % 2 == 0).collect();
        let (rdx, rda) = self.cpu.mixed_op_bwd(&dy, &cx, &alpha, len, &need)?;
        let (ydx, yda) = self
            .dev
            .mixed_op_bwd(&self.up(&dy)?, &dx, &dalpha_in, len, &need)?;
        self.check("mixed_op_bwd.dalpha", &s, &yda, &rda, TOL)?;
        for (i, (r, y)) in rdx.iter().zip(&ydx).enumerate() {
            match (r, y) {
                (Some(r), Some(y)) => {
                    self.check(&format!("mixed_op_bwd.dx[{i}]"), &s, y, r, TOL)?
                }
                (None, None) => {}
                _ => self.row(
                    format!("mixed_op_bwd.dx[{i}]"),
                    s.clone(),
                    f64::INFINITY,
                    TOL,
                ),
            }
        }
        // Accumulating: every third input adds into a pending gradient (`acc`), the other
        // wanted ones come back fresh; an accumulator of an unwanted input stays as it was.
        let into = |i: usize| i.is_multiple_of(3);
        let accs: Vec<Vec<f32>> = (0..k).map(|_| self.randn(len)).collect();
        let mut rbufs = accs.clone();
        let mut ybufs: Vec<B::Storage> = accs.iter().map(|a| self.up(a)).collect::<Result<_>>()?;
        let (rdx, rda) = {
            let mut acc: Vec<Option<&mut Vec<f32>>> = rbufs
                .iter_mut()
                .enumerate()
                .map(|(i, a)| into(i).then_some(a))
                .collect();
            self.cpu
                .mixed_op_bwd_into(&dy, &cx, &alpha, len, &need, &mut acc)?
        };
        let (ydx, yda) = {
            let mut acc: Vec<Option<&mut B::Storage>> = ybufs
                .iter_mut()
                .enumerate()
                .map(|(i, a)| into(i).then_some(a))
                .collect();
            self.dev
                .mixed_op_bwd_into(&self.up(&dy)?, &dx, &dalpha_in, len, &need, &mut acc)?
        };
        self.check("mixed_op_bwd_into.dalpha", &s, &yda, &rda, TOL)?;
        for i in 0..k {
            let op = format!("mixed_op_bwd_into.dx[{i}]");
            match (&rdx[i], &ydx[i]) {
                (Some(r), Some(y)) => self.check(&op, &s, y, r, TOL)?,
                (None, None) if into(i) => self.check(&op, &s, &ybufs[i], &rbufs[i], TOL)?,
                (None, None) => {}
                _ => self.row(op, s.clone(), f64::INFINITY, TOL),
            }
        }
        Ok(())
    }

    fn optim(&mut self, len: usize) -> Result<()> {
        let s = format!("len {len}");
        let (p, g, buf) = (self.randn(len), self.randn(len), self.randn(len));
        let hp = SgdStep {
            lr: 0.025,
            momentum: 0.9,
            weight_decay: 3e-4,
        };
        let (mut rp, mut rb) = (p.clone(), buf.clone());
        let (mut yp, mut yb) = (self.up(&p)?, self.up(&buf)?);
        let dg = self.up(&g)?;
        for _ in 0..3 {
            self.cpu.sgd_step(&mut rp, &g, &mut rb, &hp, None)?;
            self.dev.sgd_step(&mut yp, &dg, &mut yb, &hp, None)?;
        }
        self.check("sgd_step.param", &s, &yp, &rp, TOL)?;
        self.check("sgd_step.momentum", &s, &yb, &rb, TOL)?;
        // With the gradient scaled by a device scalar (clipping fused into the update).
        let scale = vec![0.0f32, 0.3, 0.0];
        let dscale = self.up(&scale)?;
        for _ in 0..3 {
            let rs = crate::backend::ScalarRef {
                buf: &scale,
                index: 1,
            };
            let ys = crate::backend::ScalarRef {
                buf: &dscale,
                index: 1,
            };
            self.cpu.sgd_step(&mut rp, &g, &mut rb, &hp, Some(rs))?;
            self.dev.sgd_step(&mut yp, &dg, &mut yb, &hp, Some(ys))?;
        }
        self.check("sgd_step.param (scaled)", &s, &yp, &rp, TOL)?;
        self.check("sgd_step.momentum (scaled)", &s, &yb, &rb, TOL)?;
        let (mut rp, mut rm, mut rv) = (p.clone(), vec![0.0; len], vec![0.0; len]);
        let (mut yp, mut ym, mut yv) = (self.up(&p)?, self.dev.zeros(len)?, self.dev.zeros(len)?);
        for step in 1..=3 {
            let hp = AdamStep {
                lr: 3e-4,
                beta1: 0.5,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-3,
                step,
            };
            self.cpu.adam_step(&mut rp, &g, &mut rm, &mut rv, &hp)?;
            self.dev.adam_step(&mut yp, &dg, &mut ym, &mut yv, &hp)?;
        }
        self.check("adam_step.param", &s, &yp, &rp, TOL)?;
        self.check("adam_step.m", &s, &ym, &rm, TOL)?;
        self.check("adam_step.v", &s, &yv, &rv, TOL)
    }
}

impl<B: Backend<Elem = f32>> Harness<'_, B> {
    /// Device buffers downloaded end to end, against the CPU's end to end: one row for a
    /// whole tensor list.
    fn check_many(
        &mut self,
        op: &str,
        shape: &str,
        dev: &[B::Storage],
        cpu: &[Vec<f32>],
        tol: f64,
    ) -> Result<()> {
        let mut got = Vec::new();
        for d in dev {
            got.extend(self.dev.download(d)?);
        }
        let want: Vec<f32> = cpu.concat();
        let err = if got.len() == want.len() {
            max_error(&got, &want)
        } else {
            f64::INFINITY
        };
        self.row(op, shape, err, tol);
        Ok(())
    }

    /// The multi-tensor ops over `count` tensors of assorted lengths (empty ones included,
    /// more than one launch's table where `count` exceeds it): `sgd_step_many` (plain and
    /// scaled by a device scalar) and `adam_step_many` against the CPU, the device's
    /// `sgd_step_many` against its own per-tensor `sgd_step` (the same float arithmetic:
    /// tolerance 0), and the norm reductions over the same list.
    fn optim_many(&mut self, count: usize) -> Result<()> {
        let lens: Vec<usize> = (0..count)
            .map(|i| match i % 11 {
                0 => 0,
                5 => 70_001,
                _ => (i * 37) % 3001 + 1,
            })
            .collect();
        let s = format!("{count} tensors, {} elements", lens.iter().sum::<usize>());
        let mk = |h: &mut Self| -> Vec<Vec<f32>> { lens.iter().map(|&l| h.randn(l)).collect() };
        let (p, g, buf) = (mk(self), mk(self), mk(self));
        let up = |h: &Self, v: &[Vec<f32>]| -> Result<Vec<B::Storage>> {
            v.iter().map(|x| h.up(x)).collect()
        };
        let dg = up(self, &g)?;
        let cg: Vec<&Vec<f32>> = g.iter().collect();
        let yg: Vec<&B::Storage> = dg.iter().collect();
        let hp = SgdStep {
            lr: 0.025,
            momentum: 0.9,
            weight_decay: 3e-4,
        };
        let scale = vec![0.0f32, 0.3, 0.0];
        let dscale = self.up(&scale)?;
        let (mut rp, mut rb) = (p.clone(), buf.clone());
        let (mut yp, mut yb) = (up(self, &p)?, up(self, &buf)?);
        let (mut op1, mut ob1) = (up(self, &p)?, up(self, &buf)?);
        for scaled in [false, false, true, true] {
            let rs = scaled.then_some(crate::backend::ScalarRef {
                buf: &scale,
                index: 1,
            });
            let ys = scaled.then_some(crate::backend::ScalarRef {
                buf: &dscale,
                index: 1,
            });
            let mut rpm: Vec<&mut Vec<f32>> = rp.iter_mut().collect();
            let mut rbm: Vec<&mut Vec<f32>> = rb.iter_mut().collect();
            self.cpu.sgd_step_many(&mut rpm, &cg, &mut rbm, &hp, rs)?;
            let mut ypm: Vec<&mut B::Storage> = yp.iter_mut().collect();
            let mut ybm: Vec<&mut B::Storage> = yb.iter_mut().collect();
            self.dev.sgd_step_many(&mut ypm, &yg, &mut ybm, &hp, ys)?;
            for ((p, g), b) in op1.iter_mut().zip(&dg).zip(ob1.iter_mut()) {
                self.dev.sgd_step(p, g, b, &hp, ys)?;
            }
        }
        self.check_many("sgd_step_many.param", &s, &yp, &rp, TOL)?;
        self.check_many("sgd_step_many.momentum", &s, &yb, &rb, TOL)?;
        let one: Vec<Vec<f32>> = op1
            .iter()
            .map(|b| self.dev.download(b))
            .collect::<Result<_>>()?;
        self.check_many("sgd_step_many = sgd_step (device)", &s, &yp, &one, 0.0)?;

        let zeros = |h: &Self| -> Result<Vec<B::Storage>> {
            lens.iter().map(|&l| h.dev.zeros(l)).collect()
        };
        let (mut rp, mut rm, mut rv) = (
            p.clone(),
            lens.iter().map(|&l| vec![0.0f32; l]).collect::<Vec<_>>(),
            lens.iter().map(|&l| vec![0.0f32; l]).collect::<Vec<_>>(),
        );
        let (mut yp, mut ym, mut yv) = (up(self, &p)?, zeros(self)?, zeros(self)?);
        for step in 1..=3 {
            let hp = AdamStep {
                lr: 3e-4,
                beta1: 0.5,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-3,
                step,
            };
            let mut a: Vec<&mut Vec<f32>> = rp.iter_mut().collect();
            let mut b: Vec<&mut Vec<f32>> = rm.iter_mut().collect();
            let mut c: Vec<&mut Vec<f32>> = rv.iter_mut().collect();
            self.cpu.adam_step_many(&mut a, &cg, &mut b, &mut c, &hp)?;
            let mut a: Vec<&mut B::Storage> = yp.iter_mut().collect();
            let mut b: Vec<&mut B::Storage> = ym.iter_mut().collect();
            let mut c: Vec<&mut B::Storage> = yv.iter_mut().collect();
            self.dev.adam_step_many(&mut a, &yg, &mut b, &mut c, &hp)?;
        }
        self.check_many("adam_step_many.param", &s, &yp, &rp, TOL)?;
        self.check_many("adam_step_many.m", &s, &ym, &rm, TOL)?;
        self.check_many("adam_step_many.v", &s, &yv, &rv, TOL)?;

        let r = self.cpu.sum_squares_many(&cg)?;
        let y = self.dev.sum_squares_many(&yg)?;
        self.check_scalar("sum_squares_many", &s, y, r, 1e-9);
        let r = self.cpu.grad_norm_scalars(&cg, 5.0)?;
        let y = self.dev.grad_norm_scalars(&yg, 5.0)?;
        self.check("grad_norm_scalars", &s, &y, &r, TOL)
    }
}

fn nchw(n: usize, c: usize, h: usize, w: usize) -> Nchw {
    Nchw { n, c, h, w }
}

/// A conv of `xd.c` input channels (no fused ReLU).
fn conv_spec(
    xd: Nchw,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Conv2dSpec {
    Conv2dSpec {
        in_channels: xd.c,
        out_channels: out_c,
        kernel: k,
        stride,
        padding,
        dilation,
        groups,
        relu_input: false,
    }
}

/// Runs every op on `dev` and on `Cpu<f32>` with the same random inputs (from `seed`) and
/// returns one row per compared output. An op that fails outright on `dev` is an `Err`.
pub fn run_parity<B: Backend<Elem = f32>>(dev: &B, seed: u64) -> Result<Vec<ParityRow>> {
    let mut h = Harness {
        dev,
        cpu: Cpu::new(),
        rng: Rng::new(seed),
        rows: Vec::new(),
    };
    for len in [1, 5 * 7 * 13, 70_001] {
        h.elementwise(len)?;
        h.bf16(len)?;
    }
    h.drop_path(1, 35)?;
    h.drop_path(8, 13 * 11 * 3)?;
    // Depthwise (the DARTS sep / dil convs): k 3 and 5, stride 1 and 2, dilation 1 and 2.
    // General: stem 3x3, pointwise 1x1 (direct GEMM), 1x1 stride 2 (FactorizedReduce),
    // grouped, and k 5 dilated.
    let convs = [
        (nchw(2, 6, 13, 11), 6, 3, 1, 1, 1, 6),
        (nchw(1, 4, 13, 11), 4, 5, 2, 2, 1, 4),
        (nchw(3, 5, 5, 7), 5, 3, 1, 2, 2, 5),
        (nchw(2, 3, 13, 11), 3, 5, 2, 4, 2, 3),
        (nchw(16, 8, 16, 16), 8, 3, 1, 1, 1, 8),
        (nchw(2, 4, 40, 37), 4, 3, 2, 0, 1, 4),
        (nchw(2, 3, 13, 11), 8, 3, 1, 1, 1, 1),
        (nchw(3, 6, 5, 7), 10, 1, 1, 0, 1, 1),
        (nchw(16, 8, 8, 8), 8, 1, 1, 0, 1, 1),
        (nchw(2, 6, 13, 11), 4, 1, 2, 0, 1, 1),
        (nchw(2, 6, 9, 9), 4, 3, 2, 1, 1, 2),
        (nchw(1, 4, 13, 11), 3, 5, 1, 4, 2, 1),
    ];
    for (xd, o, k, s, p, d, g) in convs {
        h.conv(xd, conv_spec(xd, o, k, s, p, d, g))?;
    }
    // The same convs with a fused ReLU (`relu_input`), fresh inputs: every depthwise kernel,
    // im2col (1x1 stride 1 takes it when fused), col2im's mask, and the aux head's 2x2.
    for (xd, o, k, s, p, d, g) in convs
        .into_iter()
        .chain([(nchw(3, 7, 2, 2), 5, 2, 1, 0, 1, 1)])
    {
        let spec = Conv2dSpec {
            relu_input: true,
            ..conv_spec(xd, o, k, s, p, d, g)
        };
        h.conv(xd, spec)?;
    }
    for (xd, stride) in [
        (nchw(2, 3, 13, 11), 1),
        (nchw(2, 3, 13, 11), 2),
        (nchw(1, 4, 5, 7), 2),
        (nchw(16, 8, 8, 8), 1),
    ] {
        h.pool(xd, stride)?;
    }
    h.global_pool(nchw(2, 3, 13, 11))?;
    h.global_pool(nchw(16, 32, 8, 8))?;
    for (xd, affine, running) in [
        (nchw(2, 3, 13, 11), true, true),
        (nchw(2, 3, 13, 11), false, true),
        (nchw(1, 5, 5, 7), true, false),
        (nchw(16, 8, 16, 16), false, false),
        (nchw(16, 8, 16, 16), true, true),
    ] {
        h.batch_norm(xd, affine, running)?;
    }
    h.layout(2, 5, 7, &[3, 1, 4])?;
    h.layout(1, 13, 11, &[2, 2])?;
    h.linear(1, 7, 3, true)?;
    h.linear(16, 37, 10, true)?;
    h.linear(5, 13, 11, false)?;
    h.softmax_ce(1, 10)?;
    h.softmax_ce(16, 10)?;
    h.softmax_ce(64, 10)?;
    h.step_scalars(&[1], 5.0)?;
    h.step_scalars(&[7, 70_001, 300], 5.0)?;
    h.step_scalars(&[33, 5], 1e9)?;
    h.mixed_op(8, 5 * 7 * 13, &[])?;
    h.mixed_op(8, 16 * 16 * 32 * 32 + 3, &[])?;
    h.mixed_op(1, 100, &[])?;
    h.mixed_op(16, 1000, &[])?;
    // Absent (`none`) inputs at odd lengths: the DARTS slot 0, several, the last of MAX_K.
    h.mixed_op(8, 5 * 7 * 13, &[0])?;
    h.mixed_op(8, 16 * 16 * 32 * 32 + 3, &[0])?;
    h.mixed_op(5, 1001, &[0, 3, 4])?;
    h.mixed_op(16, 999, &[15])?;
    h.optim(1)?;
    h.optim(70_001)?;
    // Multi-tensor: one table launch, and more tensors than one table holds (SGD 120, Adam
    // 96, norm 240 per launch on CUDA).
    h.optim_many(13)?;
    h.optim_many(301)?;
    Ok(h.rows)
}

/// Prints the rows as an aligned table with a closing count of failures.
pub fn print_table(rows: &[ParityRow]) {
    print!("{}", format_table(rows));
}

/// The table `print_table` prints.
pub fn format_table(rows: &[ParityRow]) -> String {
    use std::fmt::Write;
    let opw = rows.iter().map(|r| r.op.len()).max().unwrap_or(2).max(2);
    let shw = rows.iter().map(|r| r.shape.len()).max().unwrap_or(5).max(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<opw$}  {:<shw$}  {:>10}  {:>8}  result",
        "op", "shape", "max err", "tol"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<opw$}  {:<shw$}  {:>10.3e}  {:>8.1e}  {}",
            r.op,
            r.shape,
            r.max_err,
            r.tol,
            if r.passed { "ok" } else { "FAIL" }
        );
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    let _ = writeln!(
        s,
        "{} checks, {} failed (error = |dev - cpu| / (|cpu| + 1e-3 + 0.1 rms(cpu)))",
        rows.len(),
        failed
    );
    s
}

/// `Ok` when every row passed, else an error listing the failing rows.
pub fn all_passed(rows: &[ParityRow]) -> Result<()> {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} ({}): {:.3e} > {:.1e}", r.op, r.shape, r.max_err, r.tol))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(
            "parity",
            format!(
                "{} of {} checks failed: {}",
                bad.len(),
                rows.len(),
                bad.join("; ")
            ),
        ))
    }
}
