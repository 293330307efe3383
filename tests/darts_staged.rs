//! The staged DARTS step (the path a GPU captures in a graph and replays) against the same
//! steps run directly: identical weights, alphas and statistics, first and second order, on
//! the CPU in f64. And the staged step on the counting device, which captures with CUDA's
//! rules (no host round trip, no upload, nothing allocated inside left alive) and replays.
//!
//! On every device (`test_device!`), first and second order: staged iterations with graphs
//! (`use_graphs`; on the CUDA simulation and a GPU the real capture and replay run,
//! re-captured when the learning rate changes), without graphs, and (first order) as direct
//! steps give the same statistics and state after every iteration, bit for bit on the CPU
//! and the deterministic simulation; graphs are in use exactly where the device has them;
//! and each iteration, started from the CPU's state, equals the CPU's (1e-4; 5e-4 for what
//! the second-order alpha gradient feeds, see `common::darts_tol`).

mod common;

use common::{
    assert_close_with, assert_reproduced, darts_state, darts_tol, device_kind, load_darts_state,
    DeviceKind, Outputs,
};
use nasrs::backend::counting::Counting;
use nasrs::backend::prelude::*;
use nasrs::data::Batch;
use nasrs::nas::darts::{Darts, DartsHyper, DeviceBatch, StepStats};
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::{Backend, Cpu, Rng};

type B = Cpu<f64>;

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

fn darts<D: Backend>(be: &D, order: u8) -> Darts<D> {
    let net = SearchNetwork::new(be, SearchConfig::darts(2, 3, 3, 2), 7).unwrap();
    let hyper = DartsHyper {
        order,
        // Small enough to leave the clip inactive on some steps and active on others.
        grad_clip: 0.5,
        ..DartsHyper::default()
    };
    Darts::new(be.clone(), net, hyper).unwrap()
}

fn host_values(be: &B, d: &Darts<B>) -> Vec<Vec<f64>> {
    [&d.net.weights, &d.net.arch, &d.net.buffers]
        .iter()
        .flat_map(|s| s.tensors().iter().map(|t| t.to_host(be).unwrap()))
        .collect()
}

#[test]
fn staged_iterations_equal_direct_steps() {
    let be = B::default();
    for order in [1u8, 2] {
        let (mut staged, mut direct) = (darts(&be, order), darts(&be, order));
        let mut rng = Rng::new(3);
        for (step, lr) in [0.05, 0.05, 0.02].into_iter().enumerate() {
            let (train, val) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
            let (ws, as_) = staged.iteration(&train, &val, lr).unwrap();
            let (dt, dv) = (
                DeviceBatch::from_batch(&be, &train, 3).unwrap(),
                DeviceBatch::from_batch(&be, &val, 3).unwrap(),
            );
            let ad = direct.arch_step(&dt, &dv, lr).unwrap();
            let wd = direct.weight_step(&dt, lr).unwrap();
            let same = |a: StepStats, b: StepStats| {
                a.loss == b.loss && a.correct == b.correct && a.count == b.count
            };
            assert!(same(ws, wd), "order {order} step {step}: {ws:?} vs {wd:?}");
            assert!(
                same(as_, ad),
                "order {order} step {step}: {as_:?} vs {ad:?}"
            );
            assert_eq!(ws.count, 4);
            assert_eq!(
                host_values(&be, &staged),
                host_values(&be, &direct),
                "order {order} step {step}"
            );
        }
        // The CPU has no graphs: the staged steps ran directly.
        assert!(!staged.graphs_in_use());
    }
}

/// A smaller last batch is staged into new buffers and the step still runs.
#[test]
fn a_batch_of_another_shape_is_staged_afresh() {
    let be = B::default();
    let mut d = darts(&be, 1);
    let mut rng = Rng::new(4);
    let (t, v) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
    d.iteration(&t, &v, 0.025).unwrap();
    let (t, v) = (host_batch(&mut rng, 3, 3), host_batch(&mut rng, 3, 3));
    let (w, a) = d.iteration(&t, &v, 0.025).unwrap();
    assert_eq!((w.count, a.count), (3, 3));
}

