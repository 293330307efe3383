//! Launchers for kernels/elementwise.cu: add, scale, axpy (also by a device scalar), fill,
//! scale_assign, relu, sigmoid, tanh, silu, mul, the bf16 conversions (`to_bf16`, `from_bf16`), drop_path, the SE channel scale, and the double-precision reductions behind `dot`,
//! `sum_squares` and the on-device gradient norm scalars.

use super::driver::{Dev, DevMut, DeviceSlice, Driver, LaunchConfig};
use super::kernels;
use super::{cfg1d, int, scalar_ptr, Cuda, CudaBuf, CudaHalf, BLOCK, ONE_BLOCK};
use crate::backend::{checks, norm_scalars, DeviceOps, ElementwiseOps, ScalarRef};
use crate::error::Result;
use crate::shape::Nchw;

/// Blocks of partial sums for the reductions: enough to fill the GPU, few enough for one
/// finishing block. Fixed per length, so the summation order (and result) is reproducible.
const REDUCE_BLOCKS: usize = 1024;

pub(super) fn add(d: &Cuda, a: &CudaBuf, b: &CudaBuf) -> Result<CudaBuf> {
    checks::add(d, a, b)?;
    let mut y = d.alloc(a.len)?;
    if a.len > 0 {
        let n = int(a.len)?;
        // SAFETY: a, b (checked) and y (alloc) hold n elements.
        unsafe {
            kernels::add_f32(
                d.drv(),
                cfg1d(a.len),
                n,
                a.data.dev(),
                b.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    Ok(y)
}

pub(super) fn scale(d: &Cuda, x: &CudaBuf, s: f64) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let (n, s) = (int(x.len)?, s as f32);
        // SAFETY: x and y (alloc) hold n elements.
        unsafe { kernels::scale_f32(d.drv(), cfg1d(x.len), n, s, x.data.dev(), y.data.dev_mut()) }?;
    }
    Ok(y)
}

pub(super) fn axpy(d: &Cuda, y: &mut CudaBuf, a: f64, x: &CudaBuf) -> Result<()> {
    checks::axpy(d, y, x)?;
    if x.len > 0 {
        let (n, a) = (int(x.len)?, a as f32);
        // SAFETY: x and y hold n elements (checked).
        unsafe { kernels::axpy_f32(d.drv(), cfg1d(x.len), n, a, x.data.dev(), y.data.dev_mut()) }?;
    }
    Ok(())
}

pub(super) fn scale_assign(d: &Cuda, x: &mut CudaBuf, s: f64) -> Result<()> {
    if x.len > 0 {
        let (n, s) = (int(x.len)?, s as f32);
        // SAFETY: x holds n elements.
        unsafe { kernels::scale_assign_f32(d.drv(), cfg1d(x.len), n, s, x.data.dev_mut()) }?;
    }
    Ok(())
}

pub(super) fn relu_fwd(d: &Cuda, x: &CudaBuf) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let n = int(x.len)?;
        // SAFETY: x and y (alloc) hold n elements.
        unsafe { kernels::relu_fwd_f32(d.drv(), cfg1d(x.len), n, x.data.dev(), y.data.dev_mut()) }?;
    }
    Ok(y)
}

/// A generated launcher of an `(n, x, y)` kernel.
type MapKernel =
    unsafe fn(&dyn Driver, LaunchConfig, i32, Dev<'_, f32>, DevMut<'_, f32>) -> Result<()>;
/// A generated launcher of an `(n, a, b, y)` kernel.
type ZipKernel = unsafe fn(
    &dyn Driver,
    LaunchConfig,
    i32,
    Dev<'_, f32>,
    Dev<'_, f32>,
    DevMut<'_, f32>,
) -> Result<()>;

/// `y = f(x)` by `kernel` into a fresh buffer (sigmoid, tanh, silu).
fn map(d: &Cuda, x: &CudaBuf, kernel: MapKernel) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let n = int(x.len)?;
        // SAFETY: x and y (alloc) hold n elements; `kernel` reads x[..n], writes y[..n].
        unsafe { kernel(d.drv(), cfg1d(x.len), n, x.data.dev(), y.data.dev_mut()) }?;
    }
    Ok(y)
}

