//! A synthetic NAS-Bench-201 table for the strategies' tests: one weight per edge and
//! operation, so the optimum is known (each edge's best operation, which beats its second by
//! at least 1) and a strategy can be checked to find it.

#![allow(dead_code)]

use nasrs::nas::multi_trial::{TableEvaluator, TableSpec};
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::rng::Rng;
use std::path::{Path, PathBuf};

/// Writes the table as `dir/synthetic.csv` (`arch,valid,test`; test = valid + 1); returns
/// its path and the optimum's decisions.
pub fn synthetic_table(dir: &Path) -> (PathBuf, Vec<usize>) {
    let mut rng = Rng::new(2024);
    let optimum: Vec<usize> = (0..6).map(|_| rng.below(5)).collect();
    let w: Vec<Vec<f64>> = optimum
        .iter()
        .map(|&best| {
            (0..5)
                .map(|k| 2.0 * rng.uniform() + if k == best { 3.0 } else { 0.0 })
                .collect()
        })
        .collect();
    let space = Nb201Space;
    let mut csv = String::from("arch,valid,test\n");
    for a in space.enumerate(20_000).expect("enumerate") {
        let d = space.encode(&a);
        let s: f64 = 50.0 + d.iter().enumerate().map(|(e, &k)| w[e][k]).sum::<f64>();
        csv += &format!("{},{s},{}\n", space.to_string(&a), s + 1.0);
    }
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("synthetic.csv");
    std::fs::write(&path, csv).expect("write");
    (path, optimum)
}

/// The table of [`synthetic_table`] in `dir` as an evaluator (search on `valid`, report
/// `test`, no limits), and the optimum's decisions.
pub fn synthetic_evaluator(dir: &Path) -> (TableEvaluator<Nb201Space>, Vec<usize>) {
    let (path, optimum) = synthetic_table(dir);
    let spec = TableSpec {
        path,
        metric: "valid".into(),
        report: "test".into(),
        params_max_m: None,
        flops_max_m: None,
        penalty: None,
    };
    let eval = TableEvaluator::open(Nb201Space, spec).expect("synthetic table");
    (eval, optimum)
}
