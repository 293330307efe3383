//! An LSTM controller (Zoph and Le 2017; ENAS's sampler) on the tape: it emits a space's
//! decisions in order, one LSTM step per decision. Step `i` reads the embedding of decision
//! `i - 1`'s value (a learned start vector at step 0), and a linear head per decision turns
//! the hidden state into that decision's logits; the value drawn from their softmax feeds the
//! next step. `p(arch)` is the product of the steps' probabilities given the earlier values,
//! so unlike the per-decision policy (`policy.rs`) the controller can learn dependencies
//! between decisions.
//!
//! Everything up to the logits is recorded on a [`Tape`] over any backend (the backend's
//! `linear`, `sigmoid`, `tanh`, `mul`, `add`). The REINFORCE loss
//! `-advantage * log p(arch) - entropy_coef * H` is a function of the logits alone, whose
//! gradient in each step's logits is closed form (`policy.rs`: `onehot - softmax` and the
//! entropy's); backward starts from the surrogate `sum_i <z_i, g_i>` with those gradients
//! `g_i` as constants, which has the loss's gradient in every parameter. Logits are a few
//! numbers per step, read on the host to sample anyway.

use super::policy::CategoricalPolicy;
use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// ENAS's initialisation: every weight uniform in `[-INIT_RANGE, INIT_RANGE]`.
const INIT_RANGE: f64 = 0.1;

/// The LSTM's four gates, in PyTorch's order: input, forget, cell, output.
const GATES: usize = 4;

/// The controller's parameters (in one [`ParamStore`], for `optim::Adam`) and its backend.
pub struct LstmController<B: Backend> {
    backend: B,
    store: ParamStore<B>,
    choices: Vec<usize>,
    hidden: usize,
    /// Step 0's input `[1, hidden]`.
    start: ParamId,
    /// Per gate: input weight `[hidden, hidden]`, recurrent weight `[hidden, hidden]`, bias.
    gates: Vec<(ParamId, ParamId, ParamId)>,
    /// Per decision but the last: the embeddings of its values, `[hidden, choices]`, read as
    /// `onehot(value) W^T`.
    embeddings: Vec<ParamId>,
    /// Per decision: the head's weight `[choices, hidden]` and bias.
    heads: Vec<(ParamId, ParamId)>,
}

/// One pass of the controller: each step's logits on the tape, on the host, and the values.
pub struct Rollout {
    pub logits: Vec<Var>,
    pub policy: CategoricalPolicy,
    pub decisions: Vec<usize>,
}

