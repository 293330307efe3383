//! A small search space for strategy tests, included with
//! `#[path = "common/toy_space.rs"] mod toy_space;`: decisions with any choice counts, an
//! architecture is its decision vector, written `1-0-2` (a token may carry leading zeros or
//! spaces: `01- 0-2` is another spelling of the same architecture).
#![allow(dead_code)]

use nasrs::nas::space::{check_decisions, SearchSpace};
use nasrs::{Error, Result};

#[derive(Clone, Debug)]
pub struct ToySpace {
    pub choices: Vec<usize>,
}

impl ToySpace {
    pub fn new(choices: &[usize]) -> Self {
        ToySpace {
            choices: choices.to_vec(),
        }
    }
}

impl SearchSpace for ToySpace {
    type Arch = Vec<usize>;

    fn name(&self) -> &'static str {
        "toy"
    }
    fn choices(&self) -> &[usize] {
        &self.choices
    }
    fn decision_name(&self, i: usize) -> String {
        format!("decision {i}")
    }
    fn encode(&self, arch: &Vec<usize>) -> Vec<usize> {
        arch.clone()
    }
    fn decode(&self, decisions: &[usize]) -> Result<Vec<usize>> {
        check_decisions(self, decisions)?;
        Ok(decisions.to_vec())
    }
    fn to_string(&self, arch: &Vec<usize>) -> String {
        arch.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("-")
    }
    fn parse(&self, text: &str) -> Result<Vec<usize>> {
        let d: Vec<usize> = text
            .split('-')
            .map(|t| {
                t.trim().parse().map_err(|_| {
                    Error::invalid("toy arch", format!("'{text}': '{t}' is not a number"))
                })
            })
            .collect::<Result<_>>()?;
        self.decode(&d)
    }
    fn to_json(&self, arch: &Vec<usize>) -> serde_json::Value {
        serde_json::json!(arch)
    }
    fn from_json(&self, value: &serde_json::Value) -> Result<Vec<usize>> {
        let d: Vec<usize> = serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid("toy arch JSON", e.to_string()))?;
        self.decode(&d)
    }
}
