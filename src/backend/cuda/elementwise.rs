//! Launchers for kernels/elementwise.cu: add, scale, axpy (also by a device scalar), fill,
//! scale_assign, relu, the bf16 conversions (`to_bf16`, `from_bf16`), drop_path, and the double-precision reductions behind `dot`,
//! `sum_squares` and the on-device gradient norm scalars.

use super::{
    cfg1d, expect_len, int, same_len, scalar_ptr, CuResult, Cuda, CudaBuf, CudaHalf, BLOCK,
    ONE_BLOCK,
};
use crate::backend::{norm_scalars, ScalarRef};
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

/// Blocks of partial sums for the reductions: enough to fill the GPU, few enough for one
/// finishing block. Fixed per length, so the summation order (and result) is reproducible.
const REDUCE_BLOCKS: usize = 1024;

pub(super) fn add(d: &Cuda, a: &CudaBuf, b: &CudaBuf) -> Result<CudaBuf> {
    same_len("add", a, b)?;
    let mut y = d.alloc(a.len)?;
    if a.len > 0 {
        let n = int(a.len)?;
        unsafe {
            d.stream()
                .launch_builder(d.func("add_f32")?)
                .arg(&n)
                .arg(&a.data)
                .arg(&b.data)
                .arg(&mut y.data)
                .launch(cfg1d(a.len))
        }
        .cu("add_f32")?;
    }
    Ok(y)
}

pub(super) fn scale(d: &Cuda, x: &CudaBuf, s: f64) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let (n, s) = (int(x.len)?, s as f32);
        unsafe {
            d.stream()
                .launch_builder(d.func("scale_f32")?)
                .arg(&n)
                .arg(&s)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("scale_f32")?;
    }
    Ok(y)
}

pub(super) fn axpy(d: &Cuda, y: &mut CudaBuf, a: f64, x: &CudaBuf) -> Result<()> {
    same_len("axpy", y, x)?;
    if x.len > 0 {
        let (n, a) = (int(x.len)?, a as f32);
        unsafe {
            d.stream()
                .launch_builder(d.func("axpy_f32")?)
                .arg(&n)
                .arg(&a)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("axpy_f32")?;
    }
    Ok(())
}

pub(super) fn scale_assign(d: &Cuda, x: &mut CudaBuf, s: f64) -> Result<()> {
    if x.len > 0 {
        let (n, s) = (int(x.len)?, s as f32);
        unsafe {
            d.stream()
                .launch_builder(d.func("scale_assign_f32")?)
                .arg(&n)
                .arg(&s)
                .arg(&mut x.data)
                .launch(cfg1d(x.len))
        }
        .cu("scale_assign_f32")?;
    }
    Ok(())
}

pub(super) fn relu_fwd(d: &Cuda, x: &CudaBuf) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let n = int(x.len)?;
        unsafe {
            d.stream()
                .launch_builder(d.func("relu_fwd_f32")?)
                .arg(&n)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("relu_fwd_f32")?;
    }
    Ok(y)
}

/// Rounds to bf16 (nearest even) into a fresh u16 buffer.
pub(super) fn to_bf16(d: &Cuda, x: &CudaBuf) -> Result<CudaHalf> {
    let mut y = CudaHalf {
        data: d.scratch::<u16>(x.len)?,
        len: x.len,
    };
    if x.len > 0 {
        let n = int(x.len)?;
        unsafe {
            d.stream()
                .launch_builder(d.func("to_bf16_f32")?)
                .arg(&n)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("to_bf16_f32")?;
    }
    Ok(y)
}

/// Widens a bf16 buffer to f32 (exact).
pub(super) fn from_bf16(d: &Cuda, x: &CudaHalf) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let n = int(x.len)?;
        unsafe {
            d.stream()
                .launch_builder(d.func("from_bf16_f32")?)
                .arg(&n)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("from_bf16_f32")?;
    }
    Ok(y)
}

