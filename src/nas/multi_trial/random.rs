//! Random search, the baseline every NAS paper compares with: architectures drawn uniformly
//! from the space (inside the constraint), never the same one twice.
//!
//! Draws are rejected until one is new; once [`MAX_TRIES`](super::MAX_TRIES) draws in a row are not, the
//! remaining architectures of a small space are enumerated and one is taken uniformly, so a
//! budget up to the space's size is always met (`spos::random_search` is the same search
//! written for a fixed sample count, without that last step).

use super::snapshot::{parse, to_value};
use super::{draw_accepted, Strategy};
use crate::error::Result;
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Spaces up to this size are enumerated when rejection stops finding new architectures.
const ENUMERATE_LIMIT: usize = 1_000_000;

/// Random search without repeats.
#[derive(Clone, Debug, Default)]
pub struct RandomSearch<A> {
    seen: HashSet<A>,
}

impl<A> RandomSearch<A> {
    pub fn new() -> Self {
        RandomSearch {
            seen: HashSet::new(),
        }
    }
}

impl<S: SearchSpace> Strategy<S> for RandomSearch<S::Arch> {
    fn propose(
        &mut self,
        space: &S,
        rng: &mut Rng,
        accept: &dyn Fn(&S::Arch) -> bool,
    ) -> Result<Option<S::Arch>> {
        let seen = &self.seen;
        let mut next = draw_accepted(space, rng, accept, &|a| !seen.contains(a));
        if next.is_none() {
            // MAX_TRIES misses in a row: the space is nearly exhausted (or the constraint
            // narrow); what is left, if the space can be listed, decides.
            let rest: Vec<S::Arch> = match space.enumerate(ENUMERATE_LIMIT) {
                Ok(all) => all
                    .into_iter()
                    .filter(|a| !seen.contains(a) && accept(a))
                    .collect(),
                Err(_) => Vec::new(),
            };
            if !rest.is_empty() {
                next = Some(rest[rng.below(rest.len())].clone());
            }
        }
        if let Some(a) = &next {
            self.seen.insert(a.clone());
        }
        Ok(next)
    }

    fn observe(&mut self, _space: &S, _arch: &S::Arch, _score: f64) -> Result<()> {
        Ok(())
    }

    /// The architectures proposed so far (sorted, so that equal states write equal JSON).
    fn snapshot(&self, space: &S) -> Result<serde_json::Value> {
        let mut seen: Vec<String> = self.seen.iter().map(|a| space.to_string(a)).collect();
        seen.sort();
        to_value(&RandomState { seen })
    }

    fn restore(&mut self, space: &S, state: &serde_json::Value) -> Result<()> {
        let saved: RandomState = parse(state, "random search")?;
        self.seen = saved
            .seen
            .iter()
            .map(|a| space.parse(a))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// Random search's snapshot: what it will not propose again.
#[derive(Serialize, Deserialize)]
struct RandomState {
    seen: Vec<String>,
}
