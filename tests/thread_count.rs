//! The CPU backend's results do not depend on how many threads run it: DARTS iterations
//! (first and second order) under pools of 1, 2 and 3 threads (the backend's team takes its
//! size from the pool, `--threads`) leave bit-identical weights, alphas, batch-norm
//! statistics and step statistics. The network is sized so that its loops split into
//! several tasks (samples, plane batches, channels, weight-gradient chunks), which the
//! team's threads claim in whatever order they get to them.

mod common;

use common::host_batch;
use nasrs::nas::darts::{Darts, DartsHyper, StepStats};
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::{Cpu, Rng};

/// Two iterations of `order` from the same seed; every tensor's values and the statistics.
fn run(order: u8) -> (Vec<Vec<f32>>, Vec<(StepStats, StepStats)>) {
    let be = Cpu::new();
    let net = SearchNetwork::new(&be, SearchConfig::darts(4, 3, 5, 3), 11).expect("network");
    let hyper = DartsHyper {
        order,
        ..DartsHyper::default()
    };
    let mut d = Darts::new(be.clone(), net, hyper).expect("darts");
    let mut rng = Rng::new(5);
    let stats = (0..2)
        .map(|_| {
            let (t, v) = (
                host_batch(&mut rng, 8, 3, 16, 5),
                host_batch(&mut rng, 8, 3, 16, 5),
            );
            d.iteration(&t, &v, 0.05).expect("iteration")
        })
        .collect();
    let values = [&d.net.weights, &d.net.arch, &d.net.buffers]
        .iter()
        .flat_map(|s| s.tensors().iter().map(|t| t.to_host(&be).expect("to_host")))
        .collect();
    (values, stats)
}

#[test]
fn darts_iterations_are_bit_identical_at_1_2_and_3_threads() {
    for order in [1u8, 2] {
        let in_pool = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| run(order))
        };
        let (one, one_stats) = in_pool(1);
        for threads in [2, 3] {
            let (many, many_stats) = in_pool(threads);
            assert_eq!(
                format!("{one_stats:?}"),
                format!("{many_stats:?}"),
                "order {order}, {threads} threads: step statistics"
            );
            assert_eq!(one.len(), many.len());
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                let same =
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "order {order}, {threads} threads: tensor {i} differs");
            }
        }
    }
}
