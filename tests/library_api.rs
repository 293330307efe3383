//! The library API for embedding the DARTS search network (issue #12), on the CPU:
//! - The alphas in both views (PyTorch's [edges, ops] tables and the per-edge rows), set and
//!   read, and their gradient in the table view: the rows rearranged, and the central
//!   difference of the validation loss.
//! - `num_batches_tracked`: one per updating forward, also when the step is a replayed graph.
//! - `DartsHyper::arch_step_updates_bn`: the running statistics of an iteration equal those of
//!   the default step preceded by exactly the forwards the docs list (1 first order, 3 second
//!   order), bit for bit; weights and alphas are unchanged by it; old configs load.
//! - The step API (`iteration_report` = `arch_step_report` + `weight_step`) reproduces
//!   `iteration` bit for bit, and its second-order parts add up to the gradient.
//! - The `SearchConfig` builder equals the 4-argument constructor; `Mode::JOINT_STEP`.
//!
//! State dicts and checkpoints: `tests/library_state_dict.rs`.

mod common;

use common::library::*;
use nasrs::autograd::{ParamStore, Tape};
use nasrs::backend::counting::Counting;
use nasrs::backend::prelude::*;
use nasrs::backend::{norm_scalars, ScalarRef};
use nasrs::data::Batch;
use nasrs::nas::darts::{DartsHyper, DeviceBatch, StepStats};
use nasrs::nas::{Mode, Primitive, SearchConfig, SearchNetwork};
use nasrs::{Cpu, Rng, Tensor};

#[test]
fn alphas_set_and_read_in_both_views_with_consistent_gradients() {
    let be = B::default();
    let mut d = darts(&be, 1, false);
    let (edges, ops) = (14, 8);
    let mut rng = Rng::new(2);
    for reduce in [false, true] {
        let v: Vec<f64> = (0..edges * ops).map(|_| 0.3 * rng.normal()).collect();
        let table = Tensor::from_host(&be, &v, [edges, ops]).unwrap();
        d.net.set_alpha_table(&be, reduce, &table).unwrap();
        let got = if reduce {
            d.net.alphas_reduce(&be)
        } else {
            d.net.alphas_normal(&be)
        };
        let got = got.unwrap();
        assert_eq!(got.shape.dims(), [edges, ops]);
        assert_eq!(got.to_host(&be).unwrap(), v);
        // Row e of the table is the per-edge parameter e.
        let ids = d.net.alpha_row_ids(reduce).to_vec();
        for (e, id) in ids.iter().enumerate() {
            assert_eq!(
                d.net.arch.get(*id).to_host(&be).unwrap(),
                v[e * ops..(e + 1) * ops]
            );
        }
        // And setting a row shows in the table.
        let row: Vec<f64> = (0..ops).map(|k| k as f64).collect();
        d.net
            .arch
            .set(ids[2], Tensor::from_host(&be, &row, [ops]).unwrap())
            .unwrap();
        let t = d
            .net
            .alpha_table(&be, reduce)
            .unwrap()
            .to_host(&be)
            .unwrap();
        assert_eq!(t[2 * ops..3 * ops], row);
    }
    type Setter = fn(&mut SearchNetwork<B>, &B, &Tensor<B>) -> nasrs::Result<()>;
    let setters: [Setter; 2] = [
        SearchNetwork::set_alphas_normal,
        SearchNetwork::set_alphas_reduce,
    ];
    let bad = Tensor::from_host(&be, &[0.0; 112], [8, 14]).unwrap();
    for set in setters {
        let e = set(&mut d.net, &be, &bad).unwrap_err().to_string();
        assert!(e.contains("[14, 8]"), "{e}");
    }

    // The gradient's table view is the per-row gradient rearranged, and the central
    // difference of the validation loss (first order: L_val(w, alpha)).
    let (t, v) = (host_batch(&mut rng, 4), host_batch(&mut rng, 4));
    let (dt, dv) = (
        DeviceBatch::from_batch(&be, &t, 3).unwrap(),
        DeviceBatch::from_batch(&be, &v, 3).unwrap(),
    );
    let (_, grads) = d.arch_gradient(&dt, &dv, 0.025).unwrap();
    for (reduce, (e, k)) in [
        (false, (1, 3)),
        (false, (4, 6)),
        (true, (0, 4)),
        (true, (3, 1)),
    ] {
        let g = d.net.alpha_grad_table(&be, &grads, reduce).unwrap();
        assert_eq!(g.shape.dims(), [edges, ops]);
        let g = g.to_host(&be).unwrap();
        for (row, id) in d.net.alpha_row_ids(reduce).iter().enumerate() {
            assert_eq!(
                g[row * ops..(row + 1) * ops],
                grads[id.0].to_host(&be).unwrap()[..]
            );
        }
        let base = d
            .net
            .alpha_table(&be, reduce)
            .unwrap()
            .to_host(&be)
            .unwrap();
        let h = 1e-5;
        let mut loss_at = |delta: f64| {
            let mut a = base.clone();
            a[e * ops + k] += delta;
            let a = Tensor::from_host(&be, &a, [edges, ops]).unwrap();
            d.net.set_alpha_table(&be, reduce, &a).unwrap();
            d.arch_gradient(&dt, &dv, 0.025).unwrap().0.loss
        };
        let fd = (loss_at(h) - loss_at(-h)) / (2.0 * h);
        loss_at(0.0);
        let an = g[e * ops + k];
        assert!(
            (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
            "reduce {reduce} [{e}, {k}]: finite difference {fd} vs gradient {an}"
        );
    }
    assert_eq!(d.net.bn_batches, 0, "architecture gradients update nothing");
}

#[test]
fn num_batches_tracked_counts_updating_forwards() {
    let be = B::default();
    let mut d = darts(&be, 1, false);
    let mut rng = Rng::new(3);
    for i in 1..=3u64 {
        let (t, v) = (host_batch(&mut rng, 4), host_batch(&mut rng, 4));
        d.iteration(&t, &v, 0.025).unwrap();
        assert_eq!(d.net.bn_batches, i);
    }
    let dv = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 4), 3).unwrap();
    d.evaluate(&dv).unwrap();
    d.weight_step(&dv, 0.025).unwrap();
    assert_eq!(
        d.net.bn_batches, 4,
        "eval forwards do not count, weight steps do"
    );
    let (_, ints) = d.net.state_dict(&be).unwrap();
    let bns = d
        .net
        .buffers
        .names()
        .iter()
        .filter(|n| n.ends_with(".running_mean"))
        .count();
    assert_eq!(ints.len(), bns);
    assert!(ints.values().all(|t| t.data == [4] && t.shape.is_empty()));
    assert!(ints.contains_key("cells.1._ops.0._ops.1.1.num_batches_tracked"));

    // Captured and replayed steps (the counting device has graphs) count the same.
    let cb = Counting::new();
    for (order, bn, per_iteration) in [(1, false, 1), (1, true, 2), (2, false, 1), (2, true, 4)] {
        let mut d = darts(&cb, order, bn);
        let (t, v) = (host_batch(&mut rng, 4), host_batch(&mut rng, 4));
        for i in 1..=3 {
            d.iteration(&t, &v, 0.025).unwrap();
            assert_eq!(d.net.bn_batches, i * per_iteration, "order {order} bn {bn}");
        }
        assert!(d.graphs_in_use() && d.graph_error().is_none());
        assert_eq!(
            d.hyper.arch_step_bn_forwards() + 1,
            per_iteration,
            "order {order} bn {bn}"
        );
    }
}