pub(super) fn relu_bwd(d: &Cuda, y: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
    same_len("relu_bwd", y, dy)?;
    let mut dx = d.alloc(y.len)?;
    if y.len > 0 {
        let n = int(y.len)?;
        unsafe {
            d.stream()
                .launch_builder(d.func("relu_bwd_f32")?)
                .arg(&n)
                .arg(&y.data)
                .arg(&dy.data)
                .arg(&mut dx.data)
                .launch(cfg1d(y.len))
        }
        .cu("relu_bwd_f32")?;
    }
    Ok(dx)
}

pub(super) fn drop_path(d: &Cuda, x: &CudaBuf, n: usize, scale: &CudaBuf) -> Result<CudaBuf> {
    expect_len("drop_path", "sample scale", scale, n)?;
    if n == 0 || x.len % n != 0 {
        return Err(Error::shape(
            "drop_path",
            format!("{} elements do not split into {n} samples", x.len),
        ));
    }
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let (total, per) = (int(x.len)?, int(x.len / n)?);
        unsafe {
            d.stream()
                .launch_builder(d.func("drop_path_f32")?)
                .arg(&total)
                .arg(&per)
                .arg(&x.data)
                .arg(&scale.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("drop_path_f32")?;
    }
    Ok(y)
}

/// Buffers per `square_partials_f32` launch (`NORM_MANY_TENSORS` in kernels/elementwise.cu).
const NORM_MANY_TENSORS: usize = 240;

/// `struct NormTable` in kernels/elementwise.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct NormTable {
    x: [u64; NORM_MANY_TENSORS],
    len: [i32; NORM_MANY_TENSORS],
    block_start: [i32; NORM_MANY_TENSORS + 1],
    count: i32,
    base: i32,
}
unsafe impl DeviceRepr for NormTable {}
// The argument size nvcc gives `struct NormTable` (`.param .b8 square_partials_f32_param_0[3856]`).
const _: () = assert!(std::mem::size_of::<NormTable>() == 3856);

