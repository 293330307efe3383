//! A per-decision categorical policy, NAS-Bench-201's REINFORCE baseline: one independent
//! softmax over each decision's values, so `p(arch) = prod_i softmax(theta_i)[a_i]`.
//! Sampling, log-probabilities, the entropy and their exact gradients in the logits, which
//! REINFORCE's update is made of (checked against finite differences in the tests).

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Logits per decision (`logits[i][v]`: decision `i` taking value `v`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoricalPolicy {
    pub logits: Vec<Vec<f64>>,
}

/// `softmax(z)`, shifted by the maximum so that no exponential overflows.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

impl CategoricalPolicy {
    /// The uniform policy (all logits zero) over decisions with `choices` values each.
    pub fn uniform(choices: &[usize]) -> Self {
        CategoricalPolicy {
            logits: choices.iter().map(|&c| vec![0.0; c]).collect(),
        }
    }

    /// Each decision's probabilities.
    pub fn probs(&self) -> Vec<Vec<f64>> {
        self.logits.iter().map(|z| softmax(z)).collect()
    }

    /// One draw of every decision (inverse CDF, one uniform number per decision).
    pub fn sample(&self, rng: &mut Rng) -> Vec<usize> {
        self.probs()
            .iter()
            .map(|p| {
                let u = rng.uniform();
                let mut acc = 0.0;
                for (v, &pv) in p.iter().enumerate() {
                    acc += pv;
                    if u < acc {
                        return v;
                    }
                }
                // Rounding left the sum just below 1 and u above it: the last value.
                p.len() - 1
            })
            .collect()
    }

    /// The most likely value of each decision (the first on a tie).
    pub fn mode(&self) -> Vec<usize> {
        self.logits
            .iter()
            .map(|z| (0..z.len()).fold(0, |best, v| if z[v] > z[best] { v } else { best }))
            .collect()
    }

    /// `log p(decisions)`.
    pub fn log_prob(&self, decisions: &[usize]) -> f64 {
        self.probs()
            .iter()
            .zip(decisions)
            .map(|(p, &d)| p[d].ln())
            .sum()
    }

    /// The entropy of the policy, the sum of the decisions' entropies (in nats).
    pub fn entropy(&self) -> f64 {
        self.probs()
            .iter()
            .flatten()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum()
    }

    /// `d log p(decisions) / d logits`: `onehot(a_i) - softmax(theta_i)` per decision.
    pub fn log_prob_grad(&self, decisions: &[usize]) -> Vec<Vec<f64>> {
        self.probs()
            .into_iter()
            .zip(decisions)
            .map(|(mut p, &d)| {
                p.iter_mut().for_each(|x| *x = -*x);
                p[d] += 1.0;
                p
            })
            .collect()
    }

    /// `d entropy / d logits`: `-p_k (log p_k + H_i)` for decision `i`'s value `k`.
    pub fn entropy_grad(&self) -> Vec<Vec<f64>> {
        self.probs()
            .into_iter()
            .map(|p| {
                let h: f64 = p.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum();
                p.iter()
                    .map(|&x| if x > 0.0 { -x * (x.ln() + h) } else { 0.0 })
                    .collect()
            })
            .collect()
    }

    /// The logits as one vector, decision after decision.
    pub fn flat(&self) -> Vec<f64> {
        self.logits.iter().flatten().copied().collect()
    }

    /// Sets the logits from a vector laid out as [`CategoricalPolicy::flat`] returns it.
    pub fn set_flat(&mut self, flat: &[f64]) {
        let mut it = flat.iter();
        for z in &mut self.logits {
            for x in z.iter_mut() {
                if let Some(&v) = it.next() {
                    *x = v;
                }
            }
        }
    }
}
