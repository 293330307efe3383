//! The counting backend and the DARTS step model: a tiny net counted by hand, and invariants
//! of the real supernet's steps that follow from how DARTS is built.

use nasrs::autograd::{Precision, Tape};
use nasrs::backend::counting::{Counting, ELEM_BYTES};
use nasrs::backend::prelude::*;
use nasrs::bench_model::DartsBenchConfig;
use nasrs::bench_model::{format_model, model_darts, DeviceRates};
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::{Conv2dSpec, Tensor};
use std::sync::Arc;

fn up(be: &Counting, shape: &[usize]) -> Tensor<Counting> {
    let n: usize = shape.iter().product();
    Tensor::from_host(be, &vec![0.5f32; n], shape).unwrap()
}

/// conv3x3 (3 -> 5, pad 1) on x [2, 3, 4, 4], ReLU, global average pool, linear 5 -> 4 with
/// bias, softmax cross-entropy, backward; every count worked out by hand in the comments.
#[test]
fn tiny_net_counts_match_hand_computation() {
    let be = Counting::new();
    let mut tape = Tape::new(be.clone());
    let x = tape.leaf(up(&be, &[2, 3, 4, 4]), false); // 96
    let w = tape.leaf(up(&be, &[5, 3, 3, 3]), true); // 135
    let w2 = tape.leaf(up(&be, &[4, 5]), true); // 20
    let b2 = tape.leaf(up(&be, &[4]), true); // 4
    be.reset().unwrap();
    let spec = Conv2dSpec::new(3, 5, 3).padding(1);
    let y = tape.conv2d(x, w, spec).unwrap(); // [2, 5, 4, 4] = 160
    let r = tape.relu(y).unwrap();
    let g = tape.global_avg_pool(r).unwrap(); // [2, 5]
    let logits = tape.linear(g, w2, Some(b2)).unwrap(); // [2, 4]
    let labels = Arc::new(be.upload_labels(&[1, 3], 4).unwrap());
    let loss = tape.softmax_cross_entropy(logits, &labels).unwrap();
    let grads = tape.backward(loss).unwrap();
    assert!(grads.get(w).is_some() && grads.get(x).is_none());
    let c = be.snapshot().unwrap();

    // conv: 160 outputs x 27 multiply-adds x 2 = 8640, forward and weight gradient (x needs
    // no gradient, so no data gradient).
    let k = |op: &str| c.ops.get(op).copied().unwrap_or_default();
    assert_eq!(k("conv2d_fwd").flops, 8640);
    assert_eq!(k("conv2d_bwd_weight").flops, 8640);
    assert_eq!(k("conv2d_bwd_data").calls, 0);
    assert_eq!(k("conv2d_fwd").bytes_read, (96 + 135) * ELEM_BYTES);
    assert_eq!(k("conv2d_bwd_weight").bytes_written, 135 * ELEM_BYTES);
    // linear: 2 * 2*5*4 + 2*4 bias = 88 forward; 4 * 40 + 8 = 168 backward.
    assert_eq!(k("linear_fwd").flops, 88);
    assert_eq!(k("linear_bwd").flops, 168);
    // cross-entropy: 4 * 8 + 2 * 2 = 36 forward, 2 * 8 = 16 backward.
    assert_eq!(k("softmax_cross_entropy_fwd").flops, 36);
    assert_eq!(k("softmax_cross_entropy_bwd").flops, 16);

    // 5 ops forward, the seed's fill, 5 backward.
    assert_eq!(c.total.calls, 11);
    assert_eq!(
        c.total.flops,
        8640 + 160 + 160 + 88 + 36 + 16 + 168 + 160 + 160 + 8640
    );
    // Op-level: reads 231 + 160 + 160 + 34 + 8 | 9 + 38 + 10 + 320 + 256 elements;
    // writes 160 + 160 + 10 + 8 + 9 | seed 1 | 8 + 34 + 160 + 160 + 135.
    assert_eq!(c.total.bytes_read, 1226 * ELEM_BYTES);
    assert_eq!(c.total.bytes_written, 845 * ELEM_BYTES);
    // Tensor-level: every distinct buffer once. Read: x 96, w 135, conv 160, relu 160,
    // pool 10, w2 20, b2 4, logits 8, probs 8, seed 1, dlogits 8, dpool 10, drelu-in 160,
    // dconv 160 = 940. Written: the same minus the leaves, plus loss 1, dw2 20, db2 4,
    // dw 135 = 845 (nothing is written twice; the seed is filled on the device).
    assert_eq!(c.tensor_bytes_read, 940 * ELEM_BYTES);
    assert_eq!(c.tensor_bytes_written, 845 * ELEM_BYTES);
    // No host round trip; host-to-device: only the labels, once (8 bytes).
    assert_eq!(c.host_syncs, 0);
    assert_eq!(c.h2d_bytes, 8);
    // 6 forward buffers (conv, relu, pool, logits, loss, probs), the seed, 7 gradients.
    assert_eq!(c.allocations, 14);
    // Peak: leaves 255 + forward 347 = 602, then during the ReLU backward the seed and
    // dlogits are gone but dw2 20, db2 4, dpool-in 160 (the pool's gradient) and the new 160
    // are alive: 602 + 8 + 24 + 160 + 160 - 8 = 946 elements.
    assert_eq!(c.peak_live_bytes, 946 * ELEM_BYTES);
    drop(grads);
    tape.clear();
    assert_eq!(be.live_bytes().unwrap(), 0, "every buffer released");
}

