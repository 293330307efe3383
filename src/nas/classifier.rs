//! What a training run, an evaluation and the size checks need of a network, whatever
//! space its cell comes from: [`NetworkConfig`] (the shape a checkpoint records, and how to
//! build it) and [`Classifier`] (the network: forward to logits, its parameter stores, its
//! `state_dict`). The DARTS evaluation network ([`EvalConfig`] / [`EvalNetwork`]) and the
//! NAS-Bench-201 network ([`Nb201Config`] / [`Nb201Network`]) and the MBConv network
//! ([`MbConvConfig`] / [`MbConvNetwork`]) implement both; `train_run`,
//! `evaluate` and `sizing` are written against these traits only.

use super::eval_model::{self, EvalConfig, EvalNetwork};
use super::mbconv_model::{self, MbConvConfig, MbConvNetwork};
use super::modules::Mode;
use super::nb201_model::{self, Nb201Config, Nb201Network};
use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::{HostTensor, HostTensorI64};
use crate::rng::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

/// A `state_dict` on the host: f32 tensors and the BN counters (i64).
pub type StateDict = (
    BTreeMap<String, HostTensor>,
    BTreeMap<String, HostTensorI64>,
);

/// The shape of a classifier network: what checkpoints and run folders record, and enough
/// to check sizes and build it.
pub trait NetworkConfig: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// The space the cell comes from, as `--space` and checkpoint metadata name it.
    const SPACE: &'static str;
    /// The network this configuration builds on a backend.
    type Network<B: Backend>: Classifier<B, Config = Self>;

    /// Checks every size (a zero, an overflow, an unbuildable cell), naming the flag.
    fn validate(&self) -> Result<()>;
    fn classes(&self) -> usize;
    fn in_channels(&self) -> usize;
    /// Whether training adds an auxiliary loss.
    fn auxiliary(&self) -> bool;
    /// Checks that `h x w` images pass the network.
    fn check_image_size(&self, h: usize, w: usize) -> Result<()>;
    /// The sizes in one phrase for messages (`C=36 L=20`).
    fn describe(&self) -> String;
    /// Builds the network with PyTorch's default initialisation, drawn from `seed`.
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<Self::Network<B>>;
    /// A lower bound of the bytes one step on `batch` images of `h x w` keeps, in checked
    /// arithmetic without building anything (`sizing`); validates the sizes first.
    fn memory_lower_bound(&self, batch: usize, h: usize, w: usize) -> Result<u64>;
    /// Checks the network this describes against the tensors of the file it came from,
    /// before anything is allocated for it.
    fn check_against_tensors(
        &self,
        tensors: &BTreeMap<String, HostTensor>,
        path: &Path,
    ) -> Result<()>;
}

/// A classifier network a training run drives.
pub trait Classifier<B: Backend> {
    type Config: NetworkConfig;

    fn config(&self) -> &Self::Config;
    /// The trained parameters (SGD's).
    fn weights(&self) -> &ParamStore<B>;
    fn weights_mut(&mut self) -> &mut ParamStore<B>;
    /// BN running statistics.
    fn buffers(&self) -> &ParamStore<B>;
    /// Training-mode forwards that updated the running statistics (`num_batches_tracked`).
    fn bn_batches(&self) -> u64;
    fn set_bn_batches(&mut self, batches: u64);
    /// The parameters the network's paper counts.
    fn num_weights(&self) -> usize;
    /// Records the forward pass of images `x`: the logits and, for a network with an
    /// auxiliary head in training mode, the auxiliary logits. Drop-path (probability
    /// `drop_prob`, masks from `rng`) applies in training mode, where the network has it.
    fn run(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<(Var, Option<Var>)>;
    /// The PyTorch `state_dict`.
    fn state_dict(&self, backend: &B) -> Result<StateDict>;
    /// Loads a `state_dict` strictly; keys starting with one of `ignore_prefixes` are skipped.
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()>;
}

impl NetworkConfig for EvalConfig {
    const SPACE: &'static str = "darts";
    type Network<B: Backend> = EvalNetwork<B>;

    fn validate(&self) -> Result<()> {
        EvalConfig::validate(self)
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn auxiliary(&self) -> bool {
        self.auxiliary
    }
    fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        EvalConfig::check_image_size(self, h, w)
    }
    fn describe(&self) -> String {
        format!("C={} L={}", self.channels, self.layers)
    }
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<EvalNetwork<B>> {
        EvalNetwork::new(backend, self.clone(), seed)
    }
    fn memory_lower_bound(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        super::sizing::eval_bound(self, batch, h, w)
    }
    fn check_against_tensors(
        &self,
        tensors: &BTreeMap<String, HostTensor>,
        path: &Path,
    ) -> Result<()> {
        eval_model::check_against_tensors(self, tensors, path)
    }
}

impl<B: Backend> Classifier<B> for EvalNetwork<B> {
    type Config = EvalConfig;