/// Per-block partial sums of squares of every buffer, written into one array: buffer by
/// buffer, the blocks a `dot_f32` launch on that buffer alone would have
/// (`min(ceil(len / BLOCK), REDUCE_BLOCKS)`, each summing the same elements in the same
/// order), but computed by one `square_partials_f32` launch per `NORM_MANY_TENSORS` buffers.
/// Returns the partials and their count (0 when every buffer is empty).
fn square_partials(d: &Cuda, xs: &[&CudaBuf]) -> Result<(CudaSlice<f64>, usize)> {
    let blocks: Vec<usize> = xs
        .iter()
        .map(|x| x.len.div_ceil(BLOCK as usize).min(REDUCE_BLOCKS))
        .collect();
    let total: usize = blocks.iter().sum();
    let mut partials = d.scratch::<f64>(total)?;
    // Empty buffers have no partials: they are left out of the tables.
    let live: Vec<usize> = (0..xs.len()).filter(|&i| blocks[i] > 0).collect();
    let mut base = 0usize;
    for group in live.chunks(NORM_MANY_TENSORS) {
        let mut table = NormTable {
            x: [0; NORM_MANY_TENSORS],
            len: [0; NORM_MANY_TENSORS],
            block_start: [0; NORM_MANY_TENSORS + 1],
            count: int(group.len())?,
            base: int(base)?,
        };
        let mut nb = 0usize;
        for (k, &i) in group.iter().enumerate() {
            table.x[k] = d.ptr(Some(xs[i]));
            table.len[k] = int(xs[i].len)?;
            table.block_start[k] = int(nb)?;
            nb += blocks[i];
        }
        table.block_start[group.len()] = int(nb)?;
        let cfg = LaunchConfig {
            grid_dim: (nb as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe {
            d.stream()
                .launch_builder(d.func("square_partials_f32")?)
                .arg(&table)
                .arg(&mut partials)
                .launch(cfg)
        }
        .cu("square_partials_f32")?;
        base += nb;
    }
    Ok((partials, total))
}

/// Sum of squares over every buffer: per-block partials for each, then one
/// `reduce_finish_f64` adds them all, one synchronisation.
pub(super) fn sum_squares_many(d: &Cuda, xs: &[&CudaBuf]) -> Result<f64> {
    let (partials, total) = square_partials(d, xs)?;
    if total == 0 {
        return Ok(0.0);
    }
    let mut out = d.scratch::<f64>(1)?;
    let count = int(total)?;
    unsafe {
        d.stream()
            .launch_builder(d.func("reduce_finish_f64")?)
            .arg(&count)
            .arg(&partials)
            .arg(&mut out)
            .launch(ONE_BLOCK)
    }
    .cu("reduce_finish_f64")?;
    let host = d
        .stream()
        .clone_dtoh(&out)
        .cu("sum_squares_many download")?;
    d.stream()
        .synchronize()
        .cu("sum_squares_many synchronize")?;
    Ok(host.first().copied().unwrap_or(0.0))
}

/// The global norm scalars (`norm_scalars` layout) of every buffer, left on the device: the
/// partials of `sum_squares_many`, finished by `norm_scalars_finish_f32`.
pub(super) fn grad_norm_scalars(d: &Cuda, xs: &[&CudaBuf], max_norm: f64) -> Result<CudaBuf> {
    let (partials, total) = square_partials(d, xs)?;
    let mut out = d.alloc(norm_scalars::LEN)?;
    let count = int(total)?;
    unsafe {
        d.stream()
            .launch_builder(d.func("norm_scalars_finish_f32")?)
            .arg(&count)
            .arg(&partials)
            .arg(&max_norm)
            .arg(&mut out.data)
            .launch(ONE_BLOCK)
    }
    .cu("norm_scalars_finish_f32")?;
    Ok(out)
}

/// `y += a * s * x` with `s` read on the device.
pub(super) fn axpy_scaled(
    d: &Cuda,
    y: &mut CudaBuf,
    a: f64,
    s: ScalarRef<'_, CudaBuf>,
    x: &CudaBuf,
) -> Result<()> {
    same_len("axpy_scaled", y, x)?;
    let sp = scalar_ptr(d, "axpy_scaled", &s)?;
    if x.len > 0 {
        let (n, a) = (int(x.len)?, a as f32);
        unsafe {
            d.stream()
                .launch_builder(d.func("axpy_scaled_f32")?)
                .arg(&n)
                .arg(&a)
                .arg(&sp)
                .arg(&x.data)
                .arg(&mut y.data)
                .launch(cfg1d(x.len))
        }
        .cu("axpy_scaled_f32")?;
    }
    Ok(())
}

/// A new buffer of `len` copies of `value`, written by a kernel (no upload).
pub(super) fn fill(d: &Cuda, len: usize, value: f64) -> Result<CudaBuf> {
    let mut y = d.alloc(len)?;
    if len > 0 {
        let (n, v) = (int(len)?, value as f32);
        unsafe {
            d.stream()
                .launch_builder(d.func("fill_f32")?)
                .arg(&n)
                .arg(&v)
                .arg(&mut y.data)
                .launch(cfg1d(len))
        }
        .cu("fill_f32")?;
    }
    Ok(y)
}

/// `sum(a * b)` in double, returned to the host (a synchronisation point).
pub(super) fn dot(d: &Cuda, a: &CudaBuf, b: &CudaBuf) -> Result<f64> {
    if a.len == 0 {
        return Ok(0.0);
    }
    let blocks = a.len.div_ceil(BLOCK as usize).min(REDUCE_BLOCKS);
    let mut partials = d.scratch::<f64>(blocks)?;
    let mut out = d.scratch::<f64>(1)?;
    let (n, count) = (int(a.len)?, int(blocks)?);
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe {
        d.stream()
            .launch_builder(d.func("dot_f32")?)
            .arg(&n)
            .arg(&a.data)
            .arg(&b.data)
            .arg(&mut partials)
            .launch(cfg)
    }
    .cu("dot_f32")?;
    unsafe {
        d.stream()
            .launch_builder(d.func("reduce_finish_f64")?)
            .arg(&count)
            .arg(&partials)
            .arg(&mut out)
            .launch(ONE_BLOCK)
    }
    .cu("reduce_finish_f64")?;
    let host = d.stream().clone_dtoh(&out).cu("dot download")?;
    d.stream().synchronize().cu("dot synchronize")?;
    Ok(host.first().copied().unwrap_or(0.0))
}
