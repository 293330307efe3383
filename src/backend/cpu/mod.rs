//! The CPU backend: the reference every other device is checked against, and a product in
//! its own right for users without a GPU. Generic over the element type so that the gradient
//! checks can run the very same kernels in f64. Uses every core through rayon; results do
//! not depend on the number of threads (reductions run over fixed chunks in a fixed order).

mod conv;
mod dense;
mod mixed_op;
mod norm;
mod pool;

use crate::backend::{
    same_count, AdamStep, Backend, BatchNormSaved, Element, RunningStats, ScalarRef, SgdStep,
};
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Nchw, Pool2dSpec, PoolKind};
use rayon::prelude::*;
use std::marker::PhantomData;

/// Samples per partial sum in batch reductions (weight gradients).
const SAMPLES_PER_CHUNK: usize = 4;
/// Elements per rayon task in elementwise ops; below this, one task.
const ELEMS_PER_TASK: usize = 1 << 15;

/// The CPU backend for element type `T` (`Cpu` = `Cpu<f32>`).
pub struct Cpu<T: Element = f32>(PhantomData<T>);

impl<T: Element> Cpu<T> {
    pub fn new() -> Self {
        Cpu(PhantomData)
    }
}
impl<T: Element> Default for Cpu<T> {
    fn default() -> Self {
        Self::new()
    }
}
impl<T: Element> Clone for Cpu<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

/// Runs `f(plane_index, plane)` over consecutive planes of `buf` in parallel, batching small
/// planes so that each task has enough work.
pub(crate) fn par_planes<T: Send>(
    buf: &mut [T],
    plane: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if plane == 0 {
        return;
    }
    let per_task = (ELEMS_PER_TASK / 8 / plane).max(1);
    buf.par_chunks_mut(plane * per_task)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (i, p) in chunk.chunks_mut(plane).enumerate() {
                f(t * per_task + i, p);
            }
        });
}

/// `out[i] = f(a[i], b[i])` in parallel, written straight into the new vector.
fn zip_map<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(ELEMS_PER_TASK)
        .map(|(&x, &y)| f(x, y))
        .collect()
}

/// Sum over fixed chunks of `f(i)`-style products in f64, in order (deterministic).
fn chunked_sum<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64 + Sync + Send) -> f64 {
    let partials: Vec<f64> = a
        .par_chunks(ELEMS_PER_TASK)
        .zip(b.par_chunks(ELEMS_PER_TASK))
        .map(|(a, b)| a.iter().zip(b).map(|(&x, &y)| f(x, y)).sum())
        .collect();
    partials.iter().sum()
}

fn same_len<T>(op: &'static str, a: &[T], b: &[T]) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::shape(
            op,
            format!("buffers of {} and {} elements", a.len(), b.len()),
        ));
    }
    Ok(())
}

fn expect_len<T>(op: &'static str, what: &str, buf: &[T], len: usize) -> Result<()> {
    if buf.len() != len {
        return Err(Error::shape(
            op,
            format!("{what} has {} elements, expected {len}", buf.len()),
        ));
    }
    Ok(())
}

/// `s.buf[s.index]`, or a shape error naming `op`.
fn scalar_at<T: Element>(op: &'static str, s: &ScalarRef<'_, Vec<T>>) -> Result<T> {
    s.buf.get(s.index).copied().ok_or_else(|| {
        Error::shape(
            op,
            format!("scalar index {} in a buffer of {}", s.index, s.buf.len()),
        )
    })
}

/// The MixedOp's inputs as slices, checked (`crate::backend::check_mixed_op`).
fn mixed_op_inputs<'a, T>(
    op: &'static str,
    xs: &[Option<&'a Vec<T>>],
    alpha: &[T],
    len: usize,
) -> Result<Vec<Option<&'a [T]>>> {
    crate::backend::check_mixed_op(op, xs.iter().map(|x| x.map(|v| v.len())), alpha.len(), len)?;
    Ok(xs.iter().map(|x| x.map(Vec::as_slice)).collect())
}

impl<T: Element> Backend for Cpu<T> {
    type Elem = T;
    type Storage = Vec<T>;
    type Labels = Vec<u32>;
    /// The CPU has no graphs: `capture` answers `None` and steps run eagerly.
    type Graph = ();
    type Half = Vec<half::bf16>;

