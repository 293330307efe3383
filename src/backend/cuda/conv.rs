//! Launchers for kernels/conv.cu and the cuBLAS GEMMs of the general convolution.
//! - depthwise: `dwconv2d_{fwd,bwd_data,bwd_weight}_f32` directly;
//! - 1x1, stride 1, no padding: one strided batched GEMM per group straight on the tensors;
//! - everything else: `im2col_f32` into a column buffer, then strided batched GEMMs over the
//!   batch (one call per group), and `col2im_f32` for the data gradient.
//!
//! Weight gradients of the GEMM path are per-sample GEMMs into a partial buffer summed over
//! the batch in sample order by `sum_batches_f32` (deterministic; no atomics).
//! A fused ReLU (`spec.relu_input`) is a kernel argument: the depthwise kernels and
//! `im2col_f32` read `relu(x)`, `dwconv2d_bwd_data_f32` / `col2im_f32` zero dx where
//! `x <= 0` as they write it (a NaN x stays NaN and passes its gradient, as the CPU twin).
//! cuBLAS cannot rectify its operand, so a fused 1x1 stride-1 conv takes the im2col path
//! (its column buffer is the transient rectified copy, freed in the op).
//! `conv2d_bwd_data_into` (dx += ..) is the same launches with the kernels' `accumulate`
//! flag set (masked contribution added) and beta 1 on the direct GEMM.

use super::driver::LaunchConfig;
use super::kernels;
use super::{cfg1d, int, Cuda, CudaBuf, Geom};
use crate::backend::{checks, ConvOps};
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Nchw};

// The output tile edge of `dwconv2d_fwd_f32`, generated from its #define.
use kernels::consts::TILE;

/// Shared memory a block may use without opting in (48 KiB).
const MAX_SMEM: usize = 48 * 1024;

fn geom(xd: Nchw, yd: Nchw, spec: &Conv2dSpec) -> Result<Geom> {
    Geom::new(
        xd,
        yd,
        spec.kernel,
        spec.stride,
        spec.padding,
        spec.dilation,
    )
}

fn direct(spec: &Conv2dSpec) -> bool {
    spec.kernel == 1 && spec.stride == 1 && spec.padding == 0 && !spec.relu_input
}

/// The fused-ReLU flag as the kernels' `int relu`.
fn relu_flag(spec: &Conv2dSpec) -> i32 {
    i32::from(spec.relu_input)
}

/// GEMM sizes of group convolution: (groups, in channels per group, out channels per
/// group, rows = cg*k*k, cols = ho*wo).
fn gemm_dims(spec: &Conv2dSpec, yd: Nchw) -> (usize, usize, usize, usize, usize) {
    let g = spec.groups;
    let (cg, og) = (spec.in_channels / g, spec.out_channels / g);
    (g, cg, og, cg * spec.kernel * spec.kernel, yd.plane())
}

/// The GEMM operand of a conv over `x` and its elements per sample: `x` itself for a direct
/// conv, else its im2col columns (the fused ReLU applied as they are gathered), kept in `col`.
fn gemm_operand<'a>(
    d: &Cuda,
    x: &'a CudaBuf,
    xd: Nchw,
    g: Geom,
    spec: &Conv2dSpec,
    cols: usize,
    col: &'a mut Option<CudaBuf>,
) -> Result<(&'a CudaBuf, usize)> {
    if direct(spec) {
        return Ok((x, xd.c * xd.plane()));
    }
    let per_sample = xd.c * spec.kernel * spec.kernel * cols;
    let columns = col.insert(im2col(d, x, g, relu_flag(spec), xd.n * per_sample)?);
    Ok((columns, per_sample))
}

fn im2col(d: &Cuda, x: &CudaBuf, g: Geom, relu: i32, len: usize) -> Result<CudaBuf> {
    // The kernel indexes the columns with an int product (n*c*k*k*ho*wo): 3.7e9 at n=128
    // c=256 3x3 112x112, which would wrap and leave the buffer unwritten.
    int(len)?;
    let mut col = d.alloc(len)?;
    // SAFETY: x holds g's n*c*h*w elements (checked by the callers), col `len` (alloc), the
    // kernel's n*c*k*k*ho*wo; int(len) above keeps its index products in range.
    unsafe {
        kernels::im2col_f32(
            d.drv(),
            cfg1d(len),
            g,
            relu,
            x.data.dev(),
            col.data.dev_mut(),
        )
    }?;
    Ok(col)
}