/// A forward that only updates the running statistics (batch statistics, no gradients).
fn update_forward(net: &mut SearchNetwork<B>, batch: &Batch, weights: Option<&ParamStore<B>>) {
    let be = B::default();
    let x = DeviceBatch::from_batch(&be, batch, 3).unwrap().images;
    let mut tape = Tape::new(be);
    let x = tape.constant(x);
    let mode = Mode {
        update_running: true,
        grad_arch: false,
        ..Mode::ARCH_STEP
    };
    net.run(&mut tape, x, mode, weights).unwrap();
}

/// `w + a * R * dw` as the second-order step forms it (`R` from the norm of `dw`).
fn shifted(be: &B, w: &ParamStore<B>, dw: &[Tensor<B>], a: f64) -> ParamStore<B> {
    let norms = nasrs::optim::grad_norm_scalars(be, dw, f64::INFINITY).unwrap();
    let mut out = w.deep_copy(be).unwrap();
    for (id, g) in w.ids().zip(dw) {
        let s = ScalarRef {
            buf: &norms,
            index: norm_scalars::INV_NORM,
        };
        be.axpy_scaled(out.get_mut(id).buf_mut("w").unwrap(), a, s, &g.buf)
            .unwrap();
    }
    out
}

#[test]
fn bn_option_adds_exactly_the_documented_forwards() {
    let be = B::default();
    let radius = DartsHyper::default().hvp_radius;
    for order in [1u8, 2] {
        let mut on = darts(&be, order, true);
        let mut off = darts(&be, order, false);
        let mut plain = darts(&be, order, false);
        let mut rng = Rng::new(10 + order as u64);
        for step in 0..2 {
            let (t, v) = (host_batch(&mut rng, 4), host_batch(&mut rng, 4));
            let (dt, dv) = (
                DeviceBatch::from_batch(&be, &t, 3).unwrap(),
                DeviceBatch::from_batch(&be, &v, 3).unwrap(),
            );
            let lr = 0.05;
            let report = on.iteration_report(&dt, &dv, lr).unwrap();
            // The default step, preceded by the forwards the option adds, in PyTorch's order.
            if order == 1 {
                update_forward(&mut off.net, &v, None);
            } else {
                let dw = &report.arch.unrolled.as_ref().unwrap().dw;
                let w = off.net.weights.deep_copy(&be).unwrap();
                update_forward(&mut off.net, &t, None);
                update_forward(&mut off.net, &t, Some(&shifted(&be, &w, dw, radius)));
                update_forward(&mut off.net, &t, Some(&shifted(&be, &w, dw, -radius)));
            }
            off.iteration_report(&dt, &dv, lr).unwrap();
            plain.iteration(&t, &v, lr).unwrap();
            let what = format!("order {order} step {step}");
            assert_eq!(state(&be, &on), state(&be, &off), "{what}");
            assert_eq!(on.net.bn_batches, off.net.bn_batches, "{what}");
            let per = if order == 1 { 2 } else { 4 };
            assert_eq!(on.net.bn_batches, per * (step + 1), "{what}");
            // Weights, alphas and optimizer states do not depend on the option.
            assert_eq!(store(&be, &on.net.weights), store(&be, &plain.net.weights));
            assert_eq!(store(&be, &on.net.arch), store(&be, &plain.net.arch));
            assert_ne!(store(&be, &on.net.buffers), store(&be, &plain.net.buffers));
        }
    }
    // Configs and checkpoints written before the option load with it off.
    let mut json = serde_json::to_value(DartsHyper::default()).unwrap();
    json.as_object_mut().unwrap().remove("arch_step_updates_bn");
    let old: DartsHyper = serde_json::from_value(json).unwrap();
    assert_eq!(old, DartsHyper::default());
    assert!(!old.arch_step_updates_bn);
}

