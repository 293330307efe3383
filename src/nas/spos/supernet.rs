//! What a one-shot supernet offers the SPOS trainer and scorer, whatever its space: the
//! forward of one path, and its weights and batch-norm statistics.

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::Backend;
use crate::error::Result;
use crate::nas::space::darts::{DartsArch, DartsSpace};
use crate::nas::space::SearchSpace;
use crate::nas::{Mode, SearchNetwork};

/// A supernet of the space `Space`, run one path at a time.
pub trait Supernet<B: Backend> {
    type Space: SearchSpace;
    /// The space whose architectures are this supernet's paths.
    fn space(&self) -> Self::Space;
    /// Records the forward of `path` on `tape` (logits), with the shared weights.
    fn run_path(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        path: &<Self::Space as SearchSpace>::Arch,
    ) -> Result<Var>;
    fn weights(&self) -> &ParamStore<B>;
    fn weights_mut(&mut self) -> &mut ParamStore<B>;
    /// Batch-norm running means and variances (names ending in `running_mean` /
    /// `running_var`).
    fn buffers(&self) -> &ParamStore<B>;
    fn buffers_mut(&mut self) -> &mut ParamStore<B>;
}

/// The DARTS search network as the DARTS space's supernet: a path is a discrete cell pair,
/// run through [`SearchNetwork::run_path`].
impl<B: Backend> Supernet<B> for SearchNetwork<B> {
    type Space = DartsSpace;
    fn space(&self) -> DartsSpace {
        DartsSpace::default()
    }
    fn run_path(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        path: &DartsArch,
    ) -> Result<Var> {
        SearchNetwork::run_path(self, tape, x, mode, path)
    }
    fn weights(&self) -> &ParamStore<B> {
        &self.weights
    }
    fn weights_mut(&mut self) -> &mut ParamStore<B> {
        &mut self.weights
    }
    fn buffers(&self) -> &ParamStore<B> {
        &self.buffers
    }
    fn buffers_mut(&mut self) -> &mut ParamStore<B> {
        &mut self.buffers
    }
}