pub(super) fn conv2d_fwd(
    d: &Cuda,
    x: &CudaBuf,
    xd: Nchw,
    w: &CudaBuf,
    spec: &Conv2dSpec,
) -> Result<CudaBuf> {
    let yd = checks::conv2d_fwd(d, x, xd, w, spec)?;
    let g = geom(xd, yd, spec)?;
    let relu = relu_flag(spec);
    let mut y = d.alloc(yd.numel())?;
    if spec.is_depthwise() {
        // CUDA only: the tile this kernel stages in shared memory, and its grid, must fit.
        let in_edge = (TILE - 1) * spec.stride + (spec.kernel - 1) * spec.dilation + 1;
        let smem = (in_edge * in_edge + spec.kernel * spec.kernel) * 4;
        if smem > MAX_SMEM {
            return Err(Error::invalid(
                "conv2d",
                format!(
                    "depthwise kernel {} with stride {} and dilation {} needs {smem} bytes of shared memory (limit {MAX_SMEM})",
                    spec.kernel, spec.stride, spec.dilation
                ),
            ));
        }
        let planes = u32::try_from(xd.n * xd.c)
            .ok()
            .filter(|&p| p <= 65535)
            .ok_or_else(|| {
                Error::invalid(
                    "conv2d",
                    format!("{} planes exceed the 65535 grid limit", xd.n * xd.c),
                )
            })?;
        let cfg = LaunchConfig {
            grid_dim: (
                yd.w.div_ceil(TILE) as u32,
                yd.h.div_ceil(TILE) as u32,
                planes,
            ),
            block_dim: (TILE as u32, TILE as u32, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: x holds xd.numel() and w the weight shape's elements (checked), y
        // yd.numel() (alloc); smem is the tile the kernel stages (checked against the limit).
        unsafe {
            kernels::dwconv2d_fwd_f32(
                d.drv(),
                cfg,
                g,
                relu,
                x.data.dev(),
                w.data.dev(),
                y.data.dev_mut(),
            )
        }?;
        return Ok(y);
    }
    let (groups, cg, og, rows, cols) = gemm_dims(spec, yd);
    let mut col = None;
    let (src, src_sample) = gemm_operand(d, x, xd, g, spec, cols, &mut col)?;
    for gi in 0..groups {
        // y_g [og, cols] = w_g [og, rows] col_g [rows, cols]; column-major: y' = col' w'.
        let b_off = if direct(spec) {
            gi * cg * xd.plane()
        } else {
            gi * rows * cols
        };
        d.gemm(
            false,
            false,
            (cols, og, rows),
            (&src.data, b_off),
            cols,
            (&w.data, gi * og * rows),
            rows,
            0.0,
            (&mut y.data, gi * og * cols),
            cols,
            Some((xd.n, src_sample, 0, yd.c * cols)),
        )?;
    }
    Ok(y)
}

pub(super) fn conv2d_bwd_data(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    w: &CudaBuf,
    xd: Nchw,
    spec: &Conv2dSpec,
) -> Result<CudaBuf> {
    let yd = checks::conv2d_bwd_data(d, x, dy, w, xd, spec)?;
    let mut dx = d.alloc(xd.numel())?;
    bwd_data(d, x, dy, w, xd, spec, yd, &mut dx, false)?;
    Ok(dx)
}

/// `dx += ` the data gradient (the fused-ReLU mask on the contribution only).
pub(super) fn conv2d_bwd_data_into(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    w: &CudaBuf,
    xd: Nchw,
    spec: &Conv2dSpec,
    dx: &mut CudaBuf,
) -> Result<()> {
    let yd = checks::conv2d_bwd_data_into(d, x, dy, w, xd, spec, dx)?;
    bwd_data(d, x, dy, w, xd, spec, yd, dx, true)
}

/// The data gradient written into `dx`, or added to it with `accumulate` (the kernels'
/// `accumulate` flag; the direct GEMM's beta 1). The caller checked the operands.
#[allow(clippy::too_many_arguments)]
fn bwd_data(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    w: &CudaBuf,
    xd: Nchw,
    spec: &Conv2dSpec,
    yd: Nchw,
    dx: &mut CudaBuf,
    accumulate: bool,
) -> Result<()> {
    let g = geom(xd, yd, spec)?;
    let relu = relu_flag(spec);
    let acc = i32::from(accumulate);
    if spec.is_depthwise() {
        // SAFETY: dy and w hold yd.numel() and the weight's elements, dx xd.numel() (alloc,
        // or checked in the _into caller); x is read only with relu, when its length was
        // checked.
        unsafe {
            kernels::dwconv2d_bwd_data_f32(
                d.drv(),
                cfg1d(xd.numel()),
                g,
                relu,
                acc,
                x.data.dev(),
                dy.data.dev(),
                w.data.dev(),
                dx.data.dev_mut(),
            )
        }?;
        return Ok(());
    }
    let (groups, cg, og, rows, cols) = gemm_dims(spec, yd);
    let mut col = if direct(spec) {
        None
    } else {
        Some(d.alloc(xd.n * xd.c * spec.kernel * spec.kernel * cols)?)
    };
    for gi in 0..groups {
        // dcol_g [rows, cols] = w_g^T [rows, og] dy_g [og, cols]; column-major:
        // dcol' [cols, rows] = dy' [cols, og] * (w' [rows, og])^T.
        let dyv = (&dy.data, gi * og * cols);
        let wv = (&w.data, gi * og * rows);
        match col.as_mut() {
            None => {
                d.gemm(
                    false,
                    true,
                    (cols, rows, og),
                    dyv,
                    cols,
                    wv,
                    rows,
                    if accumulate { 1.0 } else { 0.0 },
                    (&mut dx.data, gi * cg * xd.plane()),
                    cols,
                    Some((xd.n, yd.c * cols, 0, xd.c * xd.plane())),
                )?;
            }
            Some(col) => {
                d.gemm(
                    false,
                    true,
                    (cols, rows, og),
                    dyv,
                    cols,
                    wv,
                    rows,
                    0.0,
                    (&mut col.data, gi * rows * cols),
                    cols,
                    Some((xd.n, yd.c * cols, 0, groups * rows * cols)),
                )?;
            }
        }
    }
    if let Some(col) = col {
        // SAFETY: col holds n*c*k*k*cols (alloc), dx xd.numel(); x as for the depthwise case.
        unsafe {
            kernels::col2im_f32(
                d.drv(),
                cfg1d(xd.numel()),
                g,
                relu,
                acc,
                x.data.dev(),
                col.data.dev(),
                dx.data.dev_mut(),
            )
        }?;
    }
    Ok(())
}

pub(super) fn conv2d_bwd_weight(
    d: &Cuda,
    x: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
    spec: &Conv2dSpec,
) -> Result<CudaBuf> {
    let yd = checks::conv2d_bwd_weight(d, x, dy, xd, spec)?;
    let g = geom(xd, yd, spec)?;
    let relu = relu_flag(spec);
    let wlen = spec.weight_shape().numel();
    let mut dw = d.alloc(wlen)?;
    if spec.is_depthwise() {
        let kk = (spec.kernel * spec.kernel) as u32;
        let cfg = LaunchConfig {
            grid_dim: (xd.c as u32, kk, 1),
            block_dim: (super::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: x and dy hold xd/yd.numel() (checked), dw c*k*k (alloc); the grid is
        // (c, k*k) blocks, one per weight.
        unsafe {
            kernels::dwconv2d_bwd_weight_f32(
                d.drv(),
                cfg,
                g,
                relu,
                x.data.dev(),
                dy.data.dev(),
                dw.data.dev_mut(),
            )
        }?;
        return Ok(dw);
    }
    let (groups, cg, og, rows, cols) = gemm_dims(spec, yd);
    let mut col = None;
    let (src, src_sample) = gemm_operand(d, x, xd, g, spec, cols, &mut col)?;
    // Per-sample weight gradients [n][wlen], then summed over samples in order.
    let mut parts = d.alloc(xd.n * wlen)?;
    for gi in 0..groups {
        // dw_g [og, rows] = dy_g [og, cols] col_g^T [cols, rows]; column-major:
        // dw' [rows, og] = (col' [cols, rows])^T dy' [cols, og].
        let b_off = if direct(spec) {
            gi * cg * xd.plane()
        } else {
            gi * rows * cols
        };
        d.gemm(
            true,
            false,
            (rows, og, cols),
            (&src.data, b_off),
            cols,
            (&dy.data, gi * og * cols),
            cols,
            0.0,
            (&mut parts.data, gi * og * rows),
            rows,
            Some((xd.n, src_sample, yd.c * cols, wlen)),
        )?;
    }
    let (batches, m) = (int(xd.n)?, int(wlen)?);
    // SAFETY: parts holds n * wlen (alloc), dw wlen.
    unsafe {
        kernels::sum_batches_f32(
            d.drv(),
            cfg1d(wlen),
            batches,
            m,
            parts.data.dev(),
            dw.data.dev_mut(),
        )
    }?;
    Ok(dw)
}

impl ConvOps for Cuda {
    fn conv2d_fwd(&self, x: &CudaBuf, xd: Nchw, w: &CudaBuf, spec: &Conv2dSpec) -> Result<CudaBuf> {
        conv2d_fwd(self, x, xd, w, spec)
    }
    fn conv2d_bwd_data(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        w: &CudaBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<CudaBuf> {
        conv2d_bwd_data(self, x, dy, w, xd, spec)
    }
    fn conv2d_bwd_data_into(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        w: &CudaBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        conv2d_bwd_data_into(self, x, dy, w, xd, spec, dx)
    }
    fn conv2d_bwd_weight(
        &self,
        x: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<CudaBuf> {
        conv2d_bwd_weight(self, x, dy, xd, spec)
    }
}
