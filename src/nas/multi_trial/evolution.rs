//! Regularized (aging) evolution (Real et al., AAAI 2019). A population of P architectures,
//! first drawn at random; then each cycle samples S members uniformly (with replacement, as
//! the paper's pseudocode and its reference code do), mutates the best of that sample in
//! exactly one decision to a different value ([`SearchSpace::mutate`]), adds the child and
//! removes the **oldest** member, whatever its score: the population is always the last P
//! architectures queried.
//!
//! Presets: P=10, S=3 (the NAS-Bench-201 / NATS-Bench baseline) and P=100, S=25 (the paper's).
//! Under a constraint the mutation is redrawn until the child satisfies it; a parent with no
//! such neighbour after [`MAX_TRIES`] draws gets a random child inside the constraint.

use super::snapshot::{mismatch, parse, to_value};
use super::{draw_accepted, Strategy, MAX_TRIES, RESERVE_MAX};
use crate::error::{Error, Result};
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Aging evolution's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgingConfig {
    /// P: the population size (also the number of random architectures it starts from).
    pub population: usize,
    /// S: the tournament size, members sampled per cycle.
    pub sample_size: usize,
}

impl AgingConfig {
    /// The NAS-Bench-201 baseline's setting.
    pub const NB201: AgingConfig = AgingConfig {
        population: 10,
        sample_size: 3,
    };
    /// The paper's setting.
    pub const PAPER: AgingConfig = AgingConfig {
        population: 100,
        sample_size: 25,
    };

    /// A preset by name: `nb201` (P=10, S=3) or `paper` (P=100, S=25).
    pub fn preset(name: &str) -> Result<AgingConfig> {
        match name {
            "nb201" => Ok(AgingConfig::NB201),
            "paper" => Ok(AgingConfig::PAPER),
            other => Err(Error::invalid(
                "--preset",
                format!("'{other}' (expected nb201 for P=10 S=3, or paper for P=100 S=25)"),
            )),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.population == 0 {
            return Err(Error::invalid("--population", "must be at least 1"));
        }
        if self.sample_size == 0 || self.sample_size > self.population {
            return Err(Error::invalid(
                "--sample-size",
                format!(
                    "{} (expected 1 to the population, {})",
                    self.sample_size, self.population
                ),
            ));
        }
        Ok(())
    }
}

/// A member of the population: an architecture, its score and the query that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member<A> {
    pub arch: A,
    pub score: f64,
    /// The query number (1-based) at which it was scored: its age.
    pub born: usize,
}

/// The last cycle's tournament, by the `born` of the members (for tests and reports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tournament {
    /// The members sampled, in draw order (a member may be drawn twice).
    pub sampled: Vec<usize>,
    /// The winner: the highest score of the sample, the first drawn on a tie.
    pub parent: usize,
}

/// A member in a snapshot: the architecture in the space's canonical form.
#[derive(Serialize, Deserialize)]
struct SavedMember {
    arch: String,
    score: f64,
    born: usize,
}

/// Aging evolution's snapshot: the population (oldest first) and the queries scored.
#[derive(Serialize, Deserialize)]
struct EvolutionState {
    observed: usize,
    population: Vec<SavedMember>,
    last_tournament: Option<Tournament>,
}

/// Aging evolution, ask-and-tell.
#[derive(Clone, Debug)]
pub struct AgingEvolution<A> {
    config: AgingConfig,
    /// Oldest first.
    population: VecDeque<Member<A>>,
    observed: usize,
    last_tournament: Option<Tournament>,
}

impl<A: Clone> AgingEvolution<A> {
    pub fn new(config: AgingConfig) -> Result<Self> {
        config.validate()?;
        Ok(AgingEvolution {
            population: VecDeque::with_capacity(config.population.min(RESERVE_MAX)),
            config,
            observed: 0,
            last_tournament: None,
        })
    }

    pub fn config(&self) -> &AgingConfig {
        &self.config
    }

    /// The population, oldest first.
    pub fn population(&self) -> impl Iterator<Item = &Member<A>> {
        self.population.iter()
    }

    /// The tournament of the last proposal (None while the population is being filled).
    pub fn last_tournament(&self) -> Option<&Tournament> {
        self.last_tournament.as_ref()
    }
}

impl<S: SearchSpace> Strategy<S> for AgingEvolution<S::Arch> {
    fn propose(
        &mut self,
        space: &S,
        rng: &mut Rng,
        accept: &dyn Fn(&S::Arch) -> bool,
    ) -> Result<Option<S::Arch>> {
        let none_found = || Error::invalid("constraint", "no architecture drawn satisfies it");
        if self.population.len() < self.config.population {
            self.last_tournament = None;
            return draw_accepted(space, rng, accept, &|_| true)
                .map(Some)
                .ok_or_else(none_found);
        }
        let mut sampled = Vec::with_capacity(self.config.sample_size.min(RESERVE_MAX));
        let mut parent: Option<&Member<S::Arch>> = None;
        for _ in 0..self.config.sample_size {
            let m = &self.population[rng.below(self.population.len())];
            sampled.push(m.born);
            if parent.is_none_or(|p| m.score > p.score) {
                parent = Some(m);
            }
        }
        let parent = parent.ok_or_else(|| Error::invalid("--sample-size", "must be at least 1"))?;
        self.last_tournament = Some(Tournament {
            sampled,
            parent: parent.born,
        });
        let child = (0..MAX_TRIES)
            .map(|_| space.mutate(&parent.arch, rng))
            .find(|c| accept(c));
        match child {
            Some(c) => Ok(Some(c)),
            None => draw_accepted(space, rng, accept, &|_| true)
                .map(Some)
                .ok_or_else(none_found),
        }
    }

    fn observe(&mut self, _space: &S, arch: &S::Arch, score: f64) -> Result<()> {
        self.observed += 1;
        self.population.push_back(Member {
            arch: arch.clone(),
            score,
            born: self.observed,
        });
        if self.population.len() > self.config.population {
            // Aging: the oldest dies, not the worst.
            self.population.pop_front();
        }
        Ok(())
    }

    fn snapshot(&self, space: &S) -> Result<serde_json::Value> {
        to_value(&EvolutionState {
            observed: self.observed,
            population: self
                .population
                .iter()
                .map(|m| SavedMember {
                    arch: space.to_string(&m.arch),
                    score: m.score,
                    born: m.born,
                })
                .collect(),
            last_tournament: self.last_tournament.clone(),
        })
    }

    fn restore(&mut self, space: &S, state: &serde_json::Value) -> Result<()> {
        let saved: EvolutionState = parse(state, "aging evolution")?;
        if saved.population.len() > self.config.population {
            return Err(mismatch(format!(
                "a population of {} where P is {}",
                saved.population.len(),
                self.config.population
            )));
        }
        let mut population = VecDeque::with_capacity(self.config.population.min(RESERVE_MAX));
        for m in saved.population {
            population.push_back(Member {
                arch: space.parse(&m.arch)?,
                score: m.score,
                born: m.born,
            });
        }
        self.population = population;
        self.observed = saved.observed;
        self.last_tournament = saved.last_tournament;
        Ok(())
    }
}
