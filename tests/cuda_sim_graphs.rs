//! Graph capture and replay of the staged DARTS steps on the CUDA backend over the host
//! simulation, where a captured graph really bakes in device pointers and kernel
//! arguments: a replay must give exactly what the same steps give launched op by op, and
//! the graph cache must capture again whenever what a graph froze changes:
//! - a public hyper-parameter changed after the first capture (gradient clip, weight
//!   decay, momentum, the Hessian-vector radius, the optimizer's momentum and decay);
//! - staged batches replaced: stage A, stage B of another shape (weight step only, so the
//!   architecture graph of A stays cached), stage C of A's shape in new buffers, then an
//!   architecture step: the cache must not replay A's graph on C (A's buffers are freed).
//!
//! Also the memory accounting under graphs (peak memory includes graph memory) and the
//! pool trimming that lets eager and graph phases share a device.
#![cfg(feature = "cuda-sim")]

use nasrs::backend::cuda::{Cuda, SimOptions};
use nasrs::backend::prelude::*;
use nasrs::data::Batch;
use nasrs::nas::darts::{Darts, DartsHyper};
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::Rng;

fn host_batch(rng: &mut Rng, n: usize, classes: usize) -> Batch {
    Batch {
        images: (0..n * 2 * 8 * 8).map(|_| rng.normal() as f32).collect(),
        labels: (0..n).map(|_| rng.below(classes) as u32).collect(),
        n,
        c: 2,
        h: 8,
        w: 8,
    }
}

fn darts(be: &Cuda, order: u8, graphs: bool) -> Darts<Cuda> {
    let net = SearchNetwork::new(be, SearchConfig::darts(2, 3, 3, 2), 7).expect("network");
    let hyper = DartsHyper {
        order,
        grad_clip: 0.5,
        ..DartsHyper::default()
    };
    let mut d = Darts::new(be.clone(), net, hyper).expect("darts");
    d.use_graphs = graphs;
    d
}

/// Every weight, alpha and BN statistic, on the host.
fn values(be: &Cuda, d: &Darts<Cuda>) -> Vec<Vec<f32>> {
    [&d.net.weights, &d.net.arch, &d.net.buffers]
        .iter()
        .flat_map(|s| s.tensors().iter().map(|t| t.to_host(be).expect("download")))
        .collect()
}

fn sim() -> Cuda {
    Cuda::open_sim().expect("the simulation opens")
}

#[test]
fn replayed_graphs_equal_direct_launches() {
    let be = sim();
    for order in [1u8, 2] {
        let (mut g, mut direct) = (darts(&be, order, true), darts(&be, order, false));
        let mut rng = Rng::new(3);
        for (step, lr) in [0.05, 0.05, 0.02].into_iter().enumerate() {
            let (t, v) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
            let a = g.iteration(&t, &v, lr).expect("graph iteration");
            let b = direct.iteration(&t, &v, lr).expect("direct iteration");
            assert_eq!(g.graph_error(), None);
            assert!(
                g.graphs_in_use(),
                "order {order}: the simulation has graphs"
            );
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "order {order} step {step}"
            );
            assert_eq!(
                values(&be, &g),
                values(&be, &direct),
                "order {order} step {step}"
            );
        }
    }
}

#[test]
fn changing_a_hyper_parameter_after_capture_captures_again() {
    let be = sim();
    type Change = fn(&mut Darts<Cuda>);
    // (what changes, an order whose graphs freeze it: the radius and DartsHyper's momentum
    // and decay are only read by the second-order (unrolled) architecture step).
    let changes: [(&str, u8, Change); 6] = [
        ("grad_clip", 1, |d| d.hyper.grad_clip = 0.05),
        ("weight_decay", 2, |d| d.hyper.weight_decay = 0.1),
        ("hvp_radius", 2, |d| d.hyper.hvp_radius = 0.5),
        ("momentum", 2, |d| d.hyper.momentum = 0.1),
        ("optimizer momentum", 1, |d| d.weight_opt.momentum = 0.1),
        ("optimizer weight decay", 1, |d| {
            d.weight_opt.weight_decay = 0.1
        }),
    ];
    for (name, order, change) in changes {
        let (mut g, mut direct) = (darts(&be, order, true), darts(&be, order, false));
        let mut rng = Rng::new(9);
        let (t, v) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
        g.iteration(&t, &v, 0.05).expect("first capture");
        direct.iteration(&t, &v, 0.05).expect("direct");
        change(&mut g);
        change(&mut direct);
        g.iteration(&t, &v, 0.05).expect("after the change");
        direct
            .iteration(&t, &v, 0.05)
            .expect("direct after the change");
        assert_eq!(
            values(&be, &g),
            values(&be, &direct),
            "{name} changed after capture"
        );
    }
}

