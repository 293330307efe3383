//! The architecture gradient of either order (the formulas: the `darts` module docs), queued
//! on the device without host reads: `Darts::queue_arch_gradient`, the body of every
//! architecture step. First order, one backward of the validation loss; second order, the
//! unrolled weights w', the gradients at w' and the finite-difference implicit term from two
//! more backwards at `w +- eps v`. With `keep_parts` it also keeps the second-order parts
//! (`RawParts`, read into [`UnrolledParts`]) for the direct API's reports.

use super::step_io::{DeviceBatch, StepOutputs};
use super::{Darts, UnrolledParts};
use crate::autograd::ParamStore;
use crate::backend::{norm_scalars, Backend, Element, ScalarRef};
use crate::error::{Error, Result};
use crate::nas::modules::Mode;
use crate::optim::grad_norm_scalars;
use crate::tensor::Tensor;

/// The second-order parts as the device left them (the norms not yet read).
pub(super) struct RawParts<B: Backend> {
    weights: ParamStore<B>,
    dalpha: Vec<Tensor<B>>,
    dw: Vec<Tensor<B>>,
    implicit: Vec<Tensor<B>>,
    norms: B::Storage,
}

impl<B: Backend> RawParts<B> {
    pub(super) fn read(self, be: &B, radius: f64) -> Result<UnrolledParts<B>> {
        let n = be.download(&self.norms)?;
        Ok(UnrolledParts {
            weights: self.weights,
            dalpha: self.dalpha,
            dw: self.dw,
            dw_norm: n[norm_scalars::NORM].to_f64(),
            r: radius * n[norm_scalars::INV_NORM].to_f64(),
            implicit: self.implicit,
        })
    }
}

fn copy_all<B: Backend>(be: &B, ts: &[Tensor<B>]) -> Result<Vec<Tensor<B>>> {
    ts.iter()
        .map(|t| Ok(Tensor::new(be.copy(&t.buf)?, t.shape.clone())))
        .collect()
}

/// A copy of `weights` moved by `a * s * direction` with `s` a device scalar (the
/// finite-difference points `w +- eps v`, `eps` computed on the device).
fn shifted<B: Backend>(
    be: &B,
    weights: &ParamStore<B>,
    direction: &[Tensor<B>],
    a: f64,
    s: &B::Storage,
    index: usize,
) -> Result<ParamStore<B>> {
    let mut w = weights.deep_copy(be)?;
    for (id, g) in weights.ids().zip(direction) {
        let name = weights.name(id).to_string();
        be.axpy_scaled(
            w.get_mut(id).buf_mut(&name)?,
            a,
            ScalarRef { buf: s, index },
            &g.buf,
        )?;
    }
    Ok(w)
}

