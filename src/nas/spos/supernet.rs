//! What a one-shot supernet offers the SPOS trainer, scorer and run, whatever its space:
//! [`Supernet`] (the forward of one path, its weights and batch-norm statistics, the weights
//! a path uses, the `state_dict`) and [`SupernetConfig`] (the sizes a run records and builds
//! it from). The DARTS space's supernet is the DARTS search network run one path at a time
//! ([`SearchConfig`] / [`SearchNetwork`]), the NB201 space's the NB201 network with every
//! operation on every edge ([`Nb201SupernetConfig`] / [`Nb201Supernet`]).

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::HostTensor;
use crate::nas::classifier::{NetworkConfig, StateDict};
use crate::nas::eval_model::EvalConfig;
use crate::nas::nb201_model::Nb201Config;
use crate::nas::nb201_model::{Nb201Supernet, Nb201SupernetConfig};
use crate::nas::space::darts::{DartsArch, DartsSpace, OPS};
use crate::nas::space::nb201::{Nb201Arch, Nb201Space};
use crate::nas::space::SearchSpace;
use crate::nas::train_run::TrainHyper;
use crate::nas::{Mode, SearchConfig, SearchNetwork};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

/// The architecture type of a supernet's space.
pub type PathOf<B, N> = <<N as Supernet<B>>::Space as SearchSpace>::Arch;

/// A supernet of the space `Space`, run one path at a time.
pub trait Supernet<B: Backend> {
    type Space: SearchSpace + Default;
    /// The space whose architectures are this supernet's paths.
    fn space(&self) -> Self::Space {
        Self::Space::default()
    }
    /// Checks that `path` is one this supernet can run (its operations are all held).
    fn check_path(&self, path: &PathOf<B, Self>) -> Result<()>;
    /// Records the forward of `path` on `tape` (logits), with the shared weights.
    fn run_path(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        path: &PathOf<B, Self>,
    ) -> Result<Var>;
    /// The number of weights `path` uses (those outside the cells' operations and those of
    /// its operations): SPOS's parameter range is on it.
    fn path_weights(&self, path: &PathOf<B, Self>) -> Result<usize>;
    fn weights(&self) -> &ParamStore<B>;
    fn weights_mut(&mut self) -> &mut ParamStore<B>;
    /// Batch-norm running means and variances (names ending in `running_mean` /
    /// `running_var`).
    fn buffers(&self) -> &ParamStore<B>;
    fn buffers_mut(&mut self) -> &mut ParamStore<B>;
    /// The PyTorch `state_dict` (weights, running statistics, BN counters).
    fn state_dict(&self, backend: &B) -> Result<StateDict>;
    /// Loads a `state_dict` strictly, ignoring names starting with one of `ignore_prefixes`.
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()>;
}

/// The sizes of a supernet: what a SPOS run records and builds it from.
pub trait SupernetConfig: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    type Space: SearchSpace + Default;
    type Net<B: Backend>: Supernet<B, Space = Self::Space>;
    /// Builds the supernet with PyTorch's default initialisation, drawn from `seed`; refuses
    /// one on which some path of the space cannot run.
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<Self::Net<B>>;
    fn classes(&self) -> usize;
    fn in_channels(&self) -> usize;
    /// Checks that `h x w` images pass the supernet.
    fn check_image_size(&self, h: usize, w: usize) -> Result<()>;
    /// The sizes in one phrase for messages (`C=4 L=5`).
    fn describe(&self) -> String;
    /// The stand-alone network of a path (what `nasrs train` trains from scratch), at the
    /// supernet's sizes.
    type Standalone: NetworkConfig;
    fn standalone(&self, path: &<Self::Space as SearchSpace>::Arch) -> Self::Standalone;
    /// How the stand-alone network is trained from scratch (its space's usual recipe).
    fn standalone_hyper(&self) -> TrainHyper;
    /// The files (name, content) a run writes the best architecture to besides `best.json`
    /// (the space's JSON form): the form the next command reads.
    fn arch_files(arch: &<Self::Space as SearchSpace>::Arch) -> Vec<(&'static str, String)>;
}