#[test]
fn restaging_never_replays_a_graph_on_freed_buffers() {
    let be = sim();
    for order in [1u8, 2] {
        let (mut g, mut direct) = (darts(&be, order, true), darts(&be, order, false));
        let mut rng = Rng::new(11);
        let a = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
        let b = (host_batch(&mut rng, 6, 3), host_batch(&mut rng, 6, 3));
        let c = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
        for d in [&mut g, &mut direct] {
            d.iteration(&a.0, &a.1, 0.05).expect("stage A");
            // Stage B, weight step only: the architecture graph of A stays cached.
            d.stage(&b.0, &b.1).expect("stage B");
            d.weight_step_staged(0.05).expect("weight step on B");
            d.stage(&c.0, &c.1).expect("stage C");
            d.arch_step_staged(0.05).expect("architecture step on C");
            d.weight_step_staged(0.05).expect("weight step on C");
        }
        assert_eq!(g.graph_error(), None);
        assert_eq!(values(&be, &g), values(&be, &direct), "order {order}");
    }
}

#[test]
fn peak_memory_counts_graph_memory() {
    let be = sim();
    let mut d = darts(&be, 1, true);
    let mut rng = Rng::new(5);
    let (t, v) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
    d.iteration(&t, &v, 0.05).expect("capture");
    let mut direct = darts(&be, 1, false);
    direct.iteration(&t, &v, 0.05).expect("direct");

    // A replayed step allocates its working set as graph memory, outside the pool: the
    // peak must still see it, at the size of the same step launched op by op.
    be.reset_peak_memory().expect("reset");
    d.iteration(&t, &v, 0.05).expect("replay");
    let replayed = be
        .peak_memory()
        .expect("peak")
        .expect("the simulation has pools");
    be.reset_peak_memory().expect("reset");
    direct.iteration(&t, &v, 0.05).expect("direct");
    let plain = be.peak_memory().expect("peak").expect("pools");
    assert!(
        replayed.bytes as f64 >= 0.9 * plain.bytes as f64,
        "graph replay peak {} vs direct {}",
        replayed.bytes,
        plain.bytes
    );
}

/// The device capacity a phase needs, measured on an unlimited simulated device: the pool
/// high-water mark of an eager step, and of a graph-replayed one.
#[test]
fn eager_and_graph_phases_share_a_device_that_fits_either() {
    let mut rng = Rng::new(6);
    let (t, v) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
    let need = {
        let be = sim();
        let mut eager = darts(&be, 1, false);
        eager.iteration(&t, &v, 0.05).expect("eager");
        let mut graph = darts(&be, 1, true);
        graph.iteration(&t, &v, 0.05).expect("graph");
        be.reset_peak_memory().expect("reset");
        graph.iteration(&t, &v, 0.05).expect("replay");
        graph.iteration(&t, &v, 0.05).expect("replay");
        eager.iteration(&t, &v, 0.05).expect("eager again");
        be.peak_memory().expect("peak").expect("pools").bytes as usize
    };
    // Room for both networks and one step's working set at a time, not two: an eager
    // phase's cached pool blocks must go back before graph memory is mapped, and the
    // reverse.
    let be = Cuda::open_sim_with(SimOptions {
        memory_bytes: Some(need + need / 4),
    })
    .expect("a bounded simulation");
    let mut eager = darts(&be, 1, false);
    let mut graph = darts(&be, 1, true);
    for round in 0..3 {
        eager
            .iteration(&t, &v, 0.05)
            .unwrap_or_else(|e| panic!("eager round {round}: {e}"));
        graph
            .iteration(&t, &v, 0.05)
            .unwrap_or_else(|e| panic!("graph round {round}: {e}"));
        assert_eq!(graph.graph_error(), None, "round {round}");
    }
}

/// The simulation refuses in a capture what CUDA would: host round trips, uploads,
/// synchronisation, nested captures, a buffer allocated inside left alive, and freeing a
/// buffer from before the capture (a free node every replay would run again). After each
/// refusal the device still works.
#[test]
fn capture_refuses_what_cuda_refuses() {
    let be = sim();
    let x = be.zeros(8).expect("buffer");
    let refused = |what: &str, r: nasrs::Result<Option<nasrs::backend::cuda::CudaStepGraph>>| {
        let e = r.err().unwrap_or_else(|| panic!("{what} must be refused"));
        assert!(e.to_string().contains("graph capture"), "{what}: {e}");
    };
    refused(
        "a download",
        be.capture(&mut || be.download(&x).map(|_| ())),
    );
    refused(
        "an upload",
        be.capture(&mut || be.upload(&[1.0]).map(|_| ())),
    );
    refused("a synchronize", be.capture(&mut || be.synchronize()));
    refused(
        "a nested capture",
        be.capture(&mut || be.capture(&mut || Ok(())).map(|_| ())),
    );
    let mut kept = None;
    refused(
        "a buffer left alive",
        be.capture(&mut || {
            kept = Some(be.zeros(4)?);
            Ok(())
        }),
    );
    drop(kept);
    let mut outside = Some(be.zeros(16).expect("buffer"));
    refused(
        "freeing a buffer from before the capture",
        be.capture(&mut || {
            outside.take();
            be.fill(4, 1.0).map(|_| ())
        }),
    );
    // Still usable: a good capture replays.
    let mut y = be.zeros(4).expect("buffer");
    let g = be
        .capture(&mut || be.copy_into(&mut y, &be.fill(4, 3.0)?))
        .expect("a good capture")
        .expect("the simulation has graphs");
    be.replay(&g).expect("replay");
    assert_eq!(be.download(&y).expect("download"), vec![3.0; 4]);
}