/// x [1, 2, 4, 4] (32 elements) feeds a max pool and an average pool (k3 s1 p1), summed:
/// x's second gradient is added by the max pool's backward where it is produced
/// (`max_pool2d_bwd_into`), not written fresh and `axpy`'d. Counted from the backward on.
#[test]
fn a_value_with_two_consumers_accumulates_in_place() {
    let be = Counting::new();
    let mut tape = Tape::new(be.clone());
    let x = tape.leaf(up(&be, &[1, 2, 4, 4]), true);
    let pool = nasrs::Pool2dSpec {
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let m = tape.max_pool2d(x, pool).unwrap();
    let a = tape.avg_pool2d(x, pool).unwrap();
    let s = tape.add(m, a).unwrap();
    be.reset().unwrap();
    let dy = be.fill(32, 1.0).unwrap();
    let grads = tape.backward_with(s, dy).unwrap();
    assert!(grads.get(x).is_some());
    let c = be.snapshot().unwrap();
    let k = |op: &str| c.ops.get(op).copied().unwrap_or_default();
    // Backward order: the add copies dy for each pool (2 copies); the average pool (recorded
    // last) gives x's first gradient, fresh; the max pool adds into it, reading x, its dy
    // and the accumulator and writing the accumulator. No axpy, no fresh max-pool gradient.
    assert_eq!(k("copy").calls, 2);
    assert_eq!(k("avg_pool2d_bwd").calls, 1);
    assert_eq!(k("max_pool2d_bwd_into").calls, 1);
    assert_eq!(k("max_pool2d_bwd").calls, 0);
    assert_eq!(k("axpy").calls, 0);
    assert_eq!(k("max_pool2d_bwd_into").bytes_read, 3 * 32 * ELEM_BYTES);
    assert_eq!(k("max_pool2d_bwd_into").bytes_written, 32 * ELEM_BYTES);
    // Op-level: reads copies 32 + 32, avg 32, max 96 = 192 elements (a fresh max-pool
    // gradient plus its axpy read 64 + 64: 224); writes fill 32, copies 64, avg 32, max 32 =
    // 160 (fresh + axpy: 192).
    assert_eq!(c.total.bytes_read, 192 * ELEM_BYTES);
    assert_eq!(c.total.bytes_written, 160 * ELEM_BYTES);
    // Tensor-level: read dy, the two copies, x and the accumulator (5 x 32); written dy, the
    // copies and the accumulator (4 x 32). Four buffers allocated (a fifth, the fresh
    // max-pool gradient, before).
    assert_eq!(c.tensor_bytes_read, 160 * ELEM_BYTES);
    assert_eq!(c.tensor_bytes_written, 128 * ELEM_BYTES);
    assert_eq!(c.allocations, 4);
}

fn tiny_config() -> DartsBenchConfig {
    DartsBenchConfig {
        channels: 2,
        layers: 3,
        batch: 2,
        size: 8,
        in_channels: 1,
        classes: 3,
        warmup: 0,
        steps: 1,
        seed: 0,
        copy_mib: 0,
        graphs: true,
        activations: Precision::F32,
    }
}

/// Invariants of the real DARTS steps: how many forwards each phase runs, which gradients
/// it takes, one SGD / Adam update per tensor, and the host round trips of the step.
#[test]
fn darts_step_counts_follow_the_algorithm() {
    let cfg = tiny_config();
    let m = model_darts(&cfg, DeviceRates::H200).unwrap();
    let be = Counting::new();
    let net = SearchNetwork::new(
        &be,
        SearchConfig::darts(cfg.channels, cfg.layers, cfg.classes, cfg.in_channels),
        0,
    )
    .unwrap();
    let (n_weights, n_weight_tensors) = (net.num_weights() as u64, net.weights.len() as u64);
    let n_alpha_tensors = net.arch.len() as u64;
    assert_eq!(m.weights as u64, n_weights);

    let phase = |name: &str| &m.phase(name).unwrap().counts;
    let op = |name: &str, o: &str| phase(name).ops.get(o).copied().unwrap_or_default();
    let (w, f1, f2) = (
        "weight_step",
        "first_order_iteration",
        "second_order_iteration",
    );

    // Forwards: weight step 1; first order 2 (val, train); second order 5 (train for w',
    // val at w', train at w + eps v and w - eps v, then the weight step's train).
    let fwd = op(w, "conv2d_fwd").flops;
    assert!(fwd > 0);
    assert_eq!(op(f1, "conv2d_fwd").flops, 2 * fwd);
    assert_eq!(op(f2, "conv2d_fwd").flops, 5 * fwd);
    // Weight gradients: only the weight step's pass in first order; in second order also
    // the unrolled train pass and the val pass at w'.
    let bw = op(w, "conv2d_bwd_weight").flops;
    assert_eq!(
        bw, fwd,
        "every conv weight gets a gradient in a weight step"
    );
    assert_eq!(op(f1, "conv2d_bwd_weight").flops, bw);
    assert_eq!(op(f2, "conv2d_bwd_weight").flops, 3 * bw);

    // The optimizers are multi-tensor ops: one SGD update for all weight tensors per weight
    // step (one op, not one per tensor), reading every weight, gradient and momentum once and
    // the clip coefficient's buffer (the 3 norm scalars) once, writing weight and momentum;
    // one Adam update for all alpha rows per architecture step. No per-tensor update is left.
    assert!(n_weight_tensors > 1 && n_alpha_tensors > 1);
    let sgd = op(w, "sgd_step_many");
    assert_eq!(sgd.calls, 1);
    assert_eq!(sgd.bytes_read, (3 * n_weights + 3) * ELEM_BYTES);
    assert_eq!(sgd.bytes_written, 2 * n_weights * ELEM_BYTES);
    assert_eq!(sgd.flops, 6 * n_weights);
    let n_alphas = net.arch.numel() as u64;
    for ph in [f1, f2] {
        let adam = op(ph, "adam_step_many");
        assert_eq!(adam.calls, 1, "{ph}");
        assert_eq!(adam.bytes_read, 4 * n_alphas * ELEM_BYTES, "{ph}");
        assert_eq!(adam.bytes_written, 3 * n_alphas * ELEM_BYTES, "{ph}");
    }
    for ph in [w, f1, f2] {
        assert_eq!(op(ph, "sgd_step").calls, 0, "{ph}");
        assert_eq!(op(ph, "adam_step").calls, 0, "{ph}");
    }
    assert_eq!(op(w, "adam_step_many").calls, 0);
    // So the update and the gradient norm of a weight step are 2 op calls whatever the
    // number of weight tensors (per-tensor updates made them 1 + n_weight_tensors).
    assert_eq!(
        op(w, "sgd_step_many").calls + op(w, "grad_norm_scalars").calls,
        2
    );

    // Host round trips of a weight step: only the reads of its statistics after it (loss,
    // correct count, gradient norm); the norm is one reduction over every weight tensor,
    // and the clip coefficient reaches the SGD update on the device.
    assert_eq!(phase(w).host_syncs, 3);
    assert_eq!(op(w, "grad_norm_scalars").calls, 1);
    assert_eq!(
        op(w, "grad_norm_scalars").bytes_read,
        n_weights * ELEM_BYTES
    );
    assert_eq!(op(w, "sum_squares_many").calls, 0);
    // First order adds the architecture step's loss and correct count; second order also
    // the norm of the unrolled validation gradient, whose finite-difference step size stays
    // on the device.
    assert_eq!(phase(f1).host_syncs, 3 + 2);
    assert_eq!(phase(f2).host_syncs, 3 + 3);

    // Gradients of a value with several consumers are added where they are produced: every
    // cell state feeds an edge's pools, identity and convs, so the `_into` ops run in every
    // phase and only a few `axpy`s are left (alpha rows shared by cells of a type, the
    // FactorizedReduce's cropped path). (Second order also axpys every weight tensor for its
    // finite-difference perturbations, which are not gradient accumulation.)
    for ph in [w, f1] {
        let into: u64 = [
            "conv2d_bwd_data_into",
            "max_pool2d_bwd_into",
            "avg_pool2d_bwd_into",
            "mixed_op_bwd_into",
        ]
        .iter()
        .map(|o| op(ph, o).calls)
        .sum();
        assert!(op(ph, "max_pool2d_bwd_into").calls > 0, "{ph}");
        assert!(op(ph, "mixed_op_bwd_into").calls > 0, "{ph}");
        assert!(
            4 * op(ph, "axpy").calls < into,
            "{ph}: {} axpy calls for {into} accumulating ones",
            op(ph, "axpy").calls
        );
    }

    for p in &m.phases {
        let c = &p.counts;
        assert!(c.peak_live_bytes >= m.resident_bytes, "{}", p.name);
        // A tensor is read at most once per window, however many ops read it.
        assert!(c.tensor_bytes_read <= c.total.bytes_read, "{}", p.name);
        assert!(
            c.tensor_bytes_written <= c.total.bytes_written,
            "{}",
            p.name
        );
        let f = &p.floors;
        assert!(f.floor_s >= f.memory_s && f.floor_s >= f.compute_s);
        assert_eq!(
            f.memory_s,
            c.tensor_bytes() as f64 / DeviceRates::H200.bandwidth_bytes_per_s
        );
    }
    let text = format_model(&m, 5);
    assert!(text.contains("second_order_iteration") && text.contains("conv2d_fwd"));
}

/// Graph capture changes nothing the step does: the counts of graph replays equal those of
/// the same steps launched op by op (the counting device captures with CUDA's rules, so a
/// step that read back to the host or leaked an allocation inside would fail here).
#[test]
fn captured_steps_count_the_same_as_direct_ones() {
    let mut cfg = tiny_config();
    let graphs = model_darts(&cfg, DeviceRates::H200).unwrap();
    cfg.graphs = false;
    let direct = model_darts(&cfg, DeviceRates::H200).unwrap();
    for (g, d) in graphs.phases.iter().zip(&direct.phases) {
        assert_eq!(g.counts.ops, d.counts.ops, "{}", g.name);
        assert_eq!(
            g.counts.tensor_bytes(),
            d.counts.tensor_bytes(),
            "{}",
            g.name
        );
        assert_eq!(g.counts.host_syncs, d.counts.host_syncs, "{}", g.name);
        assert_eq!(
            g.counts.peak_live_bytes, d.counts.peak_live_bytes,
            "{}",
            g.name
        );
    }
}

/// The model scales with the batch where it should: activation FLOPs are linear in N.
#[test]
fn conv_flops_are_linear_in_the_batch() {
    let mut cfg = tiny_config();
    let one = model_darts(&cfg, DeviceRates::H200).unwrap();
    cfg.batch *= 3;
    let three = model_darts(&cfg, DeviceRates::H200).unwrap();
    let f = |m: &nasrs::bench_model::DartsModel| {
        m.phase("weight_step").unwrap().counts.ops["conv2d_fwd"].flops
    };
    assert_eq!(f(&three), 3 * f(&one));
}

#[test]
fn bad_rates_are_errors_naming_the_flag() {
    let mut r = DeviceRates::H200;
    r.bandwidth_bytes_per_s = 0.0;
    let e = model_darts(&tiny_config(), r).unwrap_err().to_string();
    assert!(e.contains("--bandwidth-tbs"), "{e}");
    let _ = Counting::new().device_name();
}