/// On a device with graphs (the counting device models CUDA's capture rules), staged steps
/// are captured once and replayed; a new learning rate or new buffers mean a new capture.
#[test]
fn staged_steps_capture_and_replay_on_a_device_with_graphs() {
    let be = Counting::new();
    for order in [1u8, 2] {
        let mut d = darts(&be, order);
        let mut rng = Rng::new(5);
        let (t, v) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
        d.iteration(&t, &v, 0.025).unwrap();
        assert_eq!(d.graph_error(), None, "order {order}");
        assert!(d.graphs_in_use(), "order {order}");
        be.reset().unwrap();
        let base = be.live_bytes().unwrap();
        d.iteration(&t, &v, 0.025).unwrap();
        let replayed = be.snapshot().unwrap();
        let replayed_peak = replayed.peak_live_bytes - base;
        // A replay re-adds the captured work and nothing else: the same op counts as a
        // step run directly.
        let mut direct = darts(&be, order);
        direct.use_graphs = false;
        direct.iteration(&t, &v, 0.025).unwrap();
        be.reset().unwrap();
        let base = be.live_bytes().unwrap();
        direct.iteration(&t, &v, 0.025).unwrap();
        let plain = be.snapshot().unwrap();
        assert!(!direct.graphs_in_use());
        assert_eq!(replayed.ops, plain.ops, "order {order}");
        assert_eq!(replayed.host_syncs, plain.host_syncs, "order {order}");
        assert_eq!(replayed.tensor_bytes_read, plain.tensor_bytes_read);
        assert_eq!(replayed.tensor_bytes_written, plain.tensor_bytes_written);
        assert_eq!(replayed_peak, plain.peak_live_bytes - base);
        // What a graph saves: the step's allocations (the plan is made once, at capture).
        assert_eq!(replayed.allocations, 0);
        assert!(plain.allocations > 0);
        // New learning rate: captured again, still valid.
        d.iteration(&t, &v, 0.01).unwrap();
        assert!(d.graphs_in_use());
    }
}

/// The counting device refuses in a capture what CUDA would: a read back to the host, an
/// upload, an allocation left alive; so the test above proves the staged step does none.
#[test]
fn counting_capture_refuses_host_round_trips_uploads_and_leaks() {
    let be = Counting::new();
    let x = be.zeros(8).unwrap();
    let err = be
        .capture(&mut || be.download(&x).map(|_| ()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("reads a value back"), "{err}");
    let err = be
        .capture(&mut || be.upload(&[1.0]).map(|_| ()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("uploads from the host"), "{err}");
    let mut kept = Vec::new();
    let err = be
        .capture(&mut || {
            kept.push(be.zeros(4)?);
            Ok(())
        })
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("leaves 16 bytes allocated"),
        "{err}"
    );
    drop(kept);
    // A clean body captures, and its replay counts its ops.
    let g = be
        .capture(&mut || {
            let y = be.scale(&x, 2.0)?;
            be.add(&y, &x).map(|_| ())
        })
        .unwrap()
        .unwrap();
    be.reset().unwrap();
    be.replay(&g).unwrap();
    be.replay(&g).unwrap();
    let c = be.snapshot().unwrap();
    assert_eq!((c.ops["scale"].calls, c.ops["add"].calls), (2, 2));
}

/// How a device test runs its DARTS iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// `iteration` with `use_graphs` (captured and replayed where the device has graphs).
    Graphs,
    /// `iteration` with `use_graphs` off: the same staged bodies, launched op by op.
    NoGraphs,
    /// `arch_step` and `weight_step` on freshly uploaded batches.
    Direct,
}

