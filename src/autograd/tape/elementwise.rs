//! Tape ops applied element by element: `add` (and `sum` over several values), `scale`,
//! `mul`, the activations `relu` (one var per input: see `Tape::relu_of`), `sigmoid`,
//! `tanh` and `silu`, squeeze-and-excitation's channel scale, drop-path (a per-sample scale)
//! and dropout, each with its backward.

use super::{Tape, Var};
use crate::autograd::saved::Saved;
use crate::backend::{Backend, DeviceOps, Element};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A backward op `dx = f(y, dy)` from the forward output (`sigmoid_bwd`, `tanh_bwd`).
type FromOutput<B> = fn(&B, &Storage<B>, &Storage<B>) -> Result<Storage<B>>;
type Storage<B> = <B as DeviceOps>::Storage;

impl<B: Backend> Tape<B> {
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

    /// `a * b` element by element; backward is two products (`dy * b`, `dy * a`), each made
    /// only when that input needs a gradient.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.same_shape("mul", a, b)?;
        let y = self.backend.mul(&self.value(a)?.buf, &self.value(b)?.buf)?;
        let shape = self.shape(a).clone();
        let (sa, sb) = (self.save(a)?, self.save(b)?);
        Ok(self.push(
            Tensor::new(y, shape),
            &[a, b],
            Box::new(move |be, dy, need, _| {
                let da = need[0].then(|| be.mul(dy, &*sb.read(be)?)).transpose()?;
                let db = need[1].then(|| be.mul(dy, &*sa.read(be)?)).transpose()?;
                Ok(vec![da, db])
            }),
        ))
    }

    /// `1 / (1 + exp(-x))`; backward from the saved output.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        let y = self.backend.sigmoid_fwd(&self.value(x)?.buf)?;
        self.push_saving_output(x, y, |be, y, dy| be.sigmoid_bwd(y, dy))
    }

    /// `tanh(x)`; backward from the saved output.
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        let y = self.backend.tanh_fwd(&self.value(x)?.buf)?;
        self.push_saving_output(x, y, |be, y, dy| be.tanh_bwd(y, dy))
    }

    /// SiLU (swish) `x * sigmoid(x)`; backward from the saved input (`Backend::silu_bwd`).
    pub fn silu(&mut self, x: Var) -> Result<Var> {
        let y = self.backend.silu_fwd(&self.value(x)?.buf)?;
        let shape = self.shape(x).clone();
        let xs = self.save(x)?;
        Ok(self.push(
            Tensor::new(y, shape),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.silu_bwd(&*xs.read(be)?, dy)?)])),
        ))
    }

    /// Records `y = f(x)` whose backward `bwd(y, dy)` reads only the output, kept through
    /// the node's own saved handle (as `relu`).
    fn push_saving_output(&mut self, x: Var, y: B::Storage, bwd: FromOutput<B>) -> Result<Var> {
        let y = Tensor::new(y, self.shape(x).clone());
        let saved = Saved::new(&y);
        let keep = saved.clone();
        let y = self.push(
            y,
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(bwd(be, &*keep.read(be)?, dy)?)])),
        );
        self.nodes[y.0].saved = Some(saved);
        Ok(y)
    }

    /// Squeeze-and-excitation's channel scale: `x` [N, C, H, W] times `s` [N, C] per plane;
    /// backward is one fused op giving both gradients (`Backend::channel_scale_bwd`).
    pub fn channel_scale(&mut self, x: Var, s: Var) -> Result<Var> {
        let xd = self.nchw(x, "channel_scale")?;
        if self.shape(s).dims() != [xd.n, xd.c] {
            return Err(Error::shape(
                "channel_scale",
                format!("scale {} for input {}", self.shape(s), xd.shape()),
            ));
        }
        let y = self
            .backend
            .channel_scale_fwd(&self.value(x)?.buf, xd, &self.value(s)?.buf)?;
        let (xs, ss) = (self.save(x)?, self.save(s)?);
        Ok(self.push(
            Tensor::new(y, xd.shape()),
            &[x, s],
            Box::new(move |be, dy, _, _| {
                let (dx, ds) = be.channel_scale_bwd(&*xs.read(be)?, &*ss.read(be)?, dy, xd)?;
                Ok(vec![Some(dx), Some(ds)])
            }),
        ))
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

    /// Dropout with probability `p`: each element kept with probability `1 - p` and scaled by
    /// `1 / (1 - p)` (PyTorch's inverted dropout), the mask drawn from `rng` on the host, so a
    /// seed reproduces it on every device. `p = 0` returns `x` itself (eval mode passes 0).
    pub fn dropout(&mut self, x: Var, p: f64, rng: &mut crate::rng::Rng) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout probability",
                format!("{p} is not in [0, 1)"),
            ));
        }
        if p == 0.0 {
            return Ok(x);
        }
        let keep = 1.0 - p;
        let shape = self.shape(x).clone();
        let mask: Vec<B::Elem> = (0..shape.numel())
            .map(|_| B::Elem::from_f64(if rng.bernoulli(keep) { 1.0 / keep } else { 0.0 }))
            .collect();
        let mask = self.constant(Tensor::from_host(&self.backend, &mask, shape)?);
        self.mul(x, mask)
    }
}
