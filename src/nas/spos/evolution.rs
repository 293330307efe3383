//! Searching a space with a score function: SPOS's evolution (population, top-k parents,
//! children by per-decision mutation and by crossover, under an optional constraint) and
//! random search. Both work on any [`SearchSpace`] and any score (the supernet's accuracy
//! with inherited weights, a tabular benchmark's column), seeded and deterministic; every
//! architecture is scored once (a repeat is looked up).

use crate::error::{Error, Result};
pub use crate::nas::history::{best, Scored};
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use std::collections::HashMap;

/// SPOS's evolution settings (the paper's defaults).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvolutionConfig {
    pub population: usize,
    pub parents: usize,
    pub mutations: usize,
    pub crossovers: usize,
    pub mutation_prob: f64,
    pub generations: usize,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            population: 50,
            parents: 10,
            mutations: 25,
            crossovers: 25,
            mutation_prob: 0.1,
            generations: 20,
        }
    }
}

impl EvolutionConfig {
    pub fn validate(&self) -> Result<()> {
        if self.population == 0 || self.parents == 0 || self.generations == 0 {
            return Err(Error::invalid(
                "evolution",
                "population, parents and generations must be at least 1",
            ));
        }
        if self.parents > self.population {
            return Err(Error::invalid(
                "evolution",
                format!(
                    "{} parents from a population of {}",
                    self.parents, self.population
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.mutation_prob) {
            return Err(Error::invalid(
                "--mutation-prob",
                format!("{} is not a probability", self.mutation_prob),
            ));
        }
        Ok(())
    }
}

/// Tries this many draws for each candidate before giving up on the constraint.
const MAX_TRIES: usize = 10_000;

struct Memo<'a, A> {
    score: &'a mut dyn FnMut(&A) -> Result<f64>,
    seen: HashMap<A, f64>,
    history: Vec<Scored<A>>,
}

impl<A: Clone + Eq + std::hash::Hash> Memo<'_, A> {
    fn get(&mut self, arch: &A, generation: usize) -> Result<f64> {
        if let Some(&s) = self.seen.get(arch) {
            return Ok(s);
        }
        let s = (self.score)(arch)?;
        self.seen.insert(arch.clone(), s);
        self.history.push(Scored {
            arch: arch.clone(),
            score: s,
            generation,
            query: self.history.len() + 1,
        });
        Ok(s)
    }
}

/// Draws a new candidate with `make` until it is unseen in this generation and `accept`ed.
fn fresh<A: Clone + Eq + std::hash::Hash>(
    taken: &mut std::collections::HashSet<A>,
    accept: &dyn Fn(&A) -> bool,
    mut make: impl FnMut() -> A,
) -> Option<A> {
    for _ in 0..MAX_TRIES {
        let a = make();
        if accept(&a) && !taken.contains(&a) {
            taken.insert(a.clone());
            return Some(a);
        }
    }
    None
}

/// SPOS evolution: an initial population drawn uniformly (inside `accept`), then each
/// generation keeps the `parents` best architectures seen so far and proposes `mutations`
/// children (each decision of a random parent redrawn with `mutation_prob`) and `crossovers`
/// children (uniform crossover of two random parents), plus random ones to refill the
/// population. Returns every architecture scored, in query order; the best is the one with the
/// highest score (the first met on a tie).
pub fn evolution_search<S: SearchSpace>(
    space: &S,
    config: &EvolutionConfig,
    rng: &mut Rng,
    accept: &dyn Fn(&S::Arch) -> bool,
    score: &mut dyn FnMut(&S::Arch) -> Result<f64>,
) -> Result<Vec<Scored<S::Arch>>> {
    config.validate()?;
    let mut memo = Memo {
        score,
        seen: HashMap::new(),
        history: Vec::new(),
    };
    let mut population: Vec<(S::Arch, f64)> = Vec::new();
    let mut top: Vec<(S::Arch, f64)> = Vec::new();
    for generation in 0..config.generations {
        let mut taken = std::collections::HashSet::new();
        let mut candidates: Vec<S::Arch> = Vec::new();
        if !top.is_empty() {
            for _ in 0..config.mutations {
                let parent = top[rng.below(top.len())].0.clone();
                let prob = config.mutation_prob;
                if let Some(a) = fresh(&mut taken, accept, || space.mutate_each(&parent, prob, rng))
                {
                    candidates.push(a);
                }
            }
            for _ in 0..config.crossovers {
                let a = top[rng.below(top.len())].0.clone();
                let b = top[rng.below(top.len())].0.clone();
                if let Some(c) = fresh(&mut taken, accept, || space.crossover(&a, &b, rng)) {
                    candidates.push(c);
                }
            }
        }
        while candidates.len() < config.population {
            match fresh(&mut taken, accept, || space.sample(rng)) {
                Some(a) => candidates.push(a),
                None if candidates.is_empty() => {
                    return Err(Error::invalid(
                        "constraint",
                        "no architecture drawn satisfies it",
                    ))
                }
                None => break,
            }
        }
        population.clear();
        for a in candidates {
            let s = memo.get(&a, generation)?;
            population.push((a, s));
        }
        // The best `parents` seen so far (ties: the earlier first, a stable order).
        top.extend(population.iter().cloned());
        top.sort_by(|x, y| y.1.total_cmp(&x.1));
        let mut unique: Vec<(S::Arch, f64)> = Vec::new();
        for entry in top.drain(..) {
            if !unique.iter().any(|u| u.0 == entry.0) {
                unique.push(entry);
            }
        }
        unique.truncate(config.parents);
        top = unique;
    }
    Ok(memo.history)
}

/// Random search with a budget of `samples` distinct architectures (inside `accept`).
pub fn random_search<S: SearchSpace>(
    space: &S,
    samples: usize,
    rng: &mut Rng,
    accept: &dyn Fn(&S::Arch) -> bool,
    score: &mut dyn FnMut(&S::Arch) -> Result<f64>,
) -> Result<Vec<Scored<S::Arch>>> {
    let mut memo = Memo {
        score,
        seen: HashMap::new(),
        history: Vec::new(),
    };
    let mut taken = std::collections::HashSet::new();
    for _ in 0..samples {
        match fresh(&mut taken, accept, || space.sample(rng)) {
            Some(a) => {
                memo.get(&a, 0)?;
            }
            None => break,
        }
    }
    if memo.history.is_empty() {
        return Err(Error::invalid(
            "constraint",
            "no architecture drawn satisfies it",
        ));
    }
    Ok(memo.history)
}