#[test]
fn step_api_reproduces_iteration_bit_for_bit() {
    let be = B::default();
    for order in [1u8, 2] {
        let (mut staged, mut report, mut parts) = (
            darts(&be, order, false),
            darts(&be, order, false),
            darts(&be, order, false),
        );
        let mut rng = Rng::new(20 + order as u64);
        for (step, lr) in [0.05, 0.05, 0.02].into_iter().enumerate() {
            let (t, v) = (host_batch(&mut rng, 4), host_batch(&mut rng, 4));
            let (dt, dv) = (
                DeviceBatch::from_batch(&be, &t, 3).unwrap(),
                DeviceBatch::from_batch(&be, &v, 3).unwrap(),
            );
            let what = format!("order {order} step {step}");
            let (ws, as_) = staged.iteration(&t, &v, lr).unwrap();
            let it = report.iteration_report(&dt, &dv, lr).unwrap();
            let same = |a: StepStats, b: StepStats| {
                a.loss == b.loss && a.correct == b.correct && a.count == b.count
            };
            assert!(same(ws, it.weights), "{what}: {ws:?} vs {:?}", it.weights);
            assert!(
                same(as_, it.arch.stats),
                "{what}: {as_:?} vs {:?}",
                it.arch.stats
            );
            assert_eq!(state(&be, &staged), state(&be, &report), "{what}");
            assert_eq!(staged.net.bn_batches, report.net.bn_batches, "{what}");

            // By hand: the gradient, Adam, the weight step.
            let (stats, dalpha) = parts.arch_gradient(&dt, &dv, lr).unwrap();
            assert!(same(stats, it.arch.stats), "{what}");
            assert_eq!(host(&be, &dalpha), host(&be, &it.arch.dalpha), "{what}");
            parts.apply_arch_gradient(&dalpha).unwrap();
            parts.weight_step(&dt, lr).unwrap();
            assert_eq!(state(&be, &parts), state(&be, &report), "{what}");

            let a = &it.arch;
            assert_eq!((a.xi, a.arch_lr), (lr, Some(3e-4)));
            match (order, &a.unrolled) {
                (1, None) => {}
                (2, Some(u)) => {
                    // dalpha = unrolled dalpha - xi * implicit, R = radius / ||dw||.
                    let norm = host(&be, &u.dw)
                        .iter()
                        .flatten()
                        .map(|x| x * x)
                        .sum::<f64>()
                        .sqrt();
                    assert!((u.dw_norm - norm).abs() <= 1e-12 * norm, "{what}");
                    assert!((u.r - 0.01 / norm).abs() <= 1e-12 * u.r, "{what}");
                    let (d, ud, im) = (
                        host(&be, &a.dalpha),
                        host(&be, &u.dalpha),
                        host(&be, &u.implicit),
                    );
                    let mut moved = 0.0f64;
                    for ((d, ud), im) in d
                        .iter()
                        .flatten()
                        .zip(ud.iter().flatten())
                        .zip(im.iter().flatten())
                    {
                        let tol = 1e-10 * (1.0 + d.abs() + (lr * im).abs());
                        assert!(
                            (d - (ud - lr * im)).abs() <= tol,
                            "{what}: {d} vs {ud} - {lr} * {im}"
                        );
                        moved = moved.max((lr * im).abs());
                    }
                    assert!(moved > 0.0, "{what}: the implicit term is zero");
                    assert_eq!(u.weights.len(), report.net.weights.len());
                    assert_eq!(u.dw.len(), report.net.weights.len());
                }
                _ => panic!("{what}: unrolled parts {}", a.unrolled.is_some()),
            }
        }
    }
}

