//! Optimizers with PyTorch semantics (SGD with momentum and weight decay, Adam with L2 weight
//! decay), global gradient-norm clipping and the cosine learning-rate schedule. State lives
//! in `ParamStore`s with the same names as the parameters, so checkpoints can hold it.

use crate::autograd::{ParamId, ParamStore};
use crate::backend::{norm_scalars, AdamStep, Backend, Element, ScalarRef, SgdStep};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

/// `torch.optim.lr_scheduler.CosineAnnealingLR`: `lr_min + (lr_max - lr_min) (1 + cos(pi t / T)) / 2`.
pub fn cosine_lr(lr_max: f64, lr_min: f64, epoch: usize, total_epochs: usize) -> f64 {
    if total_epochs == 0 {
        return lr_max;
    }
    let t = epoch.min(total_epochs) as f64 / total_epochs as f64;
    lr_min + (lr_max - lr_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
}

/// The global L2 norm of `grads`, its inverse and the clip coefficient for `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`: `min(1, max_norm / (norm + 1e-6))`), left on the
/// device in the [`norm_scalars`] layout. Pass `ScalarRef { buf, index: CLIP_COEF }` to
/// [`Sgd::step`] to clip inside the update, with no host round trip.
pub fn grad_norm_scalars<B: Backend>(
    backend: &B,
    grads: &[Tensor<B>],
    max_norm: f64,
) -> Result<B::Storage> {
    let bufs: Vec<&B::Storage> = grads.iter().map(|g| &*g.buf).collect();
    backend.grad_norm_scalars(&bufs, max_norm)
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`, like
/// `torch.nn.utils.clip_grad_norm_`, and returns the norm before clipping; a non-finite norm
/// is an error naming it. A host round trip: the training loops clip inside the update
/// instead (`grad_norm_scalars`); this is for callers that want the norm on the host.
pub fn clip_grad_norm<B: Backend>(
    backend: &B,
    grads: &mut [Tensor<B>],
    max_norm: f64,
) -> Result<f64> {
    let scalars = backend.download(&grad_norm_scalars(backend, grads, max_norm)?)?;
    let (norm, coef) = (
        scalars[norm_scalars::NORM].to_f64(),
        scalars[norm_scalars::CLIP_COEF].to_f64(),
    );
    if !norm.is_finite() {
        return Err(Error::NonFinite(format!("gradient norm is {norm}")));
    }
    if coef < 1.0 {
        for g in grads.iter_mut() {
            backend.scale_assign(g.buf_mut("gradient")?, coef)?;
        }
    }
    Ok(norm)
}

fn check_grads<B: Backend>(what: &str, params: &ParamStore<B>, grads: &[Tensor<B>]) -> Result<()> {
    if grads.len() != params.len() {
        return Err(Error::invalid(
            what.to_string(),
            format!("{} gradients for {} parameters", grads.len(), params.len()),
        ));
    }
    for (id, g) in params.ids().zip(grads) {
        if params.get(id).shape != g.shape {
            return Err(Error::shape(
                "optimizer",
                format!(
                    "{}: gradient {} for parameter {}",
                    params.name(id),
                    g.shape,
                    params.get(id).shape
                ),
            ));
        }
    }
    Ok(())
}

/// Every buffer of `store`, mutably, for a multi-tensor update; a buffer still shared (a
/// tape holding it was not cleared) is an error naming its tensor.
fn storages_mut<B: Backend>(store: &mut ParamStore<B>) -> Result<Vec<&mut B::Storage>> {
    let shared = store
        .tensors()
        .iter()
        .position(|t| Arc::strong_count(&t.buf) != 1 || Arc::weak_count(&t.buf) != 0);
    if let Some(i) = shared {
        return Err(Error::invalid(
            store.names()[i].clone(),
            "buffer is still shared (a tape holding it was not cleared)",
        ));
    }
    store
        .tensors_mut()
        .iter_mut()
        .map(|t| t.buf_mut("optimizer state"))
        .collect()
}

/// The buffers of `store` at `ids` (ascending, distinct), mutably, in that order.
fn storages_mut_at<'a, B: Backend>(
    store: &'a mut ParamStore<B>,
    ids: &[ParamId],
) -> Result<Vec<&'a mut B::Storage>> {
    let names = store.names().to_vec();
    let mut wanted = ids.iter().peekable();
    let mut out = Vec::with_capacity(ids.len());
    for (i, t) in store.tensors_mut().iter_mut().enumerate() {
        if wanted.peek().map(|id| id.0) != Some(i) {
            continue;
        }
        wanted.next();
        if Arc::strong_count(&t.buf) != 1 || Arc::weak_count(&t.buf) != 0 {
            return Err(Error::invalid(
                names[i].clone(),
                "buffer is still shared (a tape holding it was not cleared)",
            ));
        }
        out.push(t.buf_mut("optimizer state")?);
    }
    if out.len() != ids.len() {
        return Err(Error::invalid(
            "optimizer",
            format!(
                "{} parameter ids, {} of them valid and ascending",
                ids.len(),
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// SGD with momentum (dampening 0), optionally Nesterov's, and L2 weight decay.
pub struct Sgd<B: Backend> {
    pub momentum: f64,
    pub weight_decay: f64,
    /// PyTorch's `nesterov=True`: the step is `d + momentum * buf` instead of `buf`.
    pub nesterov: bool,
    /// Momentum buffers, named like the parameters.
    pub state: ParamStore<B>,
}

impl<B: Backend> Sgd<B> {
    pub fn new(
        backend: &B,
        params: &ParamStore<B>,
        momentum: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        Ok(Sgd {
            momentum,
            weight_decay,
            nesterov: false,
            state: params.zeros_like(backend)?,
        })
    }

    /// The same optimizer with Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// One update; `grad_scale` (a device scalar, e.g. the clip coefficient) multiplies
    /// every gradient first.
    pub fn step(
        &mut self,
        backend: &B,
        params: &mut ParamStore<B>,
        grads: &[Tensor<B>],
        lr: f64,
        grad_scale: Option<ScalarRef<'_, B::Storage>>,
    ) -> Result<()> {
        check_grads("sgd", params, grads)?;
        if self.nesterov {
            return self.nesterov_step(backend, params, grads, lr, grad_scale);
        }
        let hp = SgdStep {
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        };
        // One multi-tensor op for every tensor (a handful of launches on a GPU, not one each).
        let mut p = storages_mut(params)?;
        let mut m = storages_mut(&mut self.state)?;
        let g: Vec<&B::Storage> = grads.iter().map(|g| &*g.buf).collect();
        backend.sgd_step_many(&mut p, &g, &mut m, &hp, grad_scale)
    }

    /// PyTorch's Nesterov update, in its order of operations: `d = s g + wd w`,
    /// `buf = momentum buf + d`, `w -= lr (d + momentum buf)`. The fused `sgd_step` has no
    /// Nesterov form, so it is composed of elementwise ops, tensor by tensor.
    fn nesterov_step(
        &mut self,
        backend: &B,
        params: &mut ParamStore<B>,
        grads: &[Tensor<B>],
        lr: f64,
        grad_scale: Option<ScalarRef<'_, B::Storage>>,
    ) -> Result<()> {
        let mut p = storages_mut(params)?;
        let mut m = storages_mut(&mut self.state)?;
        for ((w, buf), g) in p.iter_mut().zip(m.iter_mut()).zip(grads) {
            let mut d = backend.zeros(backend.len(&g.buf))?;
            match grad_scale {
                Some(s) => backend.axpy_scaled(&mut d, 1.0, s, &g.buf)?,
                None => backend.axpy(&mut d, 1.0, &g.buf)?,
            }
            if self.weight_decay != 0.0 {
                backend.axpy(&mut d, self.weight_decay, w)?;
            }
            backend.scale_assign(buf, self.momentum)?;
            backend.axpy(buf, 1.0, &d)?;
            backend.axpy(&mut d, self.momentum, buf)?;
            backend.axpy(w, -lr, &d)?;
        }
        Ok(())
    }
}

impl<B: Backend> Sgd<B> {
    /// One update of only the parameters that have a gradient (`grads`: ascending ids), the
    /// others left as they are, momentum and weight decay included: PyTorch's rule for a
    /// parameter whose `.grad` is None, which is every weight off the path a one-shot
    /// supernet trained this step.
    pub fn step_some(
        &mut self,
        backend: &B,
        params: &mut ParamStore<B>,
        grads: &[(ParamId, Tensor<B>)],
        lr: f64,
        grad_scale: Option<ScalarRef<'_, B::Storage>>,
    ) -> Result<()> {
        for (id, g) in grads {
            if id.0 >= params.len() || params.get(*id).shape != g.shape {
                return Err(Error::shape(
                    "optimizer",
                    format!("gradient {} for parameter {}", g.shape, id.0),
                ));
            }
        }
        if self.nesterov {
            return Err(Error::invalid(
                "optimizer",
                "Nesterov SGD on a subset of the parameters is not implemented",
            ));
        }
        let ids: Vec<ParamId> = grads.iter().map(|(id, _)| *id).collect();
        let hp = SgdStep {
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        };
        let mut p = storages_mut_at(params, &ids)?;
        let mut m = storages_mut_at(&mut self.state, &ids)?;
        let g: Vec<&B::Storage> = grads.iter().map(|(_, g)| &*g.buf).collect();
        backend.sgd_step_many(&mut p, &g, &mut m, &hp, grad_scale)
    }
}

/// Adam (PyTorch `Adam`, not AdamW: weight decay is added to the gradient).
pub struct Adam<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    pub exp_avg: ParamStore<B>,
    pub exp_avg_sq: ParamStore<B>,
}

impl<B: Backend> Adam<B> {
    pub fn new(
        backend: &B,
        params: &ParamStore<B>,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        Ok(Adam {
            beta1: betas.0,
            beta2: betas.1,
            eps,
            weight_decay,
            step: 0,
            exp_avg: params.zeros_like(backend)?,
            exp_avg_sq: params.zeros_like(backend)?,
        })
    }

    pub fn step(
        &mut self,
        backend: &B,
        params: &mut ParamStore<B>,
        grads: &[Tensor<B>],
        lr: f64,
    ) -> Result<()> {
        check_grads("adam", params, grads)?;
        self.step += 1;
        let hp = AdamStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            step: self.step,
        };
        let mut p = storages_mut(params)?;
        let mut m = storages_mut(&mut self.exp_avg)?;
        let mut v = storages_mut(&mut self.exp_avg_sq)?;
        let g: Vec<&B::Storage> = grads.iter().map(|g| &*g.buf).collect();
        backend.adam_step_many(&mut p, &g, &mut m, &mut v, &hp)
    }
}
