//! The NB201 supernet: the NB201 network with every edge of every cell holding all five
//! operations (named as NB201's search cells name them: `cells.{i}.edges.{j<-i}.{k}.op.1.weight`,
//! `k` the operation's index in [`Nb201Op::ALL`]), run one path at a time. A path is one cell
//! architecture, run by every cell (the NB201 space shares the cell across the network), with
//! the supernet's weights for its operations: SPOS on the NB201 space.

use super::cell::CellOps;
use super::{Nb201Config, Nb201Network};
use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::Backend;
use crate::error::Result;
use crate::io::HostTensor;
use crate::nas::classifier::StateDict;
use crate::nas::modules::Mode;
use crate::nas::space::nb201::{Nb201Arch, Nb201Op, EDGES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The sizes of an NB201 supernet (those of the NB201 network, without a cell).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nb201SupernetConfig {
    /// Channels C of the first stage (2C and 4C in the others).
    pub channels: usize,
    /// Cells per stage N.
    pub cells_per_stage: usize,
    pub classes: usize,
    pub in_channels: usize,
}

impl Nb201SupernetConfig {
    /// The stand-alone network of the path `arch` at these sizes (what `nasrs train --space
    /// nb201` trains).
    pub fn network(&self, arch: Nb201Arch) -> Nb201Config {
        Nb201Config {
            arch,
            channels: self.channels,
            cells_per_stage: self.cells_per_stage,
            classes: self.classes,
            in_channels: self.in_channels,
        }
    }

    /// The widest path's network (every edge `nor_conv_3x3`): sizes, memory and image checks
    /// of the supernet's steps are that network's.
    pub fn widest(&self) -> Nb201Config {
        self.network(Nb201Arch([Nb201Op::NorConv3x3; 6]))
    }

    pub fn validate(&self) -> Result<()> {
        self.widest().validate()
    }

    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        self.widest().check_image_size(h, w)
    }
}

/// The NB201 supernet with its weights and BN statistics.
pub struct Nb201Supernet<B: Backend> {
    pub config: Nb201SupernetConfig,
    net: Nb201Network<B>,
}

impl<B: Backend> Nb201Supernet<B> {
    /// Builds the supernet with PyTorch's default initialisation, drawn from `seed`.
    pub fn new(backend: &B, config: Nb201SupernetConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let net = Nb201Network::build(backend, config.widest(), seed, CellOps::All)?;
        Ok(Nb201Supernet { config, net })
    }

    /// Records the forward of the path `arch` on `tape` (logits). A training-mode forward
    /// that updates running statistics updates only the path's batch norms; it is not counted
    /// in the BN counters (which count forwards of every BN).
    pub fn run_path(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        arch: &Nb201Arch,
    ) -> Result<Var> {
        self.net.run_arch(tape, x, mode, arch)
    }

    /// The number of weights the path `arch` uses: those outside the cells' edges and those
    /// of its operation on each edge. It equals the stand-alone network's `num_weights`
    /// (NB201's parameter count), which a test checks.
    pub fn path_weights(&self, arch: &Nb201Arch) -> usize {
        self.net
            .weights
            .shapes()
            .filter(|(name, _)| match edge_op_of(name) {
                Some((e, k)) => Nb201Op::ALL.get(k) == Some(&arch.0[e]),
                None => true,
            })
            .map(|(_, s)| s.numel())
            .sum()
    }

    pub fn weights(&self) -> &ParamStore<B> {
        &self.net.weights
    }
    pub fn weights_mut(&mut self) -> &mut ParamStore<B> {
        &mut self.net.weights
    }
    pub fn buffers(&self) -> &ParamStore<B> {
        &self.net.buffers
    }
    pub fn buffers_mut(&mut self) -> &mut ParamStore<B> {
        &mut self.net.buffers
    }

    /// The PyTorch `state_dict` (see [`Nb201Network::state_dict`]).
    pub fn state_dict(&self, backend: &B) -> Result<StateDict> {
        self.net.state_dict(backend)
    }

    /// Loads a `state_dict` strictly (see [`Nb201Network::load_state_dict`]).
    pub fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        self.net
            .load_state_dict(backend, tensors, ignore_prefixes, path)
    }
}

/// The edge (index in [`EDGES`]) and operation index of a weight inside a cell's edge
/// (`cells.{i}.edges.{j<-i}.{k}.…`), or None for any other weight.
fn edge_op_of(name: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 6 || parts[0] != "cells" || parts[2] != "edges" {
        return None;
    }
    let e = EDGES
        .iter()
        .position(|&(to, from)| parts[3] == format!("{to}<-{from}"))?;
    Some((e, parts[4].parse().ok()?))
}
