//! The NAS-Bench-201 cell space (Dong and Yang, ICLR 2020): a cell of 4 nodes in which every
//! node `j` sums one operation applied to each earlier node `i < j` (6 edges), each edge one
//! of 5 operations: 5^6 = 15,625 architectures. Decision `e` is the operation of edge `e` in
//! the canonical order `1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`, the order of the arch string
//! `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.

use super::{check_decisions, SearchSpace};
use crate::error::{Error, Result};

/// The five operations of an NB201 edge, named as NB201 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nb201Op {
    /// The edge is absent (contributes zeros).
    None,
    /// Identity.
    SkipConnect,
    /// ReLU, conv 1x1, BN.
    NorConv1x1,
    /// ReLU, conv 3x3, BN.
    NorConv3x3,
    /// Average pooling 3x3, stride 1, padding 1, padding not counted.
    AvgPool3x3,
}

impl Nb201Op {
    /// Every operation, in NB201's order (the decision value is the index here).
    pub const ALL: [Nb201Op; 5] = [
        Nb201Op::None,
        Nb201Op::SkipConnect,
        Nb201Op::NorConv1x1,
        Nb201Op::NorConv3x3,
        Nb201Op::AvgPool3x3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nb201Op::None => "none",
            Nb201Op::SkipConnect => "skip_connect",
            Nb201Op::NorConv1x1 => "nor_conv_1x1",
            Nb201Op::NorConv3x3 => "nor_conv_3x3",
            Nb201Op::AvgPool3x3 => "avg_pool_3x3",
        }
    }

    pub fn from_name(name: &str) -> Result<Nb201Op> {
        Nb201Op::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Nb201Op::ALL.iter().map(|op| op.name()).collect();
                Error::invalid(
                    "NB201 operation",
                    format!("'{name}' (expected one of {})", names.join(", ")),
                )
            })
    }

    fn index(self) -> usize {
        Nb201Op::ALL.iter().position(|&op| op == self).unwrap_or(0)
    }
}

/// Edges of the cell as `(to, from)`, in the canonical order.
pub const EDGES: [(usize, usize); 6] = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)];

/// One NB201 cell: the operation of each edge of [`EDGES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nb201Arch(pub [Nb201Op; 6]);

impl Nb201Arch {
    /// The canonical arch string, `|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|`.
    pub fn to_arch_string(&self) -> String {
        let mut nodes = Vec::new();
        let mut e = 0;
        for to in 1..4 {
            let mut node = String::from("|");
            for from in 0..to {
                node.push_str(&format!("{}~{from}|", self.0[e].name()));
                e += 1;
            }
            nodes.push(node);
        }
        nodes.join("+")
    }

    /// Parses the canonical arch string (edges may be listed in any order within a node, but
    /// every edge exactly once).
    pub fn parse(text: &str) -> Result<Nb201Arch> {
        let bad = |why: String| Error::invalid("NB201 arch string", format!("'{text}': {why}"));
        let nodes: Vec<&str> = text.trim().split('+').collect();
        if nodes.len() != 3 {
            return Err(bad(format!(
                "{} nodes separated by '+', expected 3",
                nodes.len()
            )));
        }
        let mut ops: [Option<Nb201Op>; 6] = [None; 6];
        for (k, node) in nodes.iter().enumerate() {
            let to = k + 1;
            let inner = node
                .strip_prefix('|')
                .and_then(|s| s.strip_suffix('|'))
                .ok_or_else(|| bad(format!("node {to} '{node}' is not enclosed in '|'")))?;
            let edges: Vec<&str> = inner.split('|').collect();
            if edges.len() != to {
                return Err(bad(format!(
                    "node {to} has {} edges, expected {to}",
                    edges.len()
                )));
            }
            for edge in edges {
                let (op, from) = edge
                    .rsplit_once('~')
                    .ok_or_else(|| bad(format!("edge '{edge}' is not 'op~input'")))?;
                let from: usize = from
                    .parse()
                    .map_err(|_| bad(format!("edge '{edge}': input '{from}' is not a number")))?;
                let e = EDGES
                    .iter()
                    .position(|&(t, f)| t == to && f == from)
                    .ok_or_else(|| bad(format!("node {to} cannot take input {from}")))?;
                if ops[e].is_some() {
                    return Err(bad(format!("edge {from}->{to} is given twice")));
                }
                ops[e] = Some(Nb201Op::from_name(op).map_err(|err| bad(err.to_string()))?);
            }
        }
        let mut out = [Nb201Op::None; 6];
        for (o, op) in out.iter_mut().zip(ops) {
            *o = op.ok_or_else(|| bad("an edge is missing".into()))?;
        }
        Ok(Nb201Arch(out))
    }
}

/// The NB201 cell space.
#[derive(Clone, Debug, Default)]
pub struct Nb201Space;

const CHOICES: [usize; 6] = [5; 6];

impl SearchSpace for Nb201Space {
    type Arch = Nb201Arch;

    fn name(&self) -> &'static str {
        "nb201"
    }
    fn choices(&self) -> &[usize] {
        &CHOICES
    }
    fn decision_name(&self, i: usize) -> String {
        match EDGES.get(i) {
            Some((to, from)) => format!("edge {from}->{to}"),
            None => format!("decision {i}"),
        }
    }
    fn encode(&self, arch: &Nb201Arch) -> Vec<usize> {
        arch.0.iter().map(|op| op.index()).collect()
    }
    fn decode(&self, decisions: &[usize]) -> Result<Nb201Arch> {
        check_decisions(self, decisions)?;
        let mut ops = [Nb201Op::None; 6];
        for (o, &d) in ops.iter_mut().zip(decisions) {
            *o = Nb201Op::ALL[d];
        }
        Ok(Nb201Arch(ops))
    }
    fn to_string(&self, arch: &Nb201Arch) -> String {
        arch.to_arch_string()
    }
    fn parse(&self, text: &str) -> Result<Nb201Arch> {
        Nb201Arch::parse(text)
    }
    fn to_json(&self, arch: &Nb201Arch) -> serde_json::Value {
        serde_json::json!({ "space": "nb201", "arch": arch.to_arch_string() })
    }
    fn from_json(&self, value: &serde_json::Value) -> Result<Nb201Arch> {
        let arch = value.get("arch").and_then(|a| a.as_str()).ok_or_else(|| {
            Error::invalid(
                "NB201 architecture JSON",
                "expected an object with an \"arch\" string".to_string(),
            )
        })?;
        Nb201Arch::parse(arch)
    }
}
