//! Every CUDA kernel runs somewhere in the tests: in one process, the parity harness and a
//! graph-captured DARTS iteration (second order, so the unrolled step's kernels run too) on
//! the host simulation, then every kernel of `Kernel::ALL` must have launched at least once
//! (a kernel nobody launches is untested). Kernels of the `faults*` modules (deliberately
//! wrong variants that prove the simulation catches bugs) are left out.

#![cfg(feature = "cuda-sim")]

mod common;

use common::host_batch;
use nasrs::backend::cuda::{sim_launch_counts, Cuda};
use nasrs::backend::selftest::{all_passed, format_table, run_parity};
use nasrs::nas::darts::{Darts, DartsHyper};
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::Rng;

#[test]
fn every_kernel_is_launched() {
    let be = Cuda::open_sim().expect("open the CUDA simulation");
    let rows = run_parity(&be, 7).expect("parity run");
    if let Err(e) = all_passed(&rows) {
        panic!("{}\n{e}", format_table(&rows));
    }
    // A second-order search iteration: each step captured in a graph, then replayed.
    let net = SearchNetwork::new(&be, SearchConfig::darts(2, 3, 3, 2), 7).expect("supernet");
    let hyper = DartsHyper {
        order: 2,
        ..DartsHyper::default()
    };
    let mut d = Darts::new(be.clone(), net, hyper).expect("DARTS");
    let mut rng = Rng::new(3);
    let (train, val) = (
        host_batch(&mut rng, 4, 2, 8, 3),
        host_batch(&mut rng, 4, 2, 8, 3),
    );
    d.iteration(&train, &val, 0.025).expect("a DARTS iteration");
    assert_eq!(d.graph_error(), None);
    assert!(d.graphs_in_use(), "the DARTS steps were not captured");

    let counts = sim_launch_counts();
    let tested: Vec<_> = counts
        .iter()
        .filter(|(k, _)| !k.module().starts_with("faults"))
        .collect();
    for (k, n) in &tested {
        println!("{:>8}  {}::{}", n, k.module(), k.name());
    }
    let never: Vec<String> = tested
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(k, _)| format!("{}::{}", k.module(), k.name()))
        .collect();
    assert!(
        never.is_empty(),
        "{} of {} kernels never launched:\n  {}",
        never.len(),
        tested.len(),
        never.join("\n  ")
    );
}