    fn device_name(&self) -> String {
        format!(
            "cpu ({} threads, {})",
            rayon::current_num_threads(),
            T::NAME
        )
    }

    fn zeros(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; len])
    }
    fn upload(&self, host: &[T]) -> Result<Vec<T>> {
        Ok(host.to_vec())
    }
    fn download(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }
    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn storage_addr(&self, buf: &Vec<T>) -> usize {
        buf.as_ptr() as usize
    }
    fn labels_addr(&self, labels: &Vec<u32>) -> usize {
        labels.as_ptr() as usize
    }
    fn copy(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }
    fn copy_into(&self, dst: &mut Vec<T>, src: &Vec<T>) -> Result<()> {
        same_len("copy_into", dst, src)?;
        dst.copy_from_slice(src);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn upload_into(&self, dst: &mut Vec<T>, host: &[T]) -> Result<()> {
        expect_len("upload_into", "destination", dst, host.len())?;
        dst.copy_from_slice(host);
        Ok(())
    }
    fn fill(&self, len: usize, value: f64) -> Result<Vec<T>> {
        Ok(vec![T::from_f64(value); len])
    }

    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<Vec<u32>> {
        crate::backend::check_labels(labels, labels.len(), classes)?;
        Ok(labels.to_vec())
    }
    fn upload_labels_into(&self, dst: &mut Vec<u32>, labels: &[u32], classes: usize) -> Result<()> {
        crate::backend::check_labels(labels, dst.len(), classes)?;
        dst.copy_from_slice(labels);
        Ok(())
    }
    fn labels_len(&self, labels: &Vec<u32>) -> usize {
        labels.len()
    }

    fn add(&self, a: &Vec<T>, b: &Vec<T>) -> Result<Vec<T>> {
        same_len("add", a, b)?;
        Ok(zip_map(a, b, |x, y| x + y))
    }
    fn scale(&self, x: &Vec<T>, s: f64) -> Result<Vec<T>> {
        let s = T::from_f64(s);
        Ok(zip_map(x, x, |v, _| v * s))
    }
    fn axpy(&self, y: &mut Vec<T>, a: f64, x: &Vec<T>) -> Result<()> {
        same_len("axpy", y, x)?;
        let a = T::from_f64(a);
        y.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y += a * x;
                }
            });
        Ok(())
    }
    fn axpy_scaled(
        &self,
        y: &mut Vec<T>,
        a: f64,
        s: ScalarRef<'_, Vec<T>>,
        x: &Vec<T>,
    ) -> Result<()> {
        let scalar = scalar_at("axpy_scaled", &s)?;
        self.axpy(y, a * scalar.to_f64(), x)
    }
    fn scale_assign(&self, x: &mut Vec<T>, s: f64) -> Result<()> {
        let s = T::from_f64(s);
        x.par_chunks_mut(ELEMS_PER_TASK)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= s));
        Ok(())
    }
    fn sum_squares(&self, x: &Vec<T>) -> Result<f64> {
        Ok(chunked_sum(x, x, |a, _| a.to_f64() * a.to_f64()))
    }
    /// One rayon pass over every buffer's fixed chunks (tiny buffers grouped into tasks),
    /// then each buffer's partials and the buffers added in order: the very sums of
    /// `sum_squares` per buffer, added as the default does, so the result is bitwise equal.
    fn sum_squares_many(&self, xs: &[&Vec<T>]) -> Result<f64> {
        let square = |c: &[T]| -> f64 { c.iter().map(|&a| a.to_f64() * a.to_f64()).sum() };
        let pieces = xs
            .iter()
            .flat_map(|x| x.chunks(ELEMS_PER_TASK).map(|c| (c.len(), c)));
        let partials: Vec<f64> = group_tasks(pieces)
            .into_par_iter()
            .map(|task| task.into_iter().map(square).collect::<Vec<f64>>())
            .collect::<Vec<_>>()
            .concat();
        let mut sq = 0.0;
        let mut off = 0;
        for x in xs {
            let n = x.len().div_ceil(ELEMS_PER_TASK);
            sq += partials[off..off + n].iter().sum::<f64>();
            off += n;
        }
        Ok(sq)
    }
    fn dot(&self, a: &Vec<T>, b: &Vec<T>) -> Result<f64> {
        same_len("dot", a, b)?;
        Ok(chunked_sum(a, b, |x, y| x.to_f64() * y.to_f64()))
    }
    /// PyTorch's rule: NaN stays NaN (`v <= 0`, not `!(v > 0)`, selects the zero).
    fn relu_fwd(&self, x: &Vec<T>) -> Result<Vec<T>> {
        Ok(zip_map(x, x, |v, _| if v <= T::ZERO { T::ZERO } else { v }))
    }
    /// `threshold_backward(dy, y, 0)`: a NaN output passes its gradient, as in PyTorch.
    fn relu_bwd(&self, y: &Vec<T>, dy: &Vec<T>) -> Result<Vec<T>> {
        same_len("relu_bwd", y, dy)?;
        Ok(zip_map(
            y,
            dy,
            |v, g| if v <= T::ZERO { T::ZERO } else { g },
        ))
    }

    /// `half`'s conversion, which rounds to nearest even. An f64 element is rounded to f32
    /// first (exact for the f32 product; the f64 gradient checks never use bf16).
    fn to_bf16(&self, x: &Vec<T>) -> Result<Vec<half::bf16>> {
        Ok(x.par_iter()
            .with_min_len(ELEMS_PER_TASK)
            .map(|&v| half::bf16::from_f32(v.to_f64() as f32))
            .collect())
    }
    fn from_bf16(&self, x: &Vec<half::bf16>) -> Result<Vec<T>> {
        Ok(x.par_iter()
            .with_min_len(ELEMS_PER_TASK)
            .map(|&h| T::from_f64(h.to_f64()))
            .collect())
    }
    fn half_len(&self, x: &Vec<half::bf16>) -> usize {
        x.len()
    }

    fn conv2d_fwd(&self, x: &Vec<T>, xd: Nchw, w: &Vec<T>, spec: &Conv2dSpec) -> Result<Vec<T>> {
        let yd = spec.output(xd)?;
        expect_len("conv2d_fwd", "input", x, xd.numel())?;
        expect_len("conv2d_fwd", "weight", w, spec.weight_shape().numel())?;
        Ok(conv::conv2d_fwd(x, xd, w, spec, yd))
    }
    fn conv2d_bwd_data(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        w: &Vec<T>,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Vec<T>> {
        let yd = spec.output(xd)?;
        if spec.relu_input {
            expect_len("conv2d_bwd_data", "input", x, xd.numel())?;
        }
        expect_len("conv2d_bwd_data", "output gradient", dy, yd.numel())?;
        expect_len("conv2d_bwd_data", "weight", w, spec.weight_shape().numel())?;
        Ok(conv::conv2d_bwd_data(x, dy, w, xd, spec, yd))
    }
    fn conv2d_bwd_data_into(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        w: &Vec<T>,
        xd: Nchw,
        spec: &Conv2dSpec,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        let yd = spec.output(xd)?;
        if spec.relu_input {
            expect_len("conv2d_bwd_data_into", "input", x, xd.numel())?;
        }
        expect_len("conv2d_bwd_data_into", "output gradient", dy, yd.numel())?;
        expect_len(
            "conv2d_bwd_data_into",
            "weight",
            w,
            spec.weight_shape().numel(),
        )?;
        expect_len("conv2d_bwd_data_into", "accumulator", dx, xd.numel())?;
        conv::conv2d_bwd_data_into(x, dy, w, xd, spec, yd, dx, true);
        Ok(())
    }
    fn conv2d_bwd_weight(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Vec<T>> {
        let yd = spec.output(xd)?;
        expect_len("conv2d_bwd_weight", "input", x, xd.numel())?;
        expect_len("conv2d_bwd_weight", "output gradient", dy, yd.numel())?;
        Ok(conv::conv2d_bwd_weight(x, dy, xd, spec, yd))
    }

    fn max_pool2d_fwd(&self, x: &Vec<T>, xd: Nchw, spec: &Pool2dSpec) -> Result<Vec<T>> {
        let yd = spec.output(xd, "max_pool2d")?;
        expect_len("max_pool2d_fwd", "input", x, xd.numel())?;
        Ok(pool::pool2d_fwd(PoolKind::Max, x, xd, spec, yd))
    }
    fn max_pool2d_bwd(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Vec<T>> {
        let yd = spec.output(xd, "max_pool2d")?;
        expect_len("max_pool2d_bwd", "input", x, xd.numel())?;
        expect_len("max_pool2d_bwd", "output gradient", dy, yd.numel())?;
        Ok(pool::pool2d_bwd(PoolKind::Max, x, dy, xd, spec, yd))
    }
    fn max_pool2d_bwd_into(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        let yd = spec.output(xd, "max_pool2d")?;
        expect_len("max_pool2d_bwd_into", "input", x, xd.numel())?;
        expect_len("max_pool2d_bwd_into", "output gradient", dy, yd.numel())?;
        expect_len("max_pool2d_bwd_into", "accumulator", dx, xd.numel())?;
        pool::pool2d_bwd_into(PoolKind::Max, x, dy, xd, spec, yd, dx);
        Ok(())
    }
    fn avg_pool2d_fwd(&self, x: &Vec<T>, xd: Nchw, spec: &Pool2dSpec) -> Result<Vec<T>> {
        let yd = spec.output(xd, "avg_pool2d")?;
        expect_len("avg_pool2d_fwd", "input", x, xd.numel())?;
        Ok(pool::pool2d_fwd(PoolKind::Avg, x, xd, spec, yd))
    }
    fn avg_pool2d_bwd(&self, dy: &Vec<T>, xd: Nchw, spec: &Pool2dSpec) -> Result<Vec<T>> {
        let yd = spec.output(xd, "avg_pool2d")?;
        expect_len("avg_pool2d_bwd", "output gradient", dy, yd.numel())?;
        Ok(pool::pool2d_bwd(PoolKind::Avg, &[], dy, xd, spec, yd))
    }
    fn avg_pool2d_bwd_into(
        &self,
        dy: &Vec<T>,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        let yd = spec.output(xd, "avg_pool2d")?;
        expect_len("avg_pool2d_bwd_into", "output gradient", dy, yd.numel())?;
        expect_len("avg_pool2d_bwd_into", "accumulator", dx, xd.numel())?;
        pool::pool2d_bwd_into(PoolKind::Avg, &[], dy, xd, spec, yd, dx);
        Ok(())
    }
    fn global_avg_pool_fwd(&self, x: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        expect_len("global_avg_pool_fwd", "input", x, xd.numel())?;
        Ok(pool::global_avg_pool_fwd(x, xd))
    }
    fn global_avg_pool_bwd(&self, dy: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        expect_len("global_avg_pool_bwd", "output gradient", dy, xd.n * xd.c)?;
        Ok(pool::global_avg_pool_bwd(dy, xd))
    }

    fn batch_norm_train_fwd(
        &self,
        x: &Vec<T>,
        xd: Nchw,
        affine: Option<(&Vec<T>, &Vec<T>)>,
        running: Option<RunningStats<'_, Vec<T>>>,
        eps: f64,
    ) -> Result<(Vec<T>, BatchNormSaved<Vec<T>>)> {
        expect_len("batch_norm", "input", x, xd.numel())?;
        if let Some((g, b)) = affine {
            expect_len("batch_norm", "gamma", g, xd.c)?;
            expect_len("batch_norm", "beta", b, xd.c)?;
        }
        if let Some(r) = &running {
            expect_len("batch_norm", "running mean", r.mean, xd.c)?;
            expect_len("batch_norm", "running var", r.var, xd.c)?;
        }
        let running = running.map(|r| (r.mean.as_mut_slice(), r.var.as_mut_slice(), r.momentum));
        Ok(norm::batch_norm_train_fwd(
            x,
            xd,
            affine.map(|(g, b)| (g.as_slice(), b.as_slice())),
            running,
            eps,
        ))
    }
    fn batch_norm_eval_fwd(
        &self,
        x: &Vec<T>,
        xd: Nchw,
        affine: Option<(&Vec<T>, &Vec<T>)>,
        rm: &Vec<T>,
        rv: &Vec<T>,
        eps: f64,
    ) -> Result<Vec<T>> {
        expect_len("batch_norm", "input", x, xd.numel())?;
        expect_len("batch_norm", "running mean", rm, xd.c)?;
        expect_len("batch_norm", "running var", rv, xd.c)?;
        Ok(norm::batch_norm_eval_fwd(
            x,
            xd,
            affine.map(|(g, b)| (g.as_slice(), b.as_slice())),
            rm,
            rv,
            eps,
        ))
    }
    #[allow(clippy::type_complexity)]
    fn batch_norm_bwd(
        &self,
        x: &Vec<T>,
        dy: &Vec<T>,
        xd: Nchw,
        gamma: Option<&Vec<T>>,
        saved: &BatchNormSaved<Vec<T>>,
    ) -> Result<(Vec<T>, Option<(Vec<T>, Vec<T>)>)> {
        expect_len("batch_norm_bwd", "input", x, xd.numel())?;
        expect_len("batch_norm_bwd", "output gradient", dy, xd.numel())?;
        Ok(norm::batch_norm_bwd(
            x,
            dy,
            xd,
            gamma.map(|g| g.as_slice()),
            saved,
        ))
    }

    fn concat_channels(&self, parts: &[(&Vec<T>, Nchw)]) -> Result<Vec<T>> {
        let first = parts
            .first()
            .ok_or_else(|| Error::shape("concat_channels", "no inputs"))?
            .1;
        for (buf, d) in parts {
            if (d.n, d.h, d.w) != (first.n, first.h, first.w) {
                return Err(Error::shape(
                    "concat_channels",
                    format!(
                        "{} and {} differ outside the channel axis",
                        first.shape(),
                        d.shape()
                    ),
                ));
            }
            expect_len("concat_channels", "input", buf, d.numel())?;
        }
        let plane = first.plane();
        let total_c: usize = parts.iter().map(|p| p.1.c).sum();
        let mut y = Vec::with_capacity(first.n * total_c * plane);
        for n in 0..first.n {
            for (buf, d) in parts {
                y.extend_from_slice(&buf[n * d.c * plane..(n + 1) * d.c * plane]);
            }
        }
        Ok(y)
    }
    fn split_channels(&self, dy: &Vec<T>, dd: Nchw, channels: &[usize]) -> Result<Vec<Vec<T>>> {
        expect_len("split_channels", "input", dy, dd.numel())?;
        if channels.iter().sum::<usize>() != dd.c {
            return Err(Error::shape(
                "split_channels",
                format!("parts of {channels:?} channels do not add up to {}", dd.c),
            ));
        }
        let plane = dd.plane();
        let mut out: Vec<Vec<T>> = channels
            .iter()
            .map(|&c| Vec::with_capacity(dd.n * c * plane))
            .collect();
        for n in 0..dd.n {
            let mut off = n * dd.c * plane;
            for (o, &c) in out.iter_mut().zip(channels) {
                o.extend_from_slice(&dy[off..off + c * plane]);
                off += c * plane;
            }
        }
        Ok(out)
    }
    fn shift_crop_fwd(&self, x: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        expect_len("shift_crop", "input", x, xd.numel())?;
        if xd.h < 2 || xd.w < 2 {
            return Err(Error::shape(
                "shift_crop",
                format!("input {} needs H and W of at least 2", xd.shape()),
            ));
        }
        let (h, w) = (xd.h - 1, xd.w - 1);
        let mut y = Vec::with_capacity(xd.n * xd.c * h * w);
        for p in x.chunks(xd.plane()) {
            for r in 1..xd.h {
                y.extend_from_slice(&p[r * xd.w + 1..(r + 1) * xd.w]);
            }
        }
        Ok(y)
    }
    fn shift_crop_bwd(&self, dy: &Vec<T>, xd: Nchw) -> Result<Vec<T>> {
        let (h, w) = (xd.h.saturating_sub(1), xd.w.saturating_sub(1));
        expect_len("shift_crop_bwd", "output gradient", dy, xd.n * xd.c * h * w)?;
        let mut dx = vec![T::ZERO; xd.numel()];
        for (p, g) in dx.chunks_mut(xd.plane()).zip(dy.chunks(h * w)) {
            for r in 0..h {
                p[(r + 1) * xd.w + 1..(r + 2) * xd.w].copy_from_slice(&g[r * w..(r + 1) * w]);
            }
        }
        Ok(dx)
    }

    fn linear_fwd(
        &self,
        x: &Vec<T>,
        w: &Vec<T>,
        b: Option<&Vec<T>>,
        n: usize,
        in_f: usize,
        out_f: usize,
    ) -> Result<Vec<T>> {
        expect_len("linear", "input", x, n * in_f)?;
        expect_len("linear", "weight", w, out_f * in_f)?;
        if let Some(b) = b {
            expect_len("linear", "bias", b, out_f)?;
        }
        Ok(dense::linear_fwd(
            x,
            w,
            b.map(|b| b.as_slice()),
            n,
            in_f,
            out_f,
        ))
    }
    #[allow(clippy::type_complexity)]
    fn linear_bwd(
        &self,
        x: &Vec<T>,
        w: &Vec<T>,
        dy: &Vec<T>,
        n: usize,
        in_f: usize,
        out_f: usize,
        with_bias: bool,
    ) -> Result<(Vec<T>, Vec<T>, Option<Vec<T>>)> {
        expect_len("linear_bwd", "input", x, n * in_f)?;
        expect_len("linear_bwd", "weight", w, out_f * in_f)?;
        expect_len("linear_bwd", "output gradient", dy, n * out_f)?;
        Ok(dense::linear_bwd(x, w, dy, n, in_f, out_f, with_bias))
    }
    fn softmax_cross_entropy_fwd(
        &self,
        logits: &Vec<T>,
        n: usize,
        k: usize,
        labels: &Vec<u32>,
    ) -> Result<(Vec<T>, Vec<T>)> {
        expect_len("softmax_cross_entropy", "logits", logits, n * k)?;
        crate::backend::check_labels(labels, n, k)?;
        let (loss, probs) = dense::softmax_cross_entropy_fwd(logits, n, k, labels);
        Ok((vec![loss], probs))
    }
    fn softmax_cross_entropy_bwd(
        &self,
        probs: &Vec<T>,
        dloss: &Vec<T>,
        n: usize,
        k: usize,
        labels: &Vec<u32>,
    ) -> Result<Vec<T>> {
        expect_len("softmax_cross_entropy_bwd", "probabilities", probs, n * k)?;
        expect_len("softmax_cross_entropy_bwd", "loss gradient", dloss, 1)?;
        crate::backend::check_labels(labels, n, k)?;
        Ok(dense::softmax_cross_entropy_bwd(
            probs, dloss[0], n, k, labels,
        ))
    }
    fn count_correct(
        &self,
        logits: &Vec<T>,
        n: usize,
        k: usize,
        labels: &Vec<u32>,
    ) -> Result<Vec<T>> {
        expect_len("count_correct", "logits", logits, n * k)?;
        crate::backend::check_labels(labels, n, k)?;
        Ok(vec![T::from_f64(
            dense::count_correct(logits, k, labels) as f64
        )])
    }

    fn drop_path(&self, x: &Vec<T>, n: usize, sample_scale: &Vec<T>) -> Result<Vec<T>> {
        expect_len("drop_path", "sample scale", sample_scale, n)?;
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(Error::shape(
                "drop_path",
                format!("{} elements do not split into {n} samples", x.len()),
            ));
        }
        let per = x.len() / n;
        let mut y = vec![T::ZERO; x.len()];
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .zip(sample_scale.par_iter())
            .for_each(|((y, x), &s)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * s;
                }
            });
        Ok(y)
    }

    fn mixed_op_fwd(&self, xs: &[Option<&Vec<T>>], alpha: &Vec<T>, len: usize) -> Result<Vec<T>> {
        let xs = mixed_op_inputs("mixed_op", xs, alpha, len)?;
        Ok(mixed_op::mixed_op_fwd(&xs, alpha, len))
    }
    #[allow(clippy::type_complexity)]
    fn mixed_op_bwd(
        &self,
        dy: &Vec<T>,
        xs: &[Option<&Vec<T>>],
        alpha: &Vec<T>,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<Vec<T>>>, Vec<T>)> {
        expect_len("mixed_op_bwd", "output gradient", dy, len)?;
        let xs = mixed_op_inputs("mixed_op_bwd", xs, alpha, len)?;
        Ok(mixed_op::mixed_op_bwd(
            dy,
            &xs,
            alpha,
            len,
            need_dx,
            &mut [],
        ))
    }
    #[allow(clippy::type_complexity)]
    fn mixed_op_bwd_into(
        &self,
        dy: &Vec<T>,
        xs: &[Option<&Vec<T>>],
        alpha: &Vec<T>,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut Vec<T>>],
    ) -> Result<(Vec<Option<Vec<T>>>, Vec<T>)> {
        expect_len("mixed_op_bwd_into", "output gradient", dy, len)?;
        let xs = mixed_op_inputs("mixed_op_bwd_into", xs, alpha, len)?;
        same_count("mixed_op_bwd_into", xs.len(), &[acc.len()])?;
        let mut into: Vec<Option<&mut [T]>> = Vec::with_capacity(acc.len());
        for a in acc.iter_mut() {
            match a.as_deref_mut() {
                Some(a) => {
                    expect_len("mixed_op_bwd_into", "accumulator", a, len)?;
                    into.push(Some(a.as_mut_slice()));
                }
                None => into.push(None),
            }
        }
        Ok(mixed_op::mixed_op_bwd(
            dy, &xs, alpha, len, need_dx, &mut into,
        ))
    }

    fn sgd_step(
        &self,
        param: &mut Vec<T>,
        grad: &Vec<T>,
        buf: &mut Vec<T>,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<()> {
        same_len("sgd_step", param, grad)?;
        same_len("sgd_step", param, buf)?;
        let k = SgdConsts::new("sgd_step", hp, grad_scale)?;
        param
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(grad.par_chunks(ELEMS_PER_TASK))
            .zip(buf.par_chunks_mut(ELEMS_PER_TASK))
            .for_each(|((p, g), b)| k.update(p, g, b));
        Ok(())
    }
    fn adam_step(
        &self,
        param: &mut Vec<T>,
        grad: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        hp: &AdamStep,
    ) -> Result<()> {
        same_len("adam_step", param, grad)?;
        same_len("adam_step", param, m)?;
        same_len("adam_step", param, v)?;
        AdamConsts::new(hp).update(param, grad, m, v);
        Ok(())
    }

    /// Every tensor's update in one rayon pass: tensors cut into pieces and tiny ones grouped
    /// into tasks (`group_tasks`), each element updated by the arithmetic of `sgd_step`.
    fn sgd_step_many(
        &self,
        params: &mut [&mut Vec<T>],
        grads: &[&Vec<T>],
        bufs: &mut [&mut Vec<T>],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<()> {
        same_count("sgd_step_many", params.len(), &[grads.len(), bufs.len()])?;
        for ((p, g), b) in params.iter().zip(grads).zip(bufs.iter()) {
            same_len("sgd_step_many", p, g)?;
            same_len("sgd_step_many", p, b)?;
        }
        let k = SgdConsts::new("sgd_step_many", hp, grad_scale)?;
        let pieces = params
            .iter_mut()
            .zip(grads)
            .zip(bufs.iter_mut())
            .flat_map(|((p, g), b)| {
                p.chunks_mut(ELEMS_PER_TASK)
                    .zip(g.chunks(ELEMS_PER_TASK))
                    .zip(b.chunks_mut(ELEMS_PER_TASK))
                    .map(|((p, g), b)| (p.len(), (p, g, b)))
            });
        group_tasks(pieces).into_par_iter().for_each(|task| {
            for (p, g, b) in task {
                k.update(p, g, b);
            }
        });
        Ok(())
    }
    fn adam_step_many(
        &self,
        params: &mut [&mut Vec<T>],
        grads: &[&Vec<T>],
        ms: &mut [&mut Vec<T>],
        vs: &mut [&mut Vec<T>],
        hp: &AdamStep,
    ) -> Result<()> {
        same_count(
            "adam_step_many",
            params.len(),
            &[grads.len(), ms.len(), vs.len()],
        )?;
        for (((p, g), m), v) in params.iter().zip(grads).zip(ms.iter()).zip(vs.iter()) {
            same_len("adam_step_many", p, g)?;
            same_len("adam_step_many", p, m)?;
            same_len("adam_step_many", p, v)?;
        }
        let k = AdamConsts::new(hp);
        let pieces = params
            .iter_mut()
            .zip(grads)
            .zip(ms.iter_mut())
            .zip(vs.iter_mut())
            .flat_map(|(((p, g), m), v)| {
                p.chunks_mut(ELEMS_PER_TASK)
                    .zip(g.chunks(ELEMS_PER_TASK))
                    .zip(m.chunks_mut(ELEMS_PER_TASK))
                    .zip(v.chunks_mut(ELEMS_PER_TASK))
                    .map(|(((p, g), m), v)| (p.len(), (p, g, m, v)))
            });
        group_tasks(pieces).into_par_iter().for_each(|task| {
            for (p, g, m, v) in task {
                k.update(p, g, m, v);
            }
        });
        Ok(())
    }
}

/// The scalars of an SGD update in the element type; `update` is the one place its
/// per-element arithmetic is written (`sgd_step` and `sgd_step_many` both call it).
#[derive(Clone, Copy)]
struct SgdConsts<T> {
    lr: T,
    mom: T,
    wd: T,
    gs: T,
}

impl<T: Element> SgdConsts<T> {
    fn new(
        op: &'static str,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<Self> {
        Ok(SgdConsts {
            lr: T::from_f64(hp.lr),
            mom: T::from_f64(hp.momentum),
            wd: T::from_f64(hp.weight_decay),
            gs: match grad_scale {
                Some(s) => scalar_at(op, &s)?,
                None => T::ONE,
            },
        })
    }
    #[inline]
    fn update(&self, p: &mut [T], g: &[T], b: &mut [T]) {
        for ((p, &g), b) in p.iter_mut().zip(g).zip(b) {
            let d = self.gs * g + self.wd * *p;
            *b = self.mom * *b + d;
            *p -= self.lr * *b;
        }
    }
}

/// The scalars of an Adam update (bias corrections from the host's f64, as the GPU gets
/// them); `update` is its per-element arithmetic, shared by `adam_step` and `adam_step_many`.
#[derive(Clone, Copy)]
struct AdamConsts<T> {
    b1: T,
    b2: T,
    wd: T,
    eps: T,
    step_size: T,
    bc2_sqrt: T,
}

impl<T: Element> AdamConsts<T> {
    fn new(hp: &AdamStep) -> Self {
        let (step_size, bc2_sqrt) = hp.bias_corrected();
        AdamConsts {
            b1: T::from_f64(hp.beta1),
            b2: T::from_f64(hp.beta2),
            wd: T::from_f64(hp.weight_decay),
            eps: T::from_f64(hp.eps),
            step_size: T::from_f64(step_size),
            bc2_sqrt: T::from_f64(bc2_sqrt),
        }
    }
    #[inline]
    fn update(&self, param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T]) {
        for i in 0..param.len() {
            let g = grad[i] + self.wd * param[i];
            m[i] = self.b1 * m[i] + (T::ONE - self.b1) * g;
            v[i] = self.b2 * v[i] + (T::ONE - self.b2) * g * g;
            let denom = v[i].sqrt() / self.bc2_sqrt + self.eps;
            param[i] -= self.step_size * m[i] / denom;
        }
    }
}

/// Groups consecutive `(elements, piece)` pairs into rayon tasks of about `ELEMS_PER_TASK`
/// elements (a piece is never split; pieces come at most that long), so a multi-tensor op
/// over hundreds of tiny tensors is a few tasks, not one per tensor. The grouping depends
/// only on the lengths, and each task keeps its pieces in order.
fn group_tasks<P>(pieces: impl IntoIterator<Item = (usize, P)>) -> Vec<Vec<P>> {
    let mut tasks = Vec::new();
    let (mut cur, mut n) = (Vec::new(), 0);
    for (len, piece) in pieces {
        if n > 0 && n + len > ELEMS_PER_TASK {
            tasks.push(std::mem::take(&mut cur));
            n = 0;
        }
        cur.push(piece);
        n += len;
    }
    if !cur.is_empty() {
        tasks.push(cur);
    }
    tasks
}
