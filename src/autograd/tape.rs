//! `Tape`: records each op's output and a backward closure that saves only what that op's
//! backward needs (often the output, as tinygrad does), then replays them in reverse.
//!
//! Rules: an op's output requires a gradient if any input does; backward closures are asked
//! only for the input gradients somebody needs; gradients of a value used several times are
//! summed, where the backend can by the consumer's backward op itself (it is handed the
//! pending gradient and adds into it: see `BackwardFn`), else by `axpy`. In no-grad mode
//! nothing is recorded for backward.
//!
//! Saved activations go through one shared handle per node (`Saved`), so that with
//! `Precision::Bf16` the network can release them: [`Tape::release_activations`] rounds every
//! saved value recorded so far (except those the forward still reads) to bf16 and drops the
//! f32 buffers, and backward widens them back into transient f32 buffers. Values nobody saved
//! are dropped outright. Leaves (parameters, the input batch) are never released; gradients,
//! weights and all arithmetic stay f32. With `Precision::F32` (the default) nothing changes.

use super::params::{ParamId, ParamStore};
use super::saved::{Precision, ReleaseStats, Saved};
use crate::backend::{Backend, DeviceOps, Element, RunningStats};
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Nchw, Pool2dSpec, Shape};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// A value recorded on a tape (an index into it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

/// Given `dy`, which inputs need a gradient and the gradient already pending for each input
/// (`acc[p] = Some(..)` when another consumer of parent `p` already contributed one), returns
/// the input gradients (None where not needed or not defined). A closure may add its
/// contribution for parent `p` into `acc[p]` in place (the `_into` backend ops) and return
/// None for it; a fresh gradient it returns is inserted or `axpy`'d by the tape as before, so
/// closures that never accumulate need not look at `acc`.
type BackwardFn<B> = Box<
    dyn Fn(
        &B,
        &<B as DeviceOps>::Storage,
        &[bool],
        &mut [Option<<B as DeviceOps>::Storage>],
    ) -> Result<Vec<Option<<B as DeviceOps>::Storage>>>,
>;

struct Node<B: Backend> {
    /// None once released (`release_activations`).
    value: Option<Tensor<B>>,
    shape: Shape,
    requires_grad: bool,
    parents: Vec<usize>,
    backward: Option<BackwardFn<B>>,
    /// The handle backward closures read this value through, once one saved it.
    saved: Option<Saved<B>>,
    /// Some backward needs this value exactly: released, it stays f32 (see `save_exact`).
    exact: bool,
}

pub struct Tape<B: Backend> {
    backend: B,
    nodes: Vec<Node<B>>,
    grad_enabled: bool,
    /// (store, param) -> var, so a parameter used twice in a step is one leaf.
    param_vars: HashMap<(u64, usize), Var>,
    /// relu(x) by x, so asking twice for the relu of one value stores and back-propagates it
    /// once. The DARTS ReLU-conv pairs no longer come here (their convs fuse the ReLU:
    /// `Conv2dSpec::relu_input`); the evaluation network's auxiliary head and its main path
    /// still both rectify the same cell output (PyTorch's in-place ReLU).
    relu_of: HashMap<usize, Var>,
    activations: Precision,
    /// Op outputs not yet released (`release_activations`), in recording order.
    pending: Vec<usize>,
    released: ReleaseStats,
}

/// The gradients one `backward` produced, for the leaves that required them.
pub struct Gradients<B: Backend> {
    grads: HashMap<usize, Tensor<B>>,
    param_vars: HashMap<(u64, usize), Var>,
}

impl<B: Backend> Gradients<B> {
    pub fn get(&self, v: Var) -> Option<&Tensor<B>> {
        self.grads.get(&v.0)
    }
    /// Gradient of a parameter of `store` (None if it was not used or did not require one).
    pub fn param(&self, store: &ParamStore<B>, id: ParamId) -> Option<&Tensor<B>> {
        self.param_vars
            .get(&(store.store_id, id.0))
            .and_then(|v| self.grads.get(&v.0))
    }
    /// Gradients of every parameter of `store`, in store order (zeros for unused ones).
    pub fn params(&self, backend: &B, store: &ParamStore<B>) -> Result<Vec<Tensor<B>>> {
        store
            .ids()
            .map(|id| match self.param(store, id) {
                Some(g) => Ok(g.clone()),
                None => Tensor::zeros(backend, store.get(id).shape.clone()),
            })
            .collect()
    }
}

