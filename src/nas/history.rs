//! A search's history, whatever the strategy (SPOS's evolution, random search, aging
//! evolution, REINFORCE): every architecture scored, in query order, and the best of them.
//! Shared here so that the strategies and the runs that write them to disk agree on one type.

/// One scored architecture and when the search met it.
#[derive(Clone, Debug)]
pub struct Scored<A> {
    pub arch: A,
    pub score: f64,
    /// The generation that proposed it (SPOS: 0 for the initial population; random search
    /// and the multi-trial strategies: 0).
    pub generation: usize,
    /// Its rank among the scores asked so far (1-based): the x axis of an anytime curve.
    pub query: usize,
}

/// The best of a search's history (highest score, the earliest on a tie).
pub fn best<A: Clone>(history: &[Scored<A>]) -> Option<&Scored<A>> {
    history
        .iter()
        .fold(None, |b: Option<&Scored<A>>, s| match b {
            Some(b) if b.score >= s.score => Some(b),
            _ => Some(s),
        })
}