    fn config(&self) -> &EvalConfig {
        &self.config
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
    fn bn_batches(&self) -> u64 {
        self.bn_batches
    }
    fn set_bn_batches(&mut self, batches: u64) {
        self.bn_batches = batches;
    }
    /// The DARTS paper's count: the auxiliary head left out.
    fn num_weights(&self) -> usize {
        EvalNetwork::num_weights(self)
    }
    fn run(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<(Var, Option<Var>)> {
        EvalNetwork::run(self, tape, x, mode, drop_prob, rng)
    }
    fn state_dict(&self, backend: &B) -> Result<StateDict> {
        EvalNetwork::state_dict(self, backend)
    }
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        EvalNetwork::load_state_dict(self, backend, tensors, ignore_prefixes, path)
    }
}

impl NetworkConfig for Nb201Config {
    const SPACE: &'static str = "nb201";
    type Network<B: Backend> = Nb201Network<B>;

    fn validate(&self) -> Result<()> {
        Nb201Config::validate(self)
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn auxiliary(&self) -> bool {
        false
    }
    fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        Nb201Config::check_image_size(self, h, w)
    }
    fn describe(&self) -> String {
        format!(
            "C={} N={} {}",
            self.channels,
            self.cells_per_stage,
            self.arch.to_arch_string()
        )
    }
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<Nb201Network<B>> {
        Nb201Network::new(backend, self.clone(), seed)
    }
    fn memory_lower_bound(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        super::sizing::nb201_bound(self, batch, h, w)
    }
    fn check_against_tensors(
        &self,
        tensors: &BTreeMap<String, HostTensor>,
        path: &Path,
    ) -> Result<()> {
        nb201_model::check_against_tensors(self, tensors, path)
    }
}

impl<B: Backend> Classifier<B> for Nb201Network<B> {
    type Config = Nb201Config;

    fn config(&self) -> &Nb201Config {
        &self.config
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
    fn bn_batches(&self) -> u64 {
        self.bn_batches
    }
    fn set_bn_batches(&mut self, batches: u64) {
        self.bn_batches = batches;
    }
    fn num_weights(&self) -> usize {
        Nb201Network::num_weights(self)
    }
    /// No auxiliary head and no drop-path: a `drop_prob` above 0 is refused.
    fn run(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        drop_prob: f64,
        _rng: &mut Rng,
    ) -> Result<(Var, Option<Var>)> {
        if drop_prob != 0.0 {
            return Err(Error::invalid(
                "--drop-path",
                format!("{drop_prob}: the NB201 network has no drop-path (use 0)"),
            ));
        }
        Ok((Nb201Network::run(self, tape, x, mode)?, None))
    }
    fn state_dict(&self, backend: &B) -> Result<StateDict> {
        Nb201Network::state_dict(self, backend)
    }
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        Nb201Network::load_state_dict(self, backend, tensors, ignore_prefixes, path)
    }
}

impl NetworkConfig for MbConvConfig {
    const SPACE: &'static str = "mbconv";
    type Network<B: Backend> = MbConvNetwork<B>;

    fn validate(&self) -> Result<()> {
        MbConvConfig::validate(self)
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn auxiliary(&self) -> bool {
        false
    }
    fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        MbConvConfig::check_image_size(self, h, w)
    }
    fn describe(&self) -> String {
        MbConvConfig::describe(self)
    }
    fn build<B: Backend>(&self, backend: &B, seed: u64) -> Result<MbConvNetwork<B>> {
        MbConvNetwork::new(backend, self.clone(), seed)
    }
    fn memory_lower_bound(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        super::sizing::mbconv_bound(self, batch, h, w)
    }
    fn check_against_tensors(
        &self,
        tensors: &BTreeMap<String, HostTensor>,
        path: &Path,
    ) -> Result<()> {
        mbconv_model::check_against_tensors(self, tensors, path)
    }
}

impl<B: Backend> Classifier<B> for MbConvNetwork<B> {
    type Config = MbConvConfig;

    fn config(&self) -> &MbConvConfig {
        &self.config
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
    fn bn_batches(&self) -> u64 {
        self.bn_batches
    }
    fn set_bn_batches(&mut self, batches: u64) {
        self.bn_batches = batches;
    }
    fn num_weights(&self) -> usize {
        MbConvNetwork::num_weights(self)
    }
    /// `drop_prob` is stochastic depth's (the last block's drop probability, torchvision's
    /// `stochastic_depth_prob`); dropout is the config's.
    fn run(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        drop_prob: f64,
        rng: &mut Rng,
    ) -> Result<(Var, Option<Var>)> {
        Ok((
            MbConvNetwork::run(self, tape, x, mode, drop_prob, rng)?,
            None,
        ))
    }
    fn state_dict(&self, backend: &B) -> Result<StateDict> {
        MbConvNetwork::state_dict(self, backend)
    }
    fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        MbConvNetwork::load_state_dict(self, backend, tensors, ignore_prefixes, path)
    }
}