/// One DARTS iteration by `path`: both steps' statistics and the state after.
fn iteration<B: Backend<Elem = f32>>(
    be: &B,
    d: &mut Darts<B>,
    path: Path,
    train: &Batch,
    val: &Batch,
    lr: f64,
) -> nasrs::Result<Outputs> {
    let (w, a) = match path {
        Path::Graphs | Path::NoGraphs => d.iteration(train, val, lr)?,
        Path::Direct => {
            let t = DeviceBatch::from_batch(be, train, 3)?;
            let v = DeviceBatch::from_batch(be, val, 3)?;
            let a = d.arch_step(&t, &v, lr)?;
            (d.weight_step(&t, lr)?, a)
        }
    };
    assert_eq!((w.count, a.count), (4, 4));
    let mut out = Outputs::default();
    for (what, s) in [("weight", w), ("arch", a)] {
        out.scalar(format!("{what}.loss"), s.loss);
        out.scalar(format!("{what}.correct"), s.correct as f64);
    }
    out.0.extend(darts_state(be, d)?.0);
    Ok(out)
}

/// DARTS iterations at the learning rates `lrs` on a small supernet (C=2, 3 cells, batch 4
/// of 2x8x8, clip 0.5), by the graph path and each of `others` on `be`, and by the CPU, in
/// lockstep: before each iteration every device search is loaded, in place (so a graph
/// stays valid and replays), with the CPU's state (see `common::load_darts_state`). Per
/// iteration, the graph path's results equal the others' (bitwise on the CPU and the
/// simulation) and the CPU's (1e-4).
fn graphs_equal_direct<B: Backend<Elem = f32>>(
    be: &B,
    order: u8,
    lrs: &[f64],
    others: &[Path],
) -> nasrs::Result<()> {
    let kind = device_kind(be);
    let cpu = Cpu::new();
    let mut reference = darts(&cpu, order);
    let mut devs: Vec<(Path, Darts<B>)> = [Path::Graphs]
        .iter()
        .chain(others)
        .map(|&path| {
            let mut d = darts(be, order);
            d.use_graphs = path == Path::Graphs;
            (path, d)
        })
        .collect();
    let mut rng = Rng::new(3);
    for (step, &lr) in lrs.iter().enumerate() {
        let (train, val) = (host_batch(&mut rng, 4, 3), host_batch(&mut rng, 4, 3));
        let mut results = Vec::new();
        for (path, d) in devs.iter_mut() {
            load_darts_state(be, d, &reference)?;
            results.push((*path, iteration(be, d, *path, &train, &val, lr)?));
        }
        let want = iteration(&cpu, &mut reference, Path::NoGraphs, &train, &val, lr)?;
        let (_, graphs) = &results[0];
        for (path, other) in &results[1..] {
            let what = format!("order {order} step {step}: graphs vs {path:?}");
            assert_reproduced(be, &what, graphs, other);
        }
        let what = format!("order {order} staged DARTS step {step}");
        assert_close_with(be, &what, graphs, &want, darts_tol(order));
    }
    for (path, d) in &devs {
        assert_eq!(d.graph_error(), None, "{path:?}: a capture failed");
        // The CPU has no graphs; the simulation and a GPU capture and replay.
        let want = *path == Path::Graphs && kind != DeviceKind::Cpu;
        assert_eq!(d.graphs_in_use(), want, "{path:?} on {kind:?}");
    }
    Ok(())
}

/// First order, three iterations: the second replays both graphs; the third changes the
/// learning rate, so the weight step is captured again (the first-order architecture graph
/// does not depend on it and replays).
fn staged_first_order<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    graphs_equal_direct(be, 1, &[0.05, 0.05, 0.02], &[Path::NoGraphs, Path::Direct])
}

/// Second order (the unrolled step's device-side scalars inside the graph), two iterations:
/// the second replays both graphs.
fn staged_second_order<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    graphs_equal_direct(be, 2, &[0.05, 0.05], &[Path::NoGraphs])
}

test_device!(
    staged_first_order_graphs_equal_direct_steps,
    staged_first_order
);
test_device!(
    staged_second_order_graphs_equal_direct_steps,
    staged_second_order
);
