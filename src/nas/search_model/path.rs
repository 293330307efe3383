//! One path of the DARTS supernet (single-path one-shot training, SPOS): every node of every
//! cell reads its two chosen inputs through its two chosen operations, with the supernet's
//! own weights for those operations; no alphas, no MixedOp, the other operations untouched
//! (they get no gradient, so the optimizer leaves them as they are).

use super::{SearchCell, SearchNetwork};
use crate::autograd::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nas::modules::Ctx;
use crate::nas::space::darts::{DartsArch, DartsNode, NODES};
use crate::nas::Mode;

impl<B: Backend> SearchNetwork<B> {
    /// Checks that `arch` is a path of this supernet: 4 nodes concatenated, and every
    /// operation the path uses in the supernet's op set.
    pub fn check_path(&self, arch: &DartsArch) -> Result<()> {
        if self.config.steps != NODES || self.config.multiplier != NODES {
            return Err(Error::invalid(
                "supernet",
                format!(
                    "a path of the DARTS space needs {NODES} nodes, all concatenated; this \
                     supernet has {} nodes and concatenates {}",
                    self.config.steps, self.config.multiplier
                ),
            ));
        }
        for node in arch.normal.iter().chain(&arch.reduce) {
            for op in [node.ops.0, node.ops.1] {
                if !self.config.ops.contains(&op) {
                    return Err(Error::invalid(
                        "path",
                        format!("uses {}, which is not in the supernet's --ops", op.name()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The number of weights the path `arch` uses: those outside the cells' edges (stem,
    /// preprocessing, classifier) and those of each chosen operation on each chosen edge (the
    /// supernet's names: `cells.{c}._ops.{edge}._ops.{op}.…`). SPOS's parameter range is on it.
    pub fn path_weights(&self, arch: &DartsArch) -> Result<usize> {
        self.check_path(arch)?;
        let mut chosen = std::collections::HashSet::new();
        for (c, cell) in self.cells.iter().enumerate() {
            let nodes = if cell.reduction {
                &arch.reduce
            } else {
                &arch.normal
            };
            let mut first_edge = 0;
            for (i, node) in nodes.iter().enumerate() {
                for (input, op) in [(node.inputs.0, node.ops.0), (node.inputs.1, node.ops.1)] {
                    let k = self.config.ops.iter().position(|&o| o == op).unwrap_or(0);
                    chosen.insert(format!("cells.{c}._ops.{}._ops.{k}.", first_edge + input));
                }
                first_edge += i + 2;
            }
        }
        Ok(self
            .weights
            .shapes()
            .filter(|(name, _)| match edge_prefix(name) {
                Some(prefix) => chosen.contains(prefix),
                None => true,
            })
            .map(|(_, s)| s.numel())
            .sum())
    }

    /// Records the forward of the path `arch` on `tape` (see the module docs). A training-mode
    /// forward that updates running statistics updates only the path's batch norms; it is
    /// not counted in `bn_batches` (which counts forwards of every BN).
    pub fn run_path(
        &mut self,
        tape: &mut Tape<B>,
        x: Var,
        mode: Mode,
        arch: &DartsArch,
    ) -> Result<Var> {
        self.check_path(arch)?;
        let mut buffers = std::mem::take(&mut self.buffers);
        let result = {
            let mut cx = Ctx {
                tape,
                weights: &self.weights,
                buffers: &mut buffers,
                arch: &self.arch,
                mode,
            };
            self.path_forward(&mut cx, x, arch)
        };
        self.buffers = buffers;
        result
    }

    fn path_forward(&self, cx: &mut Ctx<B>, x: Var, arch: &DartsArch) -> Result<Var> {
        self.forward_with(cx, x, &mut |net, cx, cell, s0, s1| {
            let nodes = if cell.reduction {
                &arch.reduce
            } else {
                &arch.normal
            };
            net.path_cell(cx, cell, nodes, s0, s1)
        })
    }

    fn path_cell(
        &self,
        cx: &mut Ctx<B>,
        cell: &SearchCell,
        nodes: &[DartsNode; NODES],
        s0: Var,
        s1: Var,
    ) -> Result<Var> {
        let (h0, h1) = cell.inputs.forward(cx, s0, s1)?;
        let mut states = vec![h0, h1];
        // Edges are numbered node by node, each node's from input 0 up.
        let mut first_edge = 0;
        for (i, node) in nodes.iter().enumerate() {
            let mut outs = Vec::with_capacity(2);
            for (input, op) in [(node.inputs.0, node.ops.0), (node.inputs.1, node.ops.1)] {
                let k = self
                    .config
                    .ops
                    .iter()
                    .position(|&o| o == op)
                    .ok_or_else(|| Error::invalid("path", format!("op {}", op.name())))?;
                let y = cell.edges[first_edge + input][k]
                    .forward(cx, states[input])?
                    .ok_or_else(|| Error::invalid("path", "a path never uses none"))?;
                outs.push(y);
            }
            states.push(cx.tape.sum(&outs)?);
            let mut keep = states.clone();
            keep.push(s1);
            cx.tape.release_activations(&keep)?;
            first_edge += i + 2;
        }
        cx.tape.concat_channels(&states[2..])
    }
}

/// `cells.{c}._ops.{e}._ops.{k}.` of a weight inside an edge's operation, or None.
fn edge_prefix(name: &str) -> Option<&str> {
    let mut dots = name.match_indices('.').map(|(i, _)| i);
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 5 && parts[0] == "cells" && parts[2] == "_ops" && parts[4] == "_ops" {
        // The prefix ends at the sixth dot (after the op index).
        let end = dots.nth(5)?;
        Some(&name[..=end])
    } else {
        None
    }
}