impl<B: Backend> Darts<B> {
    /// Queues the architecture gradient for this order into `dalpha_out`. `lr` is the
    /// current weight learning rate (the unrolled step's `xi`). With `keep_parts` (direct
    /// steps only) the second-order parts are kept too; the gradient is the same either way.
    pub(super) fn queue_arch_gradient(
        &mut self,
        train: &DeviceBatch<B>,
        val: &DeviceBatch<B>,
        lr: f64,
        out: &mut StepOutputs<B>,
        dalpha_out: &mut [Tensor<B>],
        keep_parts: bool,
    ) -> Result<Option<RawParts<B>>> {
        let be = self.backend.clone();
        let store = |dalpha: Vec<Tensor<B>>, dst: &mut [Tensor<B>]| -> Result<()> {
            for (d, g) in dst.iter_mut().zip(&dalpha) {
                be.copy_into(d.buf_mut("alpha gradient")?, &g.buf)?;
            }
            Ok(())
        };
        // The forwards of the real network (not the unrolled copy's) update the running
        // statistics if asked, as PyTorch's do.
        let arch_mode = Mode {
            update_running: self.hyper.arch_step_updates_bn,
            ..Mode::ARCH_STEP
        };
        if self.hyper.order == 1 {
            let (_, ga) = self.loss_grads(val, arch_mode, None, Some(out))?;
            let ga = ga.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?;
            return store(ga, dalpha_out).map(|()| None);
        }
        // w' = w - xi (momentum * v + g + wd * w)
        let grad_only = Mode {
            grad_weights: true,
            grad_arch: false,
            ..arch_mode
        };
        let (g_train, _) = self.loss_grads(train, grad_only, None, None)?;
        let g_train = g_train.ok_or_else(|| Error::invalid("arch step", "no weight gradients"))?;
        let mut unrolled = self.net.weights.deep_copy(&be)?;
        for ((id, g), v) in self
            .net
            .weights
            .ids()
            .zip(&g_train)
            .zip(self.weight_opt.state.tensors())
        {
            let name = self.net.weights.name(id).to_string();
            let w = unrolled.get_mut(id).buf_mut(&name)?;
            let wd = self.hyper.weight_decay;
            be.scale_assign(w, 1.0 - lr * wd)?;
            be.axpy(w, -lr, &g.buf)?;
            be.axpy(w, -lr * self.hyper.momentum, &v.buf)?;
        }
        drop(g_train);
        // grad of L_val at (w', alpha), for both w' and alpha.
        let both = Mode {
            grad_weights: true,
            grad_arch: true,
            ..Mode::ARCH_STEP
        };
        let (dw, da) = self.loss_grads(val, both, Some(&unrolled), Some(out))?;
        let unrolled = keep_parts.then_some(unrolled);
        let (dw, mut dalpha) = (
            dw.ok_or_else(|| Error::invalid("arch step", "no weight gradients"))?,
            da.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
        );
        let unrolled_dalpha = match keep_parts {
            true => Some(copy_all(&be, &dalpha)?),
            false => None,
        };
        // eps = radius / ||dw|| stays on the device: the shifts scale dw by radius * (1 /
        // ||dw||), and the correction xi / (2 eps) = xi ||dw|| / (2 radius). A zero norm gives
        // zero shifts and a zero correction (the host rule "skip when ||dw|| = 0").
        let norms = grad_norm_scalars(&be, &dw, f64::INFINITY)?;
        out.record_norm(&be, &norms)?;
        let radius = self.hyper.hvp_radius;
        let w_plus = shifted(
            &be,
            &self.net.weights,
            &dw,
            radius,
            &norms,
            norm_scalars::INV_NORM,
        )?;
        let (_, g_plus) = self.loss_grads(train, arch_mode, Some(&w_plus), None)?;
        drop(w_plus);
        let w_minus = shifted(
            &be,
            &self.net.weights,
            &dw,
            -radius,
            &norms,
            norm_scalars::INV_NORM,
        )?;
        let (_, g_minus) = self.loss_grads(train, arch_mode, Some(&w_minus), None)?;
        drop(w_minus);
        let dw = keep_parts.then_some(dw);
        let (g_plus, g_minus) = (
            g_plus.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
            g_minus.ok_or_else(|| Error::invalid("arch step", "no alpha gradients"))?,
        );
        // dalpha -= xi * (g+ - g-) / (2 eps)
        let c = lr / (2.0 * radius);
        let norm = |buf| ScalarRef {
            buf,
            index: norm_scalars::NORM,
        };
        for ((d, gp), gm) in dalpha.iter_mut().zip(&g_plus).zip(&g_minus) {
            let buf = d.buf_mut("alpha gradient")?;
            be.axpy_scaled(buf, -c, norm(&norms), &gp.buf)?;
            be.axpy_scaled(buf, c, norm(&norms), &gm.buf)?;
        }
        store(dalpha, dalpha_out)?;
        let (Some(weights), Some(dalpha), Some(dw)) = (unrolled, unrolled_dalpha, dw) else {
            return Ok(None);
        };
        // implicit = (g+ - g-) / 2R = (g+ - g-) ||dw|| / (2 radius)
        let mut implicit = Vec::with_capacity(g_plus.len());
        for (gp, gm) in g_plus.iter().zip(&g_minus) {
            let mut t = Tensor::zeros(&be, gp.shape.clone())?;
            let buf = t.buf_mut("implicit gradient")?;
            be.axpy_scaled(buf, 0.5 / radius, norm(&norms), &gp.buf)?;
            be.axpy_scaled(buf, -0.5 / radius, norm(&norms), &gm.buf)?;
            implicit.push(t);
        }
        Ok(Some(RawParts {
            weights,
            dalpha,
            dw,
            implicit,
            norms: be.copy(&norms)?,
        }))
    }
}