impl<B: Backend> Tape<B> {
    pub fn new(backend: B) -> Self {
        Tape {
            backend,
            nodes: Vec::new(),
            grad_enabled: true,
            param_vars: HashMap::new(),
            relu_of: HashMap::new(),
            activations: Precision::F32,
            pending: Vec::new(),
            released: ReleaseStats::default(),
        }
    }

    /// How [`Tape::release_activations`] keeps saved activations (F32: it does nothing).
    pub fn set_activations(&mut self, p: Precision) {
        self.activations = p;
    }
    pub fn activations(&self) -> Precision {
        self.activations
    }
    pub fn release_stats(&self) -> ReleaseStats {
        self.released
    }

    /// With bf16 activations: every op output recorded since the last call, except `keep`
    /// (values the forward pass still reads), is released: a value some backward saved is
    /// rounded to bf16 and its f32 buffer freed (unless that backward needs it exactly:
    /// `save_exact`, then it stays f32), any other value is dropped. Reading a
    /// released value (`value`, or an op taking it as input) is then an error. Leaves are
    /// never released. Kept values are considered again at the next call. With f32
    /// activations this does nothing.
    pub fn release_activations(&mut self, keep: &[Var]) -> Result<()> {
        if self.activations == Precision::F32 {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        for i in pending {
            if keep.iter().any(|k| k.0 == i) {
                self.pending.push(i);
                continue;
            }
            let node = &mut self.nodes[i];
            let Some(value) = node.value.take() else {
                continue;
            };
            // The node's own reference goes first, so the handle can own the only one.
            drop(value);
            match node.saved.take() {
                Some(h) if h.in_use() && node.exact => {
                    self.released.exact += 1;
                    drop(h);
                }
                Some(h) if h.in_use() => match h.compress(&self.backend)? {
                    Some(len) => {
                        self.released.compressed += 1;
                        self.released.compressed_elements += len;
                    }
                    None => self.released.shared += 1,
                },
                _ => self.released.dropped += 1,
            }
        }
        Ok(())
    }

    /// `save`, for a backward that must read the value exactly: it is never rounded to bf16.
    /// Max pooling re-finds each window's first maximum from its input, and bf16 rounding
    /// makes ties that move gradients (measured on a small supernet: 7e-2 relative gradient
    /// error with max-pool inputs in bf16, 2e-3 without max pools).
    fn save_exact(&mut self, v: Var) -> Result<Saved<B>> {
        self.nodes[v.0].exact = true;
        self.save(v)
    }

    /// The shared handle backward closures keep `v`'s value through (made on first use).
    fn save(&mut self, v: Var) -> Result<Saved<B>> {
        if let Some(h) = &self.nodes[v.0].saved {
            return Ok(h.clone());
        }
        let h = Saved::new(self.value(v)?);
        self.nodes[v.0].saved = Some(h.clone());
        Ok(h)
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Turns recording for backward off (evaluation) or on.
    pub fn set_grad_enabled(&mut self, on: bool) {
        self.grad_enabled = on;
    }
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Drops every recorded value, releasing saved activations and parameter references.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.param_vars.clear();
        self.relu_of.clear();
        self.pending.clear();
        self.released = ReleaseStats::default();
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The value of `v`; an error once it was released to bf16 (`release_activations`).
    pub fn value(&self, v: Var) -> Result<&Tensor<B>> {
        self.nodes[v.0].value.as_ref().ok_or_else(|| {
            Error::invalid(
                "tape value",
                format!(
                    "value {} ({}) was released by bf16 activations; only backward reads it now",
                    v.0, self.nodes[v.0].shape
                ),
            )
        })
    }
    pub fn shape(&self, v: Var) -> &Shape {
        &self.nodes[v.0].shape
    }
    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    // ---- leaves --------------------------------------------------------------------------

    /// A leaf: an input or a parameter. `requires_grad` leaves get gradients from `backward`.
    pub fn leaf(&mut self, value: Tensor<B>, requires_grad: bool) -> Var {
        self.nodes.push(Node {
            shape: value.shape.clone(),
            value: Some(value),
            requires_grad: requires_grad && self.grad_enabled,
            parents: vec![],
            backward: None,
            saved: None,
            exact: false,
        });
        Var(self.nodes.len() - 1)
    }

    /// A constant (no gradient).
    pub fn constant(&mut self, value: Tensor<B>) -> Var {
        self.leaf(value, false)
    }

    /// The leaf for a parameter of `store`; the same var every time within one tape.
    pub fn param(&mut self, store: &ParamStore<B>, id: ParamId, requires_grad: bool) -> Var {
        let key = (store.store_id, id.0);
        if let Some(&v) = self.param_vars.get(&key) {
            return v;
        }
        let v = self.leaf(store.get(id).clone(), requires_grad);
        self.param_vars.insert(key, v);
        v
    }

    fn push(&mut self, value: Tensor<B>, parents: &[Var], backward: BackwardFn<B>) -> Var {
        let requires_grad =
            self.grad_enabled && parents.iter().any(|p| self.nodes[p.0].requires_grad);
        let (parents, backward) = if requires_grad {
            (parents.iter().map(|p| p.0).collect(), Some(backward))
        } else {
            (vec![], None)
        };
        self.pending.push(self.nodes.len());
        self.nodes.push(Node {
            shape: value.shape.clone(),
            value: Some(value),
            requires_grad,
            parents,
            backward,
            saved: None,
            exact: false,
        });
        Var(self.nodes.len() - 1)
    }

    fn nchw(&self, v: Var, op: &'static str) -> Result<Nchw> {
        self.shape(v).nchw(op)
    }

    fn same_shape(&self, op: &'static str, a: Var, b: Var) -> Result<()> {
        if self.shape(a) != self.shape(b) {
            return Err(Error::shape(
                op,
                format!("{} and {}", self.shape(a), self.shape(b)),
            ));
        }
        Ok(())
    }

    // ---- elementwise -----------------------------------------------------------------------

    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.same_shape("add", a, b)?;
        let y = self.backend.add(&self.value(a)?.buf, &self.value(b)?.buf)?;
        let shape = self.shape(a).clone();
        Ok(self.push(
            Tensor::new(y, shape),
            &[a, b],
            Box::new(|be, dy, need, acc| {
                // dy is added straight into a pending gradient; only a first one is copied.
                let mut g = |i: usize| -> Result<Option<B::Storage>> {
                    match (need[i], acc[i].as_mut()) {
                        (false, _) => Ok(None),
                        (true, Some(a)) => be.axpy(a, 1.0, dy).map(|_| None),
                        (true, None) => be.copy(dy).map(Some),
                    }
                };
                Ok(vec![g(0)?, g(1)?])
            }),
        ))
    }

    /// Sum of several same-shape values (a DARTS node sums its incoming edges).
    pub fn sum(&mut self, xs: &[Var]) -> Result<Var> {
        let (&first, rest) = xs
            .split_first()
            .ok_or_else(|| Error::shape("sum", "no inputs"))?;
        rest.iter().try_fold(first, |acc, &x| self.add(acc, x))
    }

    pub fn scale(&mut self, x: Var, s: f64) -> Result<Var> {
        let y = self.backend.scale(&self.value(x)?.buf, s)?;
        let shape = self.shape(x).clone();
        Ok(self.push(
            Tensor::new(y, shape),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.scale(dy, s)?)])),
        ))
    }

    /// max(x, 0), NaN kept (`Backend::relu_fwd`). Asking again for the relu of the same
    /// value returns the same var.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        if let Some(&y) = self.relu_of.get(&x.0) {
            return Ok(y);
        }
        let y = Tensor::new(
            self.backend.relu_fwd(&self.value(x)?.buf)?,
            self.shape(x).clone(),
        );
        // Backward keeps the output: its handle is made here and attached once it is a node.
        let saved = Saved::new(&y);
        let keep = saved.clone();
        let y = self.push(
            y,
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.relu_bwd(&*keep.read(be)?, dy)?)])),
        );
        self.nodes[y.0].saved = Some(saved);
        self.relu_of.insert(x.0, y);
        Ok(y)
    }

    // ---- convolution and pooling -------------------------------------------------------------------

    /// conv2d without bias; `w` must have the shape `spec.weight_shape()`. With
    /// `spec.relu_input` it is `conv2d(relu(x), w)` with no ReLU output stored: backward
    /// recomputes the mask from `x`, which the weight gradient keeps anyway.
    pub fn conv2d(&mut self, x: Var, w: Var, spec: Conv2dSpec) -> Result<Var> {
        let xd = self.nchw(x, "conv2d")?;
        if *self.shape(w) != spec.weight_shape() {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "weight {} does not match {} for input {}",
                    self.shape(w),
                    spec.weight_shape(),
                    xd.shape()
                ),
            ));
        }
        let yd = spec.output(xd)?;
        let y = self
            .backend
            .conv2d_fwd(&self.value(x)?.buf, xd, &self.value(w)?.buf, &spec)?;
        let (xs, ws) = (self.save(x)?, self.save(w)?);
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x, w],
            Box::new(move |be, dy, need, acc| {
                let (xb, wb) = (xs.read(be)?, ws.read(be)?);
                let dx = match (need[0], acc[0].as_mut()) {
                    (false, _) => None,
                    (true, Some(a)) => {
                        be.conv2d_bwd_data_into(&xb, dy, &wb, xd, &spec, a)?;
                        None
                    }
                    (true, None) => Some(be.conv2d_bwd_data(&xb, dy, &wb, xd, &spec)?),
                };
                let dw = if need[1] {
                    Some(be.conv2d_bwd_weight(&xb, dy, xd, &spec)?)
                } else {
                    None
                };
                Ok(vec![dx, dw])
            }),
        ))
    }

    pub fn max_pool2d(&mut self, x: Var, spec: Pool2dSpec) -> Result<Var> {
        let xd = self.nchw(x, "max_pool2d")?;
        let yd = spec.output(xd, "max_pool2d")?;
        let y = self
            .backend
            .max_pool2d_fwd(&self.value(x)?.buf, xd, &spec)?;
        let xs = self.save_exact(x)?;
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x],
            Box::new(move |be, dy, _, acc| {
                let xb = xs.read(be)?;
                Ok(vec![match acc[0].as_mut() {
                    Some(a) => {
                        be.max_pool2d_bwd_into(&xb, dy, xd, &spec, a)?;
                        None
                    }
                    None => Some(be.max_pool2d_bwd(&xb, dy, xd, &spec)?),
                }])
            }),
        ))
    }

    pub fn avg_pool2d(&mut self, x: Var, spec: Pool2dSpec) -> Result<Var> {
        let xd = self.nchw(x, "avg_pool2d")?;
        let yd = spec.output(xd, "avg_pool2d")?;
        let y = self
            .backend
            .avg_pool2d_fwd(&self.value(x)?.buf, xd, &spec)?;
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x],
            Box::new(move |be, dy, _, acc| {
                Ok(vec![match acc[0].as_mut() {
                    Some(a) => {
                        be.avg_pool2d_bwd_into(dy, xd, &spec, a)?;
                        None
                    }
                    None => Some(be.avg_pool2d_bwd(dy, xd, &spec)?),
                }])
            }),
        ))
    }

    /// [N, C, H, W] -> [N, C].
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let xd = self.nchw(x, "global_avg_pool")?;
        let y = self.backend.global_avg_pool_fwd(&self.value(x)?.buf, xd)?;
        Ok(self.push(
            Tensor::new(y, [xd.n, xd.c]),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.global_avg_pool_bwd(dy, xd)?)])),
        ))
    }

    // ---- normalisation ------------------------------------------------------------------------------

    /// Training-mode batch norm (batch statistics). `affine` is (gamma, beta); `running`
    /// (running mean, running var, momentum) is updated in place.
    pub fn batch_norm_train(
        &mut self,
        x: Var,
        affine: Option<(Var, Var)>,
        running: Option<(&mut Tensor<B>, &mut Tensor<B>, f64)>,
        eps: f64,
    ) -> Result<Var> {
        let xd = self.nchw(x, "batch_norm")?;
        if let Some((g, b)) = affine {
            for p in [g, b] {
                if self.shape(p).dims() != [xd.c] {
                    return Err(Error::shape(
                        "batch_norm",
                        format!(
                            "affine parameter {} for input {}",
                            self.shape(p),
                            xd.shape()
                        ),
                    ));
                }
            }
        }
        if xd.n * xd.plane() < 2 && running.is_some() {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "training needs more than one value per channel, got input {}",
                    xd.shape()
                ),
            ));
        }
        let xt = self.value(x)?.clone();
        let (gamma, beta) = match affine {
            Some((g, b)) => (Some(self.save(g)?), Some(self.value(b)?.clone())),
            None => (None, None),
        };
        let gamma_f32 = gamma.as_ref().map(|g| g.read(&self.backend)).transpose()?;
        let running = match running {
            Some((m, v, momentum)) => Some(RunningStats {
                mean: m.buf_mut("running_mean")?,
                var: v.buf_mut("running_var")?,
                momentum,
            }),
            None => None,
        };
        let aff = gamma_f32
            .as_ref()
            .zip(beta.as_ref())
            .map(|(g, b)| (&**g, &*b.buf));
        let (y, saved) = self
            .backend
            .batch_norm_train_fwd(&xt.buf, xd, aff, running, eps)?;
        drop((xt, gamma_f32, beta));
        let xs = self.save(x)?;
        let mut parents = vec![x];
        if let Some((g, b)) = affine {
            parents.extend([g, b]);
        }
        Ok(self.push(
            Tensor::new(y, xd.shape()),
            &parents,
            Box::new(move |be, dy, _, _| {
                let g = gamma.as_ref().map(|g| g.read(be)).transpose()?;
                let (dx, dgb) = be.batch_norm_bwd(&*xs.read(be)?, dy, xd, g.as_deref(), &saved)?;
                let mut out = vec![Some(dx)];
                if let Some((dg, db)) = dgb {
                    out.extend([Some(dg), Some(db)]);
                }
                Ok(out)
            }),
        ))
    }

    /// Eval-mode batch norm (running statistics).
    pub fn batch_norm_eval(
        &mut self,
        x: Var,
        affine: Option<(Var, Var)>,
        running_mean: &Tensor<B>,
        running_var: &Tensor<B>,
        eps: f64,
    ) -> Result<Var> {
        let xd = self.nchw(x, "batch_norm")?;
        let (gamma, beta) = match affine {
            Some((g, b)) => (Some(self.value(g)?.clone()), Some(self.value(b)?.clone())),
            None => (None, None),
        };
        let aff = gamma
            .as_ref()
            .zip(beta.as_ref())
            .map(|(g, b)| (&*g.buf, &*b.buf));
        let y = self.backend.batch_norm_eval_fwd(
            &self.value(x)?.buf,
            xd,
            aff,
            &running_mean.buf,
            &running_var.buf,
            eps,
        )?;
        // Eval-mode backward (used when fine-tuning with frozen statistics) is a per-channel
        // scale: dx = dy * gamma / sqrt(running_var + eps). Gamma/beta gradients are not offered.
        let (rv, gm) = (running_var.clone(), gamma);
        let mut parents = vec![x];
        if let Some((g, b)) = affine {
            parents.extend([g, b]);
        }
        let n_parents = parents.len();
        Ok(self.push(
            Tensor::new(y, xd.shape()),
            &parents,
            Box::new(move |be, dy, need, _| {
                if need.iter().skip(1).any(|&n| n) {
                    return Err(Error::invalid(
                        "batch_norm",
                        "gamma/beta gradients through eval-mode batch norm are not supported",
                    ));
                }
                let var = be.download(&rv.buf)?;
                let g = match &gm {
                    Some(g) => be.download(&g.buf)?,
                    None => vec![B::Elem::ONE; xd.c],
                };
                let scale: Vec<B::Elem> = (0..xd.c)
                    .map(|c| B::Elem::from_f64(g[c].to_f64() / (var[c].to_f64() + eps).sqrt()))
                    .collect();
                // The eval forward with mean 0, variance 1, eps 0 and gamma = scale is exactly dy * scale.
                let (scale, zeros, ones) = (
                    be.upload(&scale)?,
                    be.zeros(xd.c)?,
                    be.upload(&vec![B::Elem::ONE; xd.c])?,
                );
                let dx =
                    be.batch_norm_eval_fwd(dy, xd, Some((&scale, &zeros)), &zeros, &ones, 0.0)?;
                let mut out = vec![Some(dx)];
                out.extend((1..n_parents).map(|_| None));
                Ok(out)
            }),
        ))
    }

    // ---- layout ------------------------------------------------------------------------------------

    pub fn concat_channels(&mut self, xs: &[Var]) -> Result<Var> {
        let dims: Vec<Nchw> = xs
            .iter()
            .map(|&x| self.nchw(x, "concat_channels"))
            .collect::<Result<_>>()?;
        let parts: Vec<(&B::Storage, Nchw)> = xs
            .iter()
            .zip(&dims)
            .map(|(&x, &d)| Ok((&*self.value(x)?.buf, d)))
            .collect::<Result<_>>()?;
        let y = self.backend.concat_channels(&parts)?;
        let first = dims[0];
        let yd = Nchw {
            c: dims.iter().map(|d| d.c).sum(),
            ..first
        };
        let channels: Vec<usize> = dims.iter().map(|d| d.c).collect();
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            xs,
            Box::new(move |be, dy, _, _| {
                Ok(be
                    .split_channels(dy, yd, &channels)?
                    .into_iter()
                    .map(Some)
                    .collect())
            }),
        ))
    }

    /// `x[:, :, 1:, 1:]`.
    pub fn shift_crop(&mut self, x: Var) -> Result<Var> {
        let xd = self.nchw(x, "shift_crop")?;
        let y = self.backend.shift_crop_fwd(&self.value(x)?.buf, xd)?;
        let yd = Nchw {
            h: xd.h - 1,
            w: xd.w - 1,
            ..xd
        };
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.shift_crop_bwd(dy, xd)?)])),
        ))
    }

    // ---- dense layers and loss ------------------------------------------------------------------------

    /// `x W^T + b`: x `[n, in]`, w `[out, in]`, b `[out]`.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let (n, in_f) = self.shape(x).matrix("linear")?;
        let (out_f, w_in) = self.shape(w).matrix("linear")?;
        if w_in != in_f {
            return Err(Error::shape(
                "linear",
                format!("input {} and weight {}", self.shape(x), self.shape(w)),
            ));
        }
        if let Some(b) = b {
            if self.shape(b).dims() != [out_f] {
                return Err(Error::shape(
                    "linear",
                    format!("bias {} for weight {}", self.shape(b), self.shape(w)),
                ));
            }
        }
        let bt = b.map(|b| self.value(b).cloned()).transpose()?;
        let y = self.backend.linear_fwd(
            &self.value(x)?.buf,
            &self.value(w)?.buf,
            bt.as_ref().map(|b| &*b.buf),
            n,
            in_f,
            out_f,
        )?;
        drop(bt);
        let (xs, ws) = (self.save(x)?, self.save(w)?);
        let mut parents = vec![x, w];
        parents.extend(b);
        let with_bias = b.is_some();
        Ok(self.push(
            Tensor::new(y, [n, out_f]),
            &parents,
            Box::new(move |be, dy, _, _| {
                let (xb, wb) = (xs.read(be)?, ws.read(be)?);
                let (dx, dw, db) = be.linear_bwd(&xb, &wb, dy, n, in_f, out_f, with_bias)?;
                let mut out = vec![Some(dx), Some(dw)];
                if with_bias {
                    out.push(db);
                }
                Ok(out)
            }),
        ))
    }

    /// Mean softmax cross-entropy of logits `[n, k]` against device `labels`; a `[1]` loss.
    pub fn softmax_cross_entropy(&mut self, logits: Var, labels: &Arc<B::Labels>) -> Result<Var> {
        let (n, k) = self.shape(logits).matrix("softmax_cross_entropy")?;
        if n == 0 {
            return Err(Error::shape("softmax_cross_entropy", "empty batch"));
        }
        if self.backend.labels_len(labels) != n {
            return Err(Error::shape(
                "softmax_cross_entropy",
                format!(
                    "{} labels for a batch of {n}",
                    self.backend.labels_len(labels)
                ),
            ));
        }
        let (loss, probs) =
            self.backend
                .softmax_cross_entropy_fwd(&self.value(logits)?.buf, n, k, labels)?;
        let labels = labels.clone();
        Ok(self.push(
            Tensor::new(loss, [1]),
            &[logits],
            Box::new(move |be, dy, _, _| {
                Ok(vec![Some(
                    be.softmax_cross_entropy_bwd(&probs, dy, n, k, &labels)?,
                )])
            }),
        ))
    }

    /// How many rows of `logits` [n, k] predict their label, as a one-element device value.
    pub fn count_correct(&self, logits: Var, labels: &B::Labels) -> Result<Tensor<B>> {
        let (n, k) = self.shape(logits).matrix("count_correct")?;
        let count = self
            .backend
            .count_correct(&self.value(logits)?.buf, n, k, labels)?;
        Ok(Tensor::new(count, [1]))
    }

    // ---- regularisation ------------------------------------------------------------------------------

    /// Drop-path: each sample kept with probability `keep_prob` and scaled by `1 / keep_prob`,
    /// with the mask drawn from `rng` on the host.
    pub fn drop_path(&mut self, x: Var, keep_prob: f64, rng: &mut crate::rng::Rng) -> Result<Var> {
        if !(keep_prob > 0.0 && keep_prob <= 1.0) {
            return Err(Error::invalid(
                "drop-path keep probability",
                format!("{keep_prob} is not in (0, 1]"),
            ));
        }
        let n = self.shape(x).dims().first().copied().unwrap_or(0);
        let scale: Vec<B::Elem> = (0..n)
            .map(|_| {
                B::Elem::from_f64(if rng.bernoulli(keep_prob) {
                    1.0 / keep_prob
                } else {
                    0.0
                })
            })
            .collect();
        let s = self.backend.upload(&scale)?;
        let y = self.backend.drop_path(&self.value(x)?.buf, n, &s)?;
        let shape = self.shape(x).clone();
        Ok(self.push(
            Tensor::new(y, shape),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.drop_path(dy, n, &s)?)])),
        ))
    }

    // ---- the DARTS MixedOp -----------------------------------------------------------------------

    /// `sum_k softmax(alpha)_k * xs[k]`, one fused op. `alpha` has one value per input;
    /// `xs[k] = None` is an all-zero input (the DARTS `none` op) that is never materialised:
    /// it keeps its softmax weight and gets an alpha gradient, but nothing is read for it. At
    /// least one input must be present (it gives the shape).
    pub fn mixed_op(&mut self, xs: &[Option<Var>], alpha: Var) -> Result<Var> {
        let k = xs.len();
        if k == 0 || self.shape(alpha).numel() != k {
            return Err(Error::shape(
                "mixed_op",
                format!("{k} op outputs but alpha {}", self.shape(alpha)),
            ));
        }
        let present: Vec<Var> = xs.iter().flatten().copied().collect();
        let Some(&first) = present.first() else {
            return Err(Error::shape(
                "mixed_op",
                format!("all {k} op outputs are none (zero): no shape to take"),
            ));
        };
        for &x in &present[1..] {
            self.same_shape("mixed_op", first, x)?;
        }
        let shape = self.shape(first).clone();
        let len = shape.numel();
        let y = {
            let bufs: Vec<Option<&B::Storage>> = xs
                .iter()
                .map(|x| x.map(|x| self.value(x).map(|t| &*t.buf)).transpose())
                .collect::<Result<_>>()?;
            self.backend
                .mixed_op_fwd(&bufs, &self.value(alpha)?.buf, len)?
        };
        let saved: Vec<Option<Saved<B>>> = xs
            .iter()
            .map(|x| x.map(|x| self.save(x)).transpose())
            .collect::<Result<_>>()?;
        let at = self.save(alpha)?;
        // Parents: the present inputs in order, then alpha; `slot[p]` is parent p's input.
        let slot: Vec<usize> = (0..k).filter(|&i| xs[i].is_some()).collect();
        let mut parents = present;
        parents.push(alpha);
        Ok(self.push(
            Tensor::new(y, shape),
            &parents,
            Box::new(move |be, dy, need, acc| {
                let np = slot.len();
                let mut need_dx = vec![false; k];
                for (p, &i) in slot.iter().enumerate() {
                    need_dx[i] = need[p];
                }
                let held: Vec<Option<Arc<B::Storage>>> = saved
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.read(be)).transpose())
                    .collect::<Result<_>>()?;
                let bufs: Vec<Option<&B::Storage>> = held.iter().map(|t| t.as_deref()).collect();
                // Input i's pending gradient (parent p = its position among present inputs).
                let mut into: Vec<Option<&mut B::Storage>> = (0..k).map(|_| None).collect();
                for (a, &i) in acc.iter_mut().zip(&slot) {
                    into[i] = a.as_mut();
                }
                let ab = at.read(be)?;
                let (mut dxs, dalpha) = if into.iter().any(Option::is_some) {
                    be.mixed_op_bwd_into(dy, &bufs, &ab, len, &need_dx, &mut into)?
                } else {
                    be.mixed_op_bwd(dy, &bufs, &ab, len, &need_dx)?
                };
                let mut out: Vec<Option<B::Storage>> =
                    slot.iter().map(|&i| dxs[i].take()).collect();
                out.push(if need[np] { Some(dalpha) } else { None });
                Ok(out)
            }),
        ))
    }

    /// The value of a one-element var on the host; a NaN or infinity is an error naming `what`
    /// (the training loops stop on it rather than train on garbage).
    pub fn scalar(&self, v: Var, what: &str) -> Result<f64> {
        let host = self.value(v)?.to_f64(&self.backend)?;
        match host[..] {
            [x] if x.is_finite() => Ok(x),
            [x] => Err(Error::NonFinite(format!("{what} is {x}"))),
            _ => Err(Error::shape(
                "scalar",
                format!("{what} has shape {}", self.shape(v)),
            )),
        }
    }

    // ---- backward -----------------------------------------------------------------------------------

    /// Gradients of the scalar `loss` with respect to every leaf that requires one.
    pub fn backward(&mut self, loss: Var) -> Result<Gradients<B>> {
        if self.shape(loss).numel() != 1 {
            return Err(Error::shape(
                "backward",
                format!("loss must have one element, got {}", self.shape(loss)),
            ));
        }
        // Filled on the device: an upload here would stop a graph capture of the step.
        let seed = self.backend.fill(1, 1.0)?;
        self.backward_with(loss, seed)
    }

    /// Backward from `root` with an explicit output gradient `dy` (same size as `root`).
    pub fn backward_with(&mut self, root: Var, dy: B::Storage) -> Result<Gradients<B>> {
        if self.backend.len(&dy) != self.shape(root).numel() {
            return Err(Error::shape(
                "backward",
                format!(
                    "output gradient of {} elements for {}",
                    self.backend.len(&dy),
                    self.shape(root)
                ),
            ));
        }
        let mut pending: HashMap<usize, B::Storage> = HashMap::new();
        let mut leaves: HashMap<usize, Tensor<B>> = HashMap::new();
        if !self.nodes[root.0].requires_grad {
            return Ok(Gradients {
                grads: leaves,
                param_vars: self.param_vars.clone(),
            });
        }
        pending.insert(root.0, dy);
        for i in (0..=root.0).rev() {
            let Some(g) = pending.remove(&i) else {
                continue;
            };
            let node = &self.nodes[i];
            let Some(backward) = &node.backward else {
                leaves.insert(i, Tensor::new(g, node.shape.clone()));
                continue;
            };
            let need: Vec<bool> = node
                .parents
                .iter()
                .map(|&p| self.nodes[p].requires_grad)
                .collect();
            // Each needed parent's pending gradient goes to the closure, which may add its
            // contribution in place; a parent listed twice lends it at its first slot only.
            let mut acc: Vec<Option<B::Storage>> = node
                .parents
                .iter()
                .zip(&need)
                .map(|(&p, &needed)| if needed { pending.remove(&p) } else { None })
                .collect();
            let result = backward(&self.backend, &g, &need, &mut acc);
            for (&p, a) in node.parents.iter().zip(acc) {
                if let Some(a) = a {
                    pending.insert(p, a);
                }
            }
            let grads = result?;
            for ((&p, gp), &needed) in node.parents.iter().zip(grads).zip(&need) {
                let Some(gp) = gp else { continue };
                if !needed {
                    continue;
                }
                match pending.get_mut(&p) {
                    Some(acc) => self.backend.axpy(acc, 1.0, &gp)?,
                    None => {
                        pending.insert(p, gp);
                    }
                }
            }
        }
        Ok(Gradients {
            grads: leaves,
            param_vars: self.param_vars.clone(),
        })
    }
}