impl<B: Backend> LstmController<B> {
    /// A controller for decisions with `choices` values each and a hidden state (and
    /// embedding) of `hidden`, its weights drawn from `rng`.
    pub fn new(backend: B, choices: &[usize], hidden: usize, rng: &mut Rng) -> Result<Self> {
        if hidden == 0 {
            return Err(Error::invalid("--lstm-hidden", "must be at least 1"));
        }
        if choices.is_empty() || choices.contains(&0) {
            return Err(Error::invalid(
                "search space",
                format!("decisions {choices:?}: the LSTM needs at least one, each with a value"),
            ));
        }
        let mut store = ParamStore::new();
        let mut add = |name: String, shape: &[usize]| -> Result<ParamId> {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| INIT_RANGE * (2.0 * rng.uniform() - 1.0))
                .collect();
            Ok(store.add(name, Tensor::from_f64(&backend, &v, shape)?))
        };
        let start = add("start".into(), &[1, hidden])?;
        let mut gates = Vec::with_capacity(GATES);
        for g in ["i", "f", "g", "o"] {
            gates.push((
                add(format!("lstm.w_x{g}"), &[hidden, hidden])?,
                add(format!("lstm.w_h{g}"), &[hidden, hidden])?,
                add(format!("lstm.b_{g}"), &[hidden])?,
            ));
        }
        let mut embeddings = Vec::with_capacity(choices.len());
        for (i, &k) in choices[..choices.len() - 1].iter().enumerate() {
            embeddings.push(add(format!("embedding.{i}"), &[hidden, k])?);
        }
        let mut heads = Vec::with_capacity(choices.len());
        for (i, &k) in choices.iter().enumerate() {
            heads.push((
                add(format!("head.{i}.weight"), &[k, hidden])?,
                add(format!("head.{i}.bias"), &[k])?,
            ));
        }
        Ok(LstmController {
            backend,
            store,
            choices: choices.to_vec(),
            hidden,
            start,
            gates,
            embeddings,
            heads,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }
    pub fn store(&self) -> &ParamStore<B> {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut ParamStore<B> {
        &mut self.store
    }

    /// One LSTM step: `(h, c)` from input `x` and the previous `(h, c)`, all `[1, hidden]`.
    fn step(&self, t: &mut Tape<B>, x: Var, h: Var, c: Var) -> Result<(Var, Var)> {
        let gate = |t: &mut Tape<B>, (wx, wh, b): (ParamId, ParamId, ParamId)| {
            let (wx, wh, b) = (
                t.param(&self.store, wx, true),
                t.param(&self.store, wh, true),
                t.param(&self.store, b, true),
            );
            let from_x = t.linear(x, wx, Some(b))?;
            let from_h = t.linear(h, wh, None)?;
            t.add(from_x, from_h)
        };
        let i = gate(t, self.gates[0])?;
        let f = gate(t, self.gates[1])?;
        let g = gate(t, self.gates[2])?;
        let o = gate(t, self.gates[3])?;
        let (i, f, g, o) = (t.sigmoid(i)?, t.sigmoid(f)?, t.tanh(g)?, t.sigmoid(o)?);
        let kept = t.mul(f, c)?;
        let written = t.mul(i, g)?;
        let c = t.add(kept, written)?;
        let squashed = t.tanh(c)?;
        let h = t.mul(o, squashed)?;
        Ok((h, c))
    }

    /// Runs the controller on `t`: with `decisions`, feeds those values (the update's pass);
    /// without, draws each value from its step's softmax with `rng`, one uniform number per
    /// decision (`CategoricalPolicy::sample`'s rule).
    pub fn rollout(
        &self,
        t: &mut Tape<B>,
        decisions: Option<&[usize]>,
        rng: &mut Rng,
    ) -> Result<Rollout> {
        let n = self.choices.len();
        if let Some(d) = decisions {
            if d.len() != n || d.iter().zip(&self.choices).any(|(&v, &k)| v >= k) {
                return Err(Error::invalid(
                    "LSTM controller",
                    format!("decisions {d:?} do not fit choices {:?}", self.choices),
                ));
            }
        }
        let zeros = Tensor::zeros(&self.backend, [1, self.hidden])?;
        let (mut h, mut c) = (t.constant(zeros.clone()), t.constant(zeros));
        let mut x = t.param(&self.store, self.start, true);
        let mut out = Rollout {
            logits: Vec::with_capacity(n),
            policy: CategoricalPolicy { logits: Vec::new() },
            decisions: Vec::with_capacity(n),
        };
        for i in 0..n {
            (h, c) = self.step(t, x, h, c)?;
            let (w, b) = self.heads[i];
            let (w, b) = (t.param(&self.store, w, true), t.param(&self.store, b, true));
            let z = t.linear(h, w, Some(b))?;
            let host = t.value(z)?.to_f64(&self.backend)?;
            let value = match decisions {
                Some(d) => d[i],
                None => CategoricalPolicy {
                    logits: vec![host.clone()],
                }
                .sample(rng)[0],
            };
            out.logits.push(z);
            out.policy.logits.push(host);
            out.decisions.push(value);
            if i + 1 < n {
                let mut onehot = vec![0.0; self.choices[i]];
                onehot[value] = 1.0;
                let onehot = t.constant(Tensor::from_f64(
                    &self.backend,
                    &onehot,
                    [1, self.choices[i]],
                )?);
                let e = t.param(&self.store, self.embeddings[i], true);
                x = t.linear(onehot, e, None)?;
            }
        }
        Ok(out)
    }

    /// Draws an architecture's decisions (nothing recorded for backward).
    pub fn sample(&self, rng: &mut Rng) -> Result<Vec<usize>> {
        let mut t = Tape::new(self.backend.clone());
        t.set_grad_enabled(false);
        Ok(self.rollout(&mut t, None, rng)?.decisions)
    }

    /// The controller's probabilities of `decisions`: each step's softmax, given the values
    /// before it (`log_prob` of the result is `log p(decisions)`).
    pub fn policy_of(&self, decisions: &[usize]) -> Result<CategoricalPolicy> {
        let mut t = Tape::new(self.backend.clone());
        t.set_grad_enabled(false);
        // The decisions are given: the generator is never drawn from.
        Ok(self
            .rollout(&mut t, Some(decisions), &mut Rng::new(0))?
            .policy)
    }

    /// REINFORCE's loss for one sample, `-advantage * log p(decisions) - entropy_coef * H`,
    /// with `H` the sum of the steps' entropies along `decisions` (ENAS's bonus).
    pub fn loss(&self, decisions: &[usize], advantage: f64, entropy_coef: f64) -> Result<f64> {
        let p = self.policy_of(decisions)?;
        Ok(-advantage * p.log_prob(decisions) - entropy_coef * p.entropy())
    }

    /// The loss (as [`LstmController::loss`]) and its gradient in every parameter, in store
    /// order (zeros for a parameter the pass did not reach: the last step's embedding does
    /// not exist, so none).
    pub fn loss_and_gradient(
        &self,
        decisions: &[usize],
        advantage: f64,
        entropy_coef: f64,
    ) -> Result<(f64, Vec<Tensor<B>>)> {
        let mut t = Tape::new(self.backend.clone());
        let r = self.rollout(&mut t, Some(decisions), &mut Rng::new(0))?;
        let p = &r.policy;
        let loss = -advantage * p.log_prob(decisions) - entropy_coef * p.entropy();
        // dloss / dz_i, then the surrogate sum_i <z_i, g_i> (module docs).
        let log_prob = p.log_prob_grad(decisions);
        let entropy = p.entropy_grad();
        let mut terms = Vec::with_capacity(r.logits.len());
        for ((&z, lp), e) in r.logits.iter().zip(&log_prob).zip(&entropy) {
            let g: Vec<f64> = lp
                .iter()
                .zip(e)
                .map(|(&lp, &e)| -advantage * lp - entropy_coef * e)
                .collect();
            let k = g.len();
            let g = t.constant(Tensor::from_f64(&self.backend, &g, [1, k])?);
            terms.push(t.linear(z, g, None)?);
        }
        let surrogate = t.sum(&terms)?;
        let grads = t.backward(surrogate)?;
        Ok((loss, grads.params(&self.backend, &self.store)?))
    }
}
