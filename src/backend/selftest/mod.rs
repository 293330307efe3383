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
//!
//! This file owns the harness (inputs, comparison, rows), the list of cases `run_parity` runs
//! and the report; the cases themselves live in one file per op family, named as the kernel
//! families (`kernels/*.cu`, `backend/cuda/*.rs`).

mod conv;
mod dense;
mod elementwise;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod pool;

use crate::backend::cpu::Cpu;
use crate::backend::prelude::*;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Nchw};

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
    let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    max_error_f64(&wide(dev), &wide(cpu))
}

/// [`max_error`] on f64 values: the one comparison of results against a reference in nasrs
/// (the device parity harness, and every test through `tests/common::assert_close_values`).
pub fn max_error_f64(got: &[f64], reference: &[f64]) -> f64 {
    if got.len() != reference.len() {
        return f64::INFINITY;
    }
    if reference.is_empty() {
        return 0.0;
    }
    let rms = (reference.iter().map(|&v| v.powi(2)).sum::<f64>() / reference.len() as f64).sqrt();
    let floor = 1e-3 + 0.1 * rms;
    let mut worst = 0.0f64;
    for (&a, &b) in got.iter().zip(reference) {
        if !a.is_finite() || !b.is_finite() {
            // Both NaN, or the same infinity (f32 NaN payloads differ once widened).
            if !(a.is_nan() && b.is_nan()) && a != b {
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
    Conv2dSpec::new(xd.c, out_c, k)
        .stride(stride)
        .padding(padding)
        .dilation(dilation)
        .groups(groups)
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
    // SE's channel scale: a 1x1 plane, odd planes, and planes longer than a block.
    for xd in [nchw(3, 5, 1, 1), nchw(2, 7, 13, 11), nchw(2, 3, 40, 37)] {
        h.channel_scale(xd)?;
    }
    // Depthwise (the DARTS sep / dil convs, MBConv's): k 3, 5 and 7, stride 1 and 2,
    // dilation 1 and 2.
    // General: stem 3x3, pointwise 1x1 (direct GEMM), 1x1 stride 2 (FactorizedReduce),
    // grouped, and k 5 dilated.
    let convs = [
        (nchw(2, 6, 13, 11), 6, 3, 1, 1, 1, 6),
        (nchw(1, 4, 13, 11), 4, 5, 2, 2, 1, 4),
        (nchw(3, 5, 5, 7), 5, 3, 1, 2, 2, 5),
        (nchw(2, 3, 13, 11), 3, 5, 2, 4, 2, 3),
        (nchw(2, 5, 13, 11), 5, 7, 1, 3, 1, 5),
        (nchw(2, 4, 15, 12), 4, 7, 2, 3, 1, 4),
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
        let spec = conv_spec(xd, o, k, s, p, d, g).relu_input();
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
