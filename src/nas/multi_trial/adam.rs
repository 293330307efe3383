//! Adam (Kingma and Ba, 2015) on a host vector of f64, with PyTorch's update rule: the
//! controller of a multi-trial search has tens of parameters and one update per query, so it
//! needs no backend and no tensors (`optim::Adam` is the device version for networks).

use serde::{Deserialize, Serialize};

/// Adam's settings and moments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: u64,
}

impl Adam {
    /// Adam for `n` parameters, PyTorch's defaults besides `lr` (betas 0.9, 0.999; eps 1e-8).
    pub fn new(n: usize, lr: f64) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// Whether the moments are those of `n` parameters (a restored state's check).
    pub fn fits(&self, n: usize) -> bool {
        self.m.len() == n && self.v.len() == n
    }

    /// The steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One step descending `grad` (the gradient of a loss to minimize):
    /// `p -= lr * m_hat / (sqrt(v_hat) + eps)` with bias-corrected moments.
    pub fn step(&mut self, params: &mut [f64], grad: &[f64]) {
        debug_assert_eq!(params.len(), self.m.len());
        debug_assert_eq!(grad.len(), self.m.len());
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t as i32);
        let c2 = 1.0 - self.beta2.powi(self.t as i32);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
        }
    }
}
