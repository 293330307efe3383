//! Search spaces as one abstraction. An architecture of any space is a fixed-length sequence
//! of categorical decisions (decision `i` takes one of `choices()[i]` values); every search
//! strategy (SPOS evolution, random search, regularized evolution, an RL controller) works on
//! that sequence only, through [`SearchSpace`]: seeded uniform sampling, one-decision
//! mutation, uniform crossover, enumeration of small spaces, and the canonical string and JSON
//! forms. What a space adds is its decoding (the sequence as a cell) and its networks.
//!
//! Spaces: [`darts::DartsSpace`] (the DARTS cell: normal and reduction cell, 4 nodes of two
//! inputs each, 7 operations) and [`nb201::Nb201Space`] (the NAS-Bench-201 cell: 6 edges, 5
//! operations), and [`mbconv::MbConvSpace`] (MnasNet / EfficientNet-B0 style: seven stages
//! of MBConv blocks, each choosing kernel, expansion, depth and SE). The networks built from
//! them: `nas::eval_model` (DARTS), `nas::nb201_model` (NB201) and `nas::mbconv_model`
//! (MBConv), all trained by `nas::train_run` through `nas::classifier`.

pub mod darts;
pub mod mbconv;
pub mod nb201;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A space of architectures, each a sequence of categorical decisions.
pub trait SearchSpace {
    /// One architecture of the space.
    type Arch: Clone + PartialEq + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync;

    /// The space's name on the command line (`darts`, `nb201`, `mbconv`).
    fn name(&self) -> &'static str;
    /// The number of values of each decision, in order (the action sizes of a controller).
    fn choices(&self) -> &[usize];
    /// What decision `i` chooses, for messages and reports ("edge 0->2", "normal node 3 inputs").
    fn decision_name(&self, i: usize) -> String;
    /// The decisions of `arch`, each below its `choices()` entry.
    fn encode(&self, arch: &Self::Arch) -> Vec<usize>;
    /// The architecture of a decision sequence (an error names the first decision out of range).
    fn decode(&self, decisions: &[usize]) -> Result<Self::Arch>;
    /// The canonical one-line form (the NB201 arch string, the DARTS genotype in Python form).
    fn to_string(&self, arch: &Self::Arch) -> String;
    /// Parses the canonical form (and any other form the space documents).
    fn parse(&self, text: &str) -> Result<Self::Arch>;
    /// The JSON form written to run folders.
    fn to_json(&self, arch: &Self::Arch) -> serde_json::Value;
    /// Reads the JSON form back (a method: what the JSON means depends on the space).
    #[allow(clippy::wrong_self_convention)]
    fn from_json(&self, value: &serde_json::Value) -> Result<Self::Arch>;

    /// The number of architectures (the product of the choices; saturates at `u128::MAX`).
    fn size(&self) -> u128 {
        self.choices()
            .iter()
            .fold(1u128, |n, &c| n.saturating_mul(c as u128))
    }

    /// An architecture drawn uniformly from the space: each decision uniform and independent,
    /// so each architecture has probability `1 / size()`.
    fn sample(&self, rng: &mut Rng) -> Self::Arch {
        let d: Vec<usize> = self.choices().iter().map(|&c| rng.below(c)).collect();
        self.decode(&d)
            .expect("decisions drawn below their choice counts decode")
    }

    /// `arch` with exactly one decision changed to another of its values, the decision chosen
    /// uniformly among those with more than one value, the new value uniformly among the rest.
    /// A space of single-valued decisions returns `arch` itself.
    fn mutate(&self, arch: &Self::Arch, rng: &mut Rng) -> Self::Arch {
        let mut d = self.encode(arch);
        let free: Vec<usize> = (0..d.len()).filter(|&i| self.choices()[i] > 1).collect();
        if free.is_empty() {
            return arch.clone();
        }
        let i = free[rng.below(free.len())];
        // A uniform draw among the other values: skip over the current one.
        let v = rng.below(self.choices()[i] - 1);
        d[i] = if v >= d[i] { v + 1 } else { v };
        self.decode(&d).expect("a changed decision stays in range")
    }

    /// Mutation with SPOS's rule: every decision independently, with probability `prob`, takes
    /// a fresh uniform value (possibly its old one).
    fn mutate_each(&self, arch: &Self::Arch, prob: f64, rng: &mut Rng) -> Self::Arch {
        let mut d = self.encode(arch);
        for (v, &c) in d.iter_mut().zip(self.choices()) {
            if rng.bernoulli(prob) {
                *v = rng.below(c);
            }
        }
        self.decode(&d)
            .expect("decisions drawn below their choice counts decode")
    }

    /// Uniform crossover: each decision taken from `a` or `b` with probability 1/2.
    fn crossover(&self, a: &Self::Arch, b: &Self::Arch, rng: &mut Rng) -> Self::Arch {
        let (da, db) = (self.encode(a), self.encode(b));
        let d: Vec<usize> = da
            .iter()
            .zip(&db)
            .map(|(&x, &y)| if rng.bernoulli(0.5) { x } else { y })
            .collect();
        self.decode(&d)
            .expect("decisions of two valid parents decode")
    }

    /// Every architecture in decision order (the last decision varies fastest), or an error
    /// when there are more than `limit`.
    fn enumerate(&self, limit: usize) -> Result<Vec<Self::Arch>> {
        let size = self.size();
        if size > limit as u128 {
            return Err(Error::invalid(
                "search space",
                format!(
                    "{} holds {size} architectures, more than the {limit} an enumeration allows",
                    self.name()
                ),
            ));
        }
        let choices = self.choices();
        let mut d = vec![0usize; choices.len()];
        let mut out = Vec::with_capacity(size as usize);
        for _ in 0..size {
            out.push(self.decode(&d)?);
            for i in (0..d.len()).rev() {
                d[i] += 1;
                if d[i] < choices[i] {
                    break;
                }
                d[i] = 0;
            }
        }
        Ok(out)
    }
}

/// Checks a decision sequence against its choice counts: the shared first step of every
/// `decode`.
pub fn check_decisions<S: SearchSpace + ?Sized>(space: &S, decisions: &[usize]) -> Result<()> {
    let choices = space.choices();
    if decisions.len() != choices.len() {
        return Err(Error::invalid(
            "architecture",
            format!(
                "{} decisions where the {} space has {}",
                decisions.len(),
                space.name(),
                choices.len()
            ),
        ));
    }
    for (i, (&d, &c)) in decisions.iter().zip(choices).enumerate() {
        if d >= c {
            return Err(Error::invalid(
                "architecture",
                format!(
                    "decision {i} ({}) is {d}, expected below {c}",
                    space.decision_name(i)
                ),
            ));
        }
    }
    Ok(())
}
