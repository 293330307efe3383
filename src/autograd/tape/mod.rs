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
//! are dropped outright, in f32 as in bf16. Leaves (parameters, the input batch) are never
//! released; gradients, weights and all arithmetic stay f32. With `Precision::F32` (the
//! default) saved values stay as they are.
//!
//! This file owns the tape itself: its records (`Node`), the value ids (`Var`), leaves and
//! parameters, the bf16 release of saved activations, and the `backward` walk that sums the
//! gradients. The ops live in one file per family, named as the kernel families
//! (`kernels/*.cu`, `backend/cuda/*.rs`): each op records its forward and, beside it, the
//! backward closure (tinygrad's `mlops.py`).

mod conv;
mod dense;
mod elementwise;
mod layout;
mod mixed_op;
mod norm;
mod pool;

use super::params::{ParamId, ParamStore};
use super::saved::{Precision, ReleaseStats, Saved};
use crate::backend::{Backend, BatchNormSaved, DeviceOps};
use crate::error::{Error, Result};
use crate::shape::{Nchw, Shape};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::rc::Rc;

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
    /// Mean 0 / invstd 1 statistics by channel count, shared by the backward of every
    /// non-affine batch norm (see `batch_norm_from_output`).
    unit_stats: HashMap<usize, Rc<BatchNormSaved<B::Storage>>>,
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
            unit_stats: HashMap::new(),
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

    /// Every op output recorded since the last call, except `keep` (values the forward pass
    /// still reads), is released: a value no backward saved is dropped; a value some
    /// backward saved stays in its handle, in f32 with f32 activations, else rounded to bf16
    /// and its f32 buffer freed (unless that backward needs it exactly: `save_exact`, then it
    /// stays f32). Reading a released value (`value`, or an op taking it as input) is then an
    /// error. Leaves are never released. Kept values are considered again at the next call.
    ///
    /// Dropping the unsaved values matters in f32 too: a DARTS edge's MixedOp output, each
    /// node's partial sums and each pool's output feed only ops whose backward does not read
    /// them, and keeping them to the end of the step was a third of the step's peak memory.
    pub fn release_activations(&mut self, keep: &[Var]) -> Result<()> {
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
                Some(h) if h.in_use() && self.activations == Precision::F32 => {
                    self.released.kept += 1;
                    drop(h);
                }
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
        self.unit_stats.clear();
        self.pending.clear();
        self.released = ReleaseStats::default();
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The value of `v`; an error once it was released (`release_activations`).
    pub fn value(&self, v: Var) -> Result<&Tensor<B>> {
        self.nodes[v.0].value.as_ref().ok_or_else(|| {
            Error::invalid(
                "tape value",
                format!(
                    "value {} ({}) was released ({} activations); only backward reads it now",
                    v.0, self.nodes[v.0].shape, self.activations
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
