//! The CPU backend: the reference every other device is checked against, and a product in
//! its own right for users without a GPU. Generic over the element type so that the gradient
//! checks can run the very same kernels in f64. Uses every core through its fork-join team
//! (`team.rs`); results do not depend on the number of threads (reductions run over fixed
//! chunks in a fixed order).

mod conv;
mod dense;
mod dwconv;
mod dwconv_weight;
mod elementwise;
mod fresh;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod phases;
mod pool;
mod simd;
mod team;
mod tiles;

use crate::backend::{checks, DeviceOps};
use crate::backend::{AdamStep, Element, ScalarRef, SgdStep};
use crate::error::Result;
use fresh::written;
use std::marker::PhantomData;

/// Samples per partial sum in batch reductions (weight gradients).
const SAMPLES_PER_CHUNK: usize = 4;
/// Elements per task in elementwise ops (below this, one task), and per partial sum in
/// reductions (fixed: the sums' rounding depends on it).
const ELEMS_PER_TASK: usize = 1 << 15;
/// Elements per task of the plane loops (`par_planes`), small planes batched up to it:
/// finer tasks (1024) measured slower at C8 L5 (per-task scratch, less cache reuse).
const PLANE_ELEMS: usize = 1 << 12;

/// The CPU backend for element type `T` (`Cpu` = `Cpu<f32>`).
pub struct Cpu<T: Element = f32>(PhantomData<T>);

impl Cpu<f32> {
    /// The f32 CPU backend: `Cpu::new()` needs no type annotation (defined for f32 only, as
    /// `HashMap::new` is for its default hasher). Other element types:
    /// `Cpu::<f64>::with_element()` (or `default()`).
    pub fn new() -> Self {
        Cpu(PhantomData)
    }
}
impl<T: Element> Cpu<T> {
    /// The CPU backend for element type `T` (f64 for gradient checks).
    pub fn with_element() -> Self {
        Cpu(PhantomData)
    }
}
impl<T: Element> Default for Cpu<T> {
    fn default() -> Self {
        Self::with_element()
    }
}
impl<T: Element> Clone for Cpu<T> {
    fn clone(&self) -> Self {
        Self::with_element()
    }
}

/// Runs `f(&mut scratch, plane_index, plane)` over consecutive planes of `buf` in parallel,
/// batching small planes so that each task has enough work. `init` makes one scratch value
/// per task, which `f` reuses for each of the task's planes (a padded copy, a tap table):
/// made per plane, it costs more than a small plane's work.
pub(crate) fn par_planes<T: Send, S>(
    buf: &mut [T],
    plane: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if plane == 0 {
        return;
    }
    let per_task = (PLANE_ELEMS / plane).max(1);
    team::chunks_mut(buf, plane * per_task, |t, chunk| {
        let mut scratch = init();
        for (i, p) in chunk.chunks_mut(plane).enumerate() {
            f(&mut scratch, t * per_task + i, p);
        }
    });
}

/// `out[i] = f(a[i], b[i])` in parallel, written straight into the new vector (a unary map
/// passes its input twice and ignores the second).
fn zip_map<A: Copy + Sync, B: Copy + Sync, R: Copy + Send>(
    a: &[A],
    b: &[B],
    f: impl Fn(A, B) -> R + Sync,
) -> Vec<R> {
    // SAFETY: the chunks cover the vector and every element of a chunk is written.
    unsafe {
        written(a.len(), |out| {
            team::chunks_mut(out, ELEMS_PER_TASK, |i, o| {
                let o0 = i * ELEMS_PER_TASK;
                for ((o, &x), &y) in o.iter_mut().zip(&a[o0..]).zip(&b[o0..]) {
                    o.write(f(x, y));
                }
            })
        })
    }
}

/// Sum over fixed chunks of `f(i)`-style products in f64, in order (deterministic).
fn chunked_sum<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64 + Sync + Send) -> f64 {
    let partials: Vec<f64> = team::map(a.len().div_ceil(ELEMS_PER_TASK), |i| {
        let r = team::chunk_range(i, ELEMS_PER_TASK, a.len());
        a[r.clone()].iter().zip(&b[r]).map(|(&x, &y)| f(x, y)).sum()
    });
    partials.iter().sum()
}

/// `s.buf[s.index]` (the index was checked by the op's `checks` function).
fn scalar_at<T: Element>(s: &ScalarRef<'_, Vec<T>>) -> T {
    s.buf[s.index]
}

impl<T: Element> DeviceOps for Cpu<T> {
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
        checks::copy_into(self, dst, src)?;
        dst.copy_from_slice(src);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn upload_into(&self, dst: &mut Vec<T>, host: &[T]) -> Result<()> {
        checks::upload_into(self, dst, host)?;
        dst.copy_from_slice(host);
        Ok(())
    }
    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<Vec<u32>> {
        checks::upload_labels(labels, classes)?;
        Ok(labels.to_vec())
    }
    fn upload_labels_into(&self, dst: &mut Vec<u32>, labels: &[u32], classes: usize) -> Result<()> {
        checks::upload_labels_into(self, dst, labels, classes)?;
        dst.copy_from_slice(labels);
        Ok(())
    }
    fn labels_len(&self, labels: &Vec<u32>) -> usize {
        labels.len()
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
    fn new(hp: &SgdStep, grad_scale: Option<ScalarRef<'_, Vec<T>>>) -> Self {
        SgdConsts {
            lr: T::from_f64(hp.lr),
            mom: T::from_f64(hp.momentum),
            wd: T::from_f64(hp.weight_decay),
            gs: grad_scale.map_or(T::ONE, |s| scalar_at(&s)),
        }
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

/// Groups consecutive `(elements, piece)` pairs into tasks of about `ELEMS_PER_TASK`
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
