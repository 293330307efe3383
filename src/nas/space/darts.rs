//! The DARTS cell space (Liu et al., 2019): a normal and a reduction cell, each of 4 nodes;
//! node `i` (numbered from 2, after the two cell inputs 0 and 1) sums one operation applied
//! to each of two distinct earlier states, the 7 operations other than `none`; the cell's
//! output concatenates the 4 nodes. Per cell and node three decisions: the input pair (one of
//! the `C(i + 2, 2)` pairs) and the operation on its lower and on its
//! higher input: 24 decisions, about 1.1e18 architectures (the paper's 10^18 for the pair).

use super::{check_decisions, SearchSpace};
use crate::error::{Error, Result};
use crate::nas::genotype::{Genotype, Primitive};

/// Nodes per cell.
pub const NODES: usize = 4;

/// The operations a discrete DARTS cell uses: every primitive but `none` (the first), in the
/// paper's order.
pub const OPS: [Primitive; 7] = {
    let all = Primitive::ALL;
    [all[1], all[2], all[3], all[4], all[5], all[6], all[7]]
};

/// One node: its two inputs (lower first) and the operation on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DartsNode {
    pub inputs: (usize, usize),
    pub ops: (Primitive, Primitive),
}

/// One architecture of the space: the nodes of the normal and of the reduction cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DartsArch {
    pub normal: [DartsNode; NODES],
    pub reduce: [DartsNode; NODES],
}

impl DartsArch {
    /// The genotype (each node's pairs lower input first, concat `range(2, 6)`), the form
    /// `nasrs train --genotype` and the evaluation network take.
    pub fn to_genotype(&self) -> Genotype {
        let cell = |nodes: &[DartsNode; NODES]| -> Vec<(Primitive, usize)> {
            nodes
                .iter()
                .flat_map(|n| [(n.ops.0, n.inputs.0), (n.ops.1, n.inputs.1)])
                .collect()
        };
        let concat: Vec<usize> = (2..2 + NODES).collect();
        Genotype {
            normal: cell(&self.normal),
            normal_concat: concat.clone(),
            reduce: cell(&self.reduce),
            reduce_concat: concat,
        }
    }

    /// The architecture of a genotype, if it lies in the space: 4 nodes of two distinct
    /// inputs each (earlier states only), no `none`, the 4 nodes concatenated. The order of
    /// a node's two pairs does not matter (their sum does not depend on it).
    pub fn from_genotype(g: &Genotype) -> Result<DartsArch> {
        Ok(DartsArch {
            normal: cell_nodes("normal", &g.normal, &g.normal_concat)?,
            reduce: cell_nodes("reduce", &g.reduce, &g.reduce_concat)?,
        })
    }
}

fn cell_nodes(
    cell: &str,
    pairs: &[(Primitive, usize)],
    concat: &[usize],
) -> Result<[DartsNode; NODES]> {
    let bad = |why: String| {
        Error::invalid(
            "genotype",
            format!("the {cell} cell is outside the DARTS space: {why}"),
        )
    };
    if pairs.len() != 2 * NODES {
        return Err(bad(format!(
            "{} (op, input) pairs, expected {}",
            pairs.len(),
            2 * NODES
        )));
    }
    if concat != (2..2 + NODES).collect::<Vec<_>>() {
        return Err(bad(format!("concat {concat:?}, expected [2, 3, 4, 5]")));
    }
    let mut nodes = [DartsNode {
        inputs: (0, 1),
        ops: (Primitive::SkipConnect, Primitive::SkipConnect),
    }; NODES];
    for (i, node) in nodes.iter_mut().enumerate() {
        let (mut a, mut b) = (pairs[2 * i], pairs[2 * i + 1]);
        for (op, j) in [a, b] {
            if op == Primitive::None {
                return Err(bad(format!("node {} uses none", i + 2)));
            }
            if j >= i + 2 {
                return Err(bad(format!("node {} reads state {j}", i + 2)));
            }
        }
        if a.1 == b.1 {
            return Err(bad(format!("node {} reads state {} twice", i + 2, a.1)));
        }
        if a.1 > b.1 {
            std::mem::swap(&mut a, &mut b);
        }
        *node = DartsNode {
            inputs: (a.1, b.1),
            ops: (a.0, b.0),
        };
    }
    Ok(nodes)
}

/// The input pairs of node `i` (0-based), ordered by the higher input, then the lower:
/// `(0,1), (0,2), (1,2), (0,3), ...`, so that node `i`'s list extends node `i - 1`'s.
fn pairs(i: usize) -> Vec<(usize, usize)> {
    (1..i + 2)
        .flat_map(|b| (0..b).map(move |a| (a, b)))
        .collect()
}

fn op_index(op: Primitive) -> usize {
    OPS.iter().position(|&o| o == op).unwrap_or(0)
}

/// The DARTS cell space.
#[derive(Clone, Debug)]
pub struct DartsSpace {
    choices: Vec<usize>,
}

impl Default for DartsSpace {
    fn default() -> Self {
        let mut choices = Vec::new();
        for _cell in 0..2 {
            for i in 0..NODES {
                choices.extend([pairs(i).len(), OPS.len(), OPS.len()]);
            }
        }
        DartsSpace { choices }
    }
}

impl SearchSpace for DartsSpace {
    type Arch = DartsArch;

    fn name(&self) -> &'static str {
        "darts"
    }
    fn choices(&self) -> &[usize] {
        &self.choices
    }
    fn decision_name(&self, i: usize) -> String {
        let cell = if i < 3 * NODES { "normal" } else { "reduce" };
        let node = (i % (3 * NODES)) / 3 + 2;
        let what = ["inputs", "op on the lower input", "op on the higher input"][i % 3];
        format!("{cell} node {node} {what}")
    }
    fn encode(&self, arch: &DartsArch) -> Vec<usize> {
        let mut d = Vec::with_capacity(self.choices.len());
        for nodes in [&arch.normal, &arch.reduce] {
            for (i, n) in nodes.iter().enumerate() {
                let pair = pairs(i).iter().position(|&p| p == n.inputs).unwrap_or(0);
                d.extend([pair, op_index(n.ops.0), op_index(n.ops.1)]);
            }
        }
        d
    }
    fn decode(&self, decisions: &[usize]) -> Result<DartsArch> {
        check_decisions(self, decisions)?;
        let cell = |d: &[usize]| -> [DartsNode; NODES] {
            std::array::from_fn(|i| DartsNode {
                inputs: pairs(i)[d[3 * i]],
                ops: (OPS[d[3 * i + 1]], OPS[d[3 * i + 2]]),
            })
        };
        Ok(DartsArch {
            normal: cell(&decisions[..3 * NODES]),
            reduce: cell(&decisions[3 * NODES..]),
        })
    }
    fn to_string(&self, arch: &DartsArch) -> String {
        arch.to_genotype().to_python()
    }
    fn parse(&self, text: &str) -> Result<DartsArch> {
        let g = Genotype::from_python(text)
            .map_err(|e| Error::invalid("DARTS genotype", format!("'{text}': {e}")))?;
        DartsArch::from_genotype(&g)
    }
    fn to_json(&self, arch: &DartsArch) -> serde_json::Value {
        serde_json::to_value(arch.to_genotype()).unwrap_or(serde_json::Value::Null)
    }
    fn from_json(&self, value: &serde_json::Value) -> Result<DartsArch> {
        let g: Genotype = serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid("DARTS genotype JSON", e.to_string()))?;
        DartsArch::from_genotype(&g)
    }
}
