//! The shape of the search network ([`SearchConfig`]): the DARTS paper's CIFAR-10 defaults,
//! named setters, and the checks that it can build a network for the images given.

use crate::error::{Error, Result};
use crate::nas::genotype::Primitive;
use serde::{Deserialize, Serialize};

/// The shape of the search network. Build it with named setters from the DARTS paper's
/// CIFAR-10 search network (C=16, 8 cells, 10 classes, 3 input channels, 4 nodes, all 8 ops):
///
/// ```
/// use nasrs::nas::{Primitive, SearchConfig};
/// let cfg = SearchConfig::default()
///     .channels(4)
///     .layers(5)
///     .classes(10)
///     .in_channels(1)
///     .nodes(2)
///     .ops([Primitive::None, Primitive::SkipConnect, Primitive::SepConv3x3]);
/// assert_eq!((cfg.steps, cfg.multiplier, cfg.edges()), (2, 2, 5));
/// assert_eq!(SearchConfig::default(), SearchConfig::darts(16, 8, 10, 3));
/// ```
///
/// The fields keep PyTorch DARTS' names (`steps`, `multiplier`); the command line's
/// `--nodes N` is [`SearchConfig::nodes`]: `steps = multiplier = N`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Initial channels C (`--channels`).
    pub channels: usize,
    /// Cells L (`--layers`).
    pub layers: usize,
    pub classes: usize,
    pub in_channels: usize,
    /// Intermediate nodes per cell (PyTorch DARTS' `steps`; `--nodes`).
    pub steps: usize,
    /// How many of the last nodes are concatenated into the cell output.
    pub multiplier: usize,
    pub stem_multiplier: usize,
    pub ops: Vec<Primitive>,
}

impl Default for SearchConfig {
    /// The DARTS paper's CIFAR-10 search network: `SearchConfig::darts(16, 8, 10, 3)`.
    fn default() -> Self {
        SearchConfig::darts(16, 8, 10, 3)
    }
}

impl SearchConfig {
    /// The DARTS paper's search network (4 nodes, multiplier 4, stem 3C, all 8 ops) with
    /// `channels` C, `layers` L, `classes` and `in_channels`; the same as
    /// `SearchConfig::default().channels(c).layers(l).classes(k).in_channels(i)`.
    pub fn darts(channels: usize, layers: usize, classes: usize, in_channels: usize) -> Self {
        SearchConfig {
            channels,
            layers,
            classes,
            in_channels,
            steps: 4,
            multiplier: 4,
            stem_multiplier: 3,
            ops: Primitive::ALL.to_vec(),
        }
    }

    /// Sets the initial channels C (`--channels`).
    pub fn channels(mut self, channels: usize) -> Self {
        self.channels = channels;
        self
    }

    /// Sets the number of cells L (`--layers`).
    pub fn layers(mut self, layers: usize) -> Self {
        self.layers = layers;
        self
    }

    /// Sets the number of classes (the classifier's outputs).
    pub fn classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }

    /// Sets the image channels the stem reads.
    pub fn in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }

    /// Sets the intermediate nodes per cell as `--nodes` does: `steps = multiplier = nodes`
    /// (every node is concatenated into the cell output, as in DARTS with 4 and 4).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.steps = nodes;
        self.multiplier = nodes;
        self
    }

    /// Intermediate nodes per cell (`steps`; `--nodes`).
    pub fn num_nodes(&self) -> usize {
        self.steps
    }

    /// Sets how many of the last nodes are concatenated into the cell output (after
    /// [`SearchConfig::nodes`], which sets it to all of them).
    pub fn multiplier(mut self, multiplier: usize) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the stem width factor (the stem has `stem_multiplier * C` channels).
    pub fn stem_multiplier(mut self, stem_multiplier: usize) -> Self {
        self.stem_multiplier = stem_multiplier;
        self
    }

    /// Sets the op set every edge mixes (`--ops`), in alpha column order.
    pub fn ops(mut self, ops: impl Into<Vec<Primitive>>) -> Self {
        self.ops = ops.into();
        self
    }

    /// Edges per cell (rows of an alpha table): 2 + 3 + ... + (steps + 1), 14 for 4 nodes.
    /// Edges per cell: node i has i + 2 inputs, so n(n + 3)/2 for n nodes (saturating: an
    /// absurd `--nodes` is refused by the sizing check, not looped over).
    pub fn edges(&self) -> usize {
        let n = self.steps;
        n.checked_mul(n.saturating_add(3))
            .map_or(usize::MAX, |v| v / 2)
    }

    /// Checks the configuration can build a network; the error names the flag at fault.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--channels", self.channels),
            ("--layers", self.layers),
            ("classes", self.classes),
            ("input channels", self.in_channels),
            ("--nodes", self.steps),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        if self.multiplier == 0 || self.multiplier > self.steps {
            return Err(Error::invalid(
                "multiplier",
                format!("{} must be in 1..={}", self.multiplier, self.steps),
            ));
        }
        if self.ops.is_empty() {
            return Err(Error::invalid("--ops", "the op set is empty"));
        }
        if self.ops.iter().all(|&op| op == Primitive::None) {
            return Err(Error::invalid(
                "--ops",
                "'none' alone makes every edge zero (nothing to search); add at least one \
                 other op, e.g. --ops none,skip_connect,sep_conv_3x3",
            ));
        }
        Ok(())
    }

    /// Reduction cells sit at L/3 and 2L/3 (for L < 3 those may coincide with cell 0).
    pub fn is_reduction(&self, cell: usize) -> bool {
        crate::nas::sizing::reduction_cells(self.layers).contains(&cell)
    }

    /// Checks that `h x w` images pass every reduction cell.
    pub fn check_image_size(&self, h: usize, w: usize) -> Result<()> {
        crate::nas::sizing::check_reductions(self.layers, h, w)
    }
}