#[test]
fn builder_equals_the_four_argument_constructor() {
    assert_eq!(SearchConfig::default(), SearchConfig::darts(16, 8, 10, 3));
    let d = SearchConfig::default();
    assert_eq!(
        (
            d.channels,
            d.layers,
            d.classes,
            d.in_channels,
            d.num_nodes()
        ),
        (16, 8, 10, 3, 4)
    );
    assert_eq!(
        (d.multiplier, d.stem_multiplier, d.ops.len(), d.edges()),
        (4, 3, 8, 14)
    );
    let built = SearchConfig::default()
        .channels(4)
        .layers(5)
        .classes(3)
        .in_channels(1)
        .nodes(2)
        .ops([
            Primitive::None,
            Primitive::SkipConnect,
            Primitive::SepConv3x3,
        ]);
    let mut old = SearchConfig::darts(4, 5, 3, 1);
    // What `--nodes 2 --ops none,skip_connect,sep_conv_3x3` does on the command line.
    old.steps = 2;
    old.multiplier = 2;
    old.ops = Primitive::parse_list("none,skip_connect,sep_conv_3x3").unwrap();
    assert_eq!(built, old);
    assert_eq!(built.num_nodes(), 2);
    assert_eq!(built.clone().multiplier(1).multiplier, 1);
    assert_eq!(built.clone().stem_multiplier(2).stem_multiplier, 2);
    let be = B::default();
    let (a, b) = (
        SearchNetwork::new(&be, built, 5).unwrap(),
        SearchNetwork::new(&be, old, 5).unwrap(),
    );
    assert_eq!(store(&be, &a.weights), store(&be, &b.weights));
    assert_eq!(store(&be, &a.arch), store(&be, &b.arch));
}

/// `Mode::JOINT_STEP` gives the weight gradients of `WEIGHT_STEP` and the alpha gradients of
/// `ARCH_STEP` from one forward and backward.
#[test]
fn joint_step_mode_gives_both_gradients_at_once() {
    let be = Cpu::new();
    let mut d = darts(&be, 2, false);
    let mut rng = Rng::new(5);
    let batch = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 4), 3).unwrap();
    let mut grads_of = |mode: Mode| -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut tape = Tape::new(be.clone());
        let x = tape.constant(batch.images.clone());
        let logits = d.net.run(&mut tape, x, mode, None).unwrap();
        let loss = tape.softmax_cross_entropy(logits, &batch.labels).unwrap();
        let g = tape.backward(loss).unwrap();
        let host = |ts: Vec<Tensor<Cpu<f32>>>| -> Vec<Vec<f64>> {
            ts.iter().map(|t| t.to_f64(&be).unwrap()).collect()
        };
        let gw = if mode.grad_weights {
            host(g.params(&be, &d.net.weights).unwrap())
        } else {
            Vec::new()
        };
        let ga = if mode.grad_arch {
            host(g.params(&be, &d.net.arch).unwrap())
        } else {
            Vec::new()
        };
        (gw, ga)
    };
    let (w_only, _) = grads_of(Mode::WEIGHT_STEP);
    let (_, a_only) = grads_of(Mode::ARCH_STEP);
    let (w_joint, a_joint) = grads_of(Mode::JOINT_STEP);
    assert_eq!(w_joint, w_only);
    assert_eq!(a_joint, a_only);
    assert!(a_joint.iter().flatten().any(|&v| v != 0.0));
}