/// The DARTS search network as the DARTS space's supernet: a path is a discrete cell pair,
/// run through [`SearchNetwork::run_path`].
impl<B: Backend> Supernet<B> for SearchNetwork<B> {
    type Space = DartsSpace;
    fn check_path(&self, path: &DartsArch) -> Result<()> {
        SearchNetwork::check_path(self, path)
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
    fn path_weights(&self, path: &DartsArch) -> Result<usize> {
        SearchNetwork::path_weights(self, path)
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
    fn state_dict(&self, backend: &B) -> Result<StateDict> {
        SearchNetwork::state_dict(self, backend)
    }
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        SearchNetwork::load_state_dict(self, backend, tensors, ignore_prefixes, path)
    }
}

impl SupernetConfig for SearchConfig {
    type Space = DartsSpace;
    type Net<B: Backend> = SearchNetwork<B>;
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<SearchNetwork<B>> {
        // Every path of the space must run: all 4 nodes concatenated, all 7 operations.
        if let Some(op) = OPS.iter().find(|op| !self.ops.contains(op)) {
            return Err(Error::invalid(
                "--ops",
                format!("SPOS samples every operation; {} is missing", op.name()),
            ));
        }
        let net = SearchNetwork::new(backend, self.clone(), seed)?;
        net.check_path(&DartsSpace::default().sample(&mut crate::rng::Rng::new(0)))?;
        Ok(net)
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        SearchConfig::check_image_size(self, h, w)
    }
    fn describe(&self) -> String {
        format!("C={} L={}", self.channels, self.layers)
    }
    type Standalone = EvalConfig;
    fn standalone(&self, path: &DartsArch) -> EvalConfig {
        EvalConfig {
            genotype: path.to_genotype(),
            channels: self.channels,
            layers: self.layers,
            classes: self.classes,
            in_channels: self.in_channels,
            auxiliary: false,
        }
    }
    /// DARTS' training recipe without drop-path and auxiliary head (a short run from
    /// scratch, as the supernet trains).
    fn standalone_hyper(&self) -> TrainHyper {
        TrainHyper {
            drop_path: 0.0,
            auxiliary_weight: 0.0,
            ..TrainHyper::default()
        }
    }
    fn arch_files(arch: &DartsArch) -> Vec<(&'static str, String)> {
        vec![(
            "genotype.py",
            format!("{}\n", arch.to_genotype().to_python()),
        )]
    }
}

impl<B: Backend> Supernet<B> for Nb201Supernet<B> {
    type Space = Nb201Space;
    fn check_path(&self, _path: &Nb201Arch) -> Result<()> {
        // Every edge holds all five operations: every path runs.
        Ok(())
    }
    fn run_path(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        path: &Nb201Arch,
    ) -> Result<Var> {
        Nb201Supernet::run_path(self, tape, x, mode, path)
    }
    fn path_weights(&self, path: &Nb201Arch) -> Result<usize> {
        Ok(Nb201Supernet::path_weights(self, path))
    }
    fn weights(&self) -> &ParamStore<B> {
        Nb201Supernet::weights(self)
    }
    fn weights_mut(&mut self) -> &mut ParamStore<B> {
        Nb201Supernet::weights_mut(self)
    }
    fn buffers(&self) -> &ParamStore<B> {
        Nb201Supernet::buffers(self)
    }
    fn buffers_mut(&mut self) -> &mut ParamStore<B> {
        Nb201Supernet::buffers_mut(self)
    }
    fn state_dict(&self, backend: &B) -> Result<StateDict> {
        Nb201Supernet::state_dict(self, backend)
    }
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        Nb201Supernet::load_state_dict(self, backend, tensors, ignore_prefixes, path)
    }
}

impl SupernetConfig for Nb201SupernetConfig {
    type Space = Nb201Space;
    type Net<B: Backend> = Nb201Supernet<B>;
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<Nb201Supernet<B>> {
        Nb201Supernet::new(backend, self.clone(), seed)
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        Nb201SupernetConfig::check_image_size(self, h, w)
    }
    fn describe(&self) -> String {
        format!("C={} N={}", self.channels, self.cells_per_stage)
    }
    type Standalone = Nb201Config;
    fn standalone(&self, path: &Nb201Arch) -> Nb201Config {
        self.network(*path)
    }
    fn standalone_hyper(&self) -> TrainHyper {
        TrainHyper::nb201()
    }
    fn arch_files(arch: &Nb201Arch) -> Vec<(&'static str, String)> {
        vec![("arch.txt", format!("{}\n", arch.to_arch_string()))]
    }
}