/// `y = f(a, b)` by `kernel` into a fresh buffer, `a` and `b` of one length (checked by the
/// caller): the activations' backward and `mul`.
fn zip(d: &Cuda, a: &CudaBuf, b: &CudaBuf, kernel: ZipKernel) -> Result<CudaBuf> {
    let mut y = d.alloc(a.len)?;
    if a.len > 0 {
        let n = int(a.len)?;
        // SAFETY: a, b (checked by the caller) and y (alloc) hold n elements.
        unsafe {
            kernel(
                d.drv(),
                cfg1d(a.len),
                n,
                a.data.dev(),
                b.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    Ok(y)
}

/// Rounds to bf16 (nearest even) into a fresh u16 buffer.
pub(super) fn to_bf16(d: &Cuda, x: &CudaBuf) -> Result<CudaHalf> {
    let mut y = CudaHalf {
        data: d.scratch::<half::bf16>(x.len)?,
        len: x.len,
    };
    if x.len > 0 {
        let n = int(x.len)?;
        // SAFETY: x and y (scratch) hold n elements.
        unsafe { kernels::to_bf16_f32(d.drv(), cfg1d(x.len), n, x.data.dev(), y.data.dev_mut()) }?;
    }
    Ok(y)
}

/// Widens a bf16 buffer to f32 (exact).
pub(super) fn from_bf16(d: &Cuda, x: &CudaHalf) -> Result<CudaBuf> {
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let n = int(x.len)?;
        // SAFETY: x and y (alloc) hold n elements.
        unsafe {
            kernels::from_bf16_f32(d.drv(), cfg1d(x.len), n, x.data.dev(), y.data.dev_mut())
        }?;
    }
    Ok(y)
}

pub(super) fn relu_bwd(d: &Cuda, y: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
    checks::relu_bwd(d, y, dy)?;
    let mut dx = d.alloc(y.len)?;
    if y.len > 0 {
        let n = int(y.len)?;
        // SAFETY: y, dy (checked) and dx (alloc) hold n elements.
        unsafe {
            kernels::relu_bwd_f32(
                d.drv(),
                cfg1d(y.len),
                n,
                y.data.dev(),
                dy.data.dev(),
                dx.data.dev_mut(),
            )
        }?;
    }
    Ok(dx)
}

pub(super) fn drop_path(d: &Cuda, x: &CudaBuf, n: usize, scale: &CudaBuf) -> Result<CudaBuf> {
    checks::drop_path(d, x, n, scale)?;
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let (total, per) = (int(x.len)?, int(x.len / n)?);
        // SAFETY: x and y (alloc) hold `total` elements; scale holds one per sample
        // (checked) and total splits into n samples of `per` (checked).
        unsafe {
            kernels::drop_path_f32(
                d.drv(),
                cfg1d(x.len),
                total,
                per,
                x.data.dev(),
                scale.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    Ok(y)
}

pub(super) fn channel_scale_fwd(d: &Cuda, x: &CudaBuf, xd: Nchw, s: &CudaBuf) -> Result<CudaBuf> {
    checks::channel_scale_fwd(d, x, xd, s)?;
    let mut y = d.alloc(x.len)?;
    if x.len > 0 {
        let (total, plane) = (int(x.len)?, int(xd.plane())?);
        // SAFETY: x and y (alloc) hold `total` = n*c*plane elements, s one per plane (checked).
        unsafe {
            kernels::channel_scale_fwd_f32(
                d.drv(),
                cfg1d(x.len),
                total,
                plane,
                x.data.dev(),
                s.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    Ok(y)
}

pub(super) fn channel_scale_bwd(
    d: &Cuda,
    x: &CudaBuf,
    s: &CudaBuf,
    dy: &CudaBuf,
    xd: Nchw,
) -> Result<(CudaBuf, CudaBuf)> {
    checks::channel_scale_bwd(d, x, s, dy, xd)?;
    let planes = xd.n * xd.c;
    let mut dx = d.alloc(x.len)?;
    // An empty plane has ds = 0 (the kernel would not run for it).
    let mut ds = d.zeros(planes)?;
    if planes > 0 && xd.plane() > 0 {
        let plane = int(xd.plane())?;
        // CUDA only: one block per plane, within the grid's limit.
        let blocks = u32::try_from(planes).map_err(|_| {
            crate::error::Error::invalid("channel_scale_bwd", format!("{planes} planes"))
        })?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: x, dy (checked) and dx (alloc) hold planes * plane elements, s and ds
        // (checked, zeros) one per plane; one block per plane.
        unsafe {
            kernels::channel_scale_bwd_f32(
                d.drv(),
                cfg,
                plane,
                x.data.dev(),
                s.data.dev(),
                dy.data.dev(),
                dx.data.dev_mut(),
                ds.data.dev_mut(),
            )
        }?;
    }
    Ok((dx, ds))
}

use kernels::consts::NORM_MANY_TENSORS;
use kernels::NormTable;

/// Per-block partial sums of squares of every buffer, written into one array: buffer by
/// buffer, the blocks a `dot_f32` launch on that buffer alone would have
/// (`min(ceil(len / BLOCK), REDUCE_BLOCKS)`, each summing the same elements in the same
/// order), but computed by one `square_partials_f32` launch per `NORM_MANY_TENSORS` buffers.
/// Returns the partials and their count (0 when every buffer is empty).
fn square_partials(d: &Cuda, xs: &[&CudaBuf]) -> Result<(DeviceSlice<f64>, usize)> {
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
            table.x[k] = xs[i].data.addr();
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
        // SAFETY: each table entry's len is its buffer's length; partials holds `total` blocks
        // and base + nb <= total (blocks summed above).
        unsafe { kernels::square_partials_f32(d.drv(), cfg, table, partials.dev_mut()) }?;
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
    // SAFETY: partials holds `count` doubles, out one.
    unsafe {
        kernels::reduce_finish_f64(d.drv(), ONE_BLOCK, count, partials.dev(), out.dev_mut())
    }?;
    let mut host = [0.0f64];
    out.download_into(&mut host)?;
    Ok(host[0])
}

/// The global norm scalars (`norm_scalars` layout) of every buffer, left on the device: the
/// partials of `sum_squares_many`, finished by `norm_scalars_finish_f32`.
pub(super) fn grad_norm_scalars(d: &Cuda, xs: &[&CudaBuf], max_norm: f64) -> Result<CudaBuf> {
    let (partials, total) = square_partials(d, xs)?;
    let mut out = d.alloc(norm_scalars::LEN)?;
    let count = int(total)?;
    // SAFETY: partials holds `count` doubles, out norm_scalars::LEN floats.
    unsafe {
        kernels::norm_scalars_finish_f32(
            d.drv(),
            ONE_BLOCK,
            count,
            partials.dev(),
            max_norm,
            out.data.dev_mut(),
        )
    }?;
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
    checks::axpy_scaled(d, y, s, x)?;
    let sp = scalar_ptr(&s)?;
    if x.len > 0 {
        let (n, a) = (int(x.len)?, a as f32);
        // SAFETY: x and y hold n elements, sp is an element of its buffer (checked).
        unsafe {
            kernels::axpy_scaled_f32(
                d.drv(),
                cfg1d(x.len),
                n,
                a,
                sp,
                x.data.dev(),
                y.data.dev_mut(),
            )
        }?;
    }
    Ok(())
}

/// A new buffer of `len` copies of `value`, written by a kernel (no upload).
pub(super) fn fill(d: &Cuda, len: usize, value: f64) -> Result<CudaBuf> {
    let mut y = d.alloc(len)?;
    if len > 0 {
        let (n, v) = (int(len)?, value as f32);
        // SAFETY: y (alloc) holds n elements.
        unsafe { kernels::fill_f32(d.drv(), cfg1d(len), n, v, y.data.dev_mut()) }?;
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
    // SAFETY: a and b hold n elements (checks::dot in the caller); partials one double per
    // block of the grid.
    unsafe {
        kernels::dot_f32(
            d.drv(),
            cfg,
            n,
            a.data.dev(),
            b.data.dev(),
            partials.dev_mut(),
        )
    }?;
    // SAFETY: partials holds `count` doubles, out one.
    unsafe {
        kernels::reduce_finish_f64(d.drv(), ONE_BLOCK, count, partials.dev(), out.dev_mut())
    }?;
    let mut host = [0.0f64];
    out.download_into(&mut host)?;
    Ok(host[0])
}

impl ElementwiseOps for Cuda {
    fn fill(&self, len: usize, value: f64) -> Result<CudaBuf> {
        fill(self, len, value)
    }
    fn add(&self, a: &CudaBuf, b: &CudaBuf) -> Result<CudaBuf> {
        add(self, a, b)
    }
    fn scale(&self, x: &CudaBuf, s: f64) -> Result<CudaBuf> {
        scale(self, x, s)
    }
    fn axpy(&self, y: &mut CudaBuf, a: f64, x: &CudaBuf) -> Result<()> {
        axpy(self, y, a, x)
    }
    fn scale_assign(&self, x: &mut CudaBuf, s: f64) -> Result<()> {
        scale_assign(self, x, s)
    }
    fn axpy_scaled(
        &self,
        y: &mut CudaBuf,
        a: f64,
        s: ScalarRef<'_, CudaBuf>,
        x: &CudaBuf,
    ) -> Result<()> {
        axpy_scaled(self, y, a, s, x)
    }
    fn grad_norm_scalars(&self, xs: &[&CudaBuf], max_norm: f64) -> Result<CudaBuf> {
        grad_norm_scalars(self, xs, max_norm)
    }
    fn sum_squares(&self, x: &CudaBuf) -> Result<f64> {
        dot(self, x, x)
    }
    fn sum_squares_many(&self, xs: &[&CudaBuf]) -> Result<f64> {
        sum_squares_many(self, xs)
    }
    fn dot(&self, a: &CudaBuf, b: &CudaBuf) -> Result<f64> {
        checks::dot(self, a, b)?;
        dot(self, a, b)
    }
    fn relu_fwd(&self, x: &CudaBuf) -> Result<CudaBuf> {
        relu_fwd(self, x)
    }
    fn relu_bwd(&self, y: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
        relu_bwd(self, y, dy)
    }
    fn sigmoid_fwd(&self, x: &CudaBuf) -> Result<CudaBuf> {
        map(self, x, kernels::sigmoid_fwd_f32)
    }
    fn sigmoid_bwd(&self, y: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
        checks::sigmoid_bwd(self, y, dy)?;
        zip(self, y, dy, kernels::sigmoid_bwd_f32)
    }
    fn tanh_fwd(&self, x: &CudaBuf) -> Result<CudaBuf> {
        map(self, x, kernels::tanh_fwd_f32)
    }
    fn tanh_bwd(&self, y: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
        checks::tanh_bwd(self, y, dy)?;
        zip(self, y, dy, kernels::tanh_bwd_f32)
    }
    fn silu_fwd(&self, x: &CudaBuf) -> Result<CudaBuf> {
        map(self, x, kernels::silu_fwd_f32)
    }
    fn silu_bwd(&self, x: &CudaBuf, dy: &CudaBuf) -> Result<CudaBuf> {
        checks::silu_bwd(self, x, dy)?;
        zip(self, x, dy, kernels::silu_bwd_f32)
    }
    fn mul(&self, a: &CudaBuf, b: &CudaBuf) -> Result<CudaBuf> {
        checks::mul(self, a, b)?;
        zip(self, a, b, kernels::mul_f32)
    }
    fn to_bf16(&self, x: &CudaBuf) -> Result<CudaHalf> {
        to_bf16(self, x)
    }
    fn from_bf16(&self, x: &CudaHalf) -> Result<CudaBuf> {
        from_bf16(self, x)
    }
    fn half_len(&self, x: &CudaHalf) -> usize {
        x.len
    }
    fn drop_path(&self, x: &CudaBuf, n: usize, sample_scale: &CudaBuf) -> Result<CudaBuf> {
        drop_path(self, x, n, sample_scale)
    }
    fn channel_scale_fwd(&self, x: &CudaBuf, xd: Nchw, s: &CudaBuf) -> Result<CudaBuf> {
        channel_scale_fwd(self, x, xd, s)
    }
    fn channel_scale_bwd(
        &self,
        x: &CudaBuf,
        s: &CudaBuf,
        dy: &CudaBuf,
        xd: Nchw,
    ) -> Result<(CudaBuf, CudaBuf)> {
        channel_scale_bwd(self, x, s, dy, xd)
    }
}
