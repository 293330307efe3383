//! The NAS-Bench-201 network (`nas::nb201_model`): its parameter count against the bundled
//! NB201 table (`params_m`, exact) for archs covering every op on every edge, its FLOPs
//! against the table's `flops_m` (NB201's rule, from the counting backend's per-op FLOPs),
//! NB201's state_dict names, a finite-difference gradient check (f64, tiny), a full-size
//! forward and backward on the CPU, training steps that lower the loss, seeded
//! reproducibility, saved files read back (and refused when their metadata lies), and
//! (`test_device!`) a device's logits and gradients against the CPU's.

mod common;

use common::{assert_close, host_batch, Outputs, TOL};
use nasrs::autograd::{ParamStore, Tape};
use nasrs::backend::counting::Counting;
use nasrs::backend::cpu::Cpu;
use nasrs::io::{load_safetensors, save_safetensors};
use nasrs::nas::darts::DeviceBatch;
use nasrs::nas::evaluate::{
    eval_logits, load_any_network, load_network, save_network, LoadedNetwork,
};
use nasrs::nas::nb201_model::{Nb201Config, Nb201Network};
use nasrs::nas::space::nb201::{Nb201Arch, Nb201Op, Nb201Space, EDGES};
use nasrs::nas::space::SearchSpace;
use nasrs::nas::train_run::{TrainHyper, Trainer};
use nasrs::nas::Mode;
use nasrs::{Backend, Rng, Tensor};
use std::collections::{BTreeMap, HashMap};

/// `arch -> (params_m, flops_m)` of the bundled table, as written there.
fn table() -> HashMap<String, (String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/nb201-12ep/nb201_12ep.csv"
    );
    let text = std::fs::read_to_string(path).expect("the bundled NB201 table");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (params, flops) = (col("params_m"), col("flops_m"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                (f[params].to_string(), f[flops].to_string()),
            )
        })
        .collect()
}

fn arch(ops: [Nb201Op; 6]) -> Nb201Arch {
    Nb201Arch(ops)
}

/// Every op on every edge: edge e takes op (e + k) % 5, k = 0..5; 50 seeded random archs;
/// all-none and all-skip.
fn sample_archs() -> Vec<Nb201Arch> {
    let mut archs: Vec<Nb201Arch> = (0..5)
        .map(|k| arch(std::array::from_fn(|e| Nb201Op::ALL[(e + k) % 5])))
        .collect();
    let mut rng = Rng::new(201);
    archs.extend((0..50).map(|_| Nb201Space.sample(&mut rng)));
    archs.push(arch([Nb201Op::None; 6]));
    archs.push(arch([Nb201Op::SkipConnect; 6]));
    archs
}

/// A cell of every op (and a `none` edge), for the forward tests.
fn mixed() -> Nb201Arch {
    Nb201Arch::parse(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    )
    .unwrap()
}

fn tiny(arch: Nb201Arch, channels: usize, classes: usize, in_channels: usize) -> Nb201Config {
    Nb201Config {
        arch,
        channels,
        cells_per_stage: 1,
        classes,
        in_channels,
    }
}

#[test]
fn weights_match_the_table_for_every_op_on_every_edge() {
    let table = table();
    let be = Counting::new();
    let archs = sample_archs();
    // Every (edge, op) pair is covered by the first five.
    for e in 0..EDGES.len() {
        for op in Nb201Op::ALL {
            assert!(archs[..5].iter().any(|a| a.0[e] == op), "edge {e} {op:?}");
        }
    }
    for a in &archs {
        let s = a.to_arch_string();
        let net = Nb201Network::new(&be, Nb201Config::new(*a, 10, 3), 0).unwrap();
        let n = net.num_weights();
        let (params_m, _) = table
            .get(&s)
            .unwrap_or_else(|| panic!("{s} not in the table"));
        assert_eq!(
            format!("{:.6}", n as f64 / 1e6),
            *params_m,
            "{s}: {n} weights"
        );
    }
    let skip = Nb201Network::new(&be, Nb201Config::new(archs[56], 10, 3), 0).unwrap();
    assert_eq!(skip.num_weights(), 73_306, "the all-skip_connect cell");
    println!("{} archs checked against params_m", archs.len());
}

/// Elements read by the ReLUs fused into the convs of one forward of a 1-image batch: every
/// `nor_conv` edge reads its cell's node (C_s x H_s x W_s), each residual block's `conv_a`
/// its input and `conv_b` its half-size output.
fn fused_relu_elements(cfg: &Nb201Config, side: usize) -> u64 {
    let convs = cfg
        .arch
        .0
        .iter()
        .filter(|op| matches!(op, Nb201Op::NorConv1x1 | Nb201Op::NorConv3x3))
        .count() as u64;
    let mut total = 0;
    for (s, c) in cfg.stage_channels().into_iter().enumerate() {
        let plane = ((side >> s) * (side >> s)) as u64;
        total += cfg.cells_per_stage as u64 * convs * c as u64 * plane;
        if s > 0 {
            let plane_in = ((side >> (s - 1)) * (side >> (s - 1))) as u64;
            total += (c / 2) as u64 * plane_in + c as u64 * plane;
        }
    }
    total
}

/// The forward's FLOPs on the counting backend (2 per multiply-add, fused ReLUs counted)
/// and NB201's rule from them: conv and linear multiply-adds, bias included; BN, ReLU and
/// pooling 0.
fn counted_flops(cfg: &Nb201Config) -> (u64, u64) {
    let be = Counting::new();
    let mut net = Nb201Network::new(&be, cfg.clone(), 0).unwrap();
    let x = Tensor::zeros(&be, [1, cfg.in_channels, 32, 32]).unwrap();
    be.reset().unwrap();
    eval_logits(&be, &mut net, &x).unwrap();
    let snap = be.snapshot().unwrap();
    let op = |name: &str| snap.ops.get(name).map_or(0, |c| c.flops);
    let conv_macs = (op("conv2d_fwd") - fused_relu_elements(cfg, 32)) / 2;
    // linear_fwd: 2 n in out + n out (the bias adds).
    let n_out = cfg.classes as u64;
    let linear = (op("linear_fwd") - n_out) / 2 + n_out;
    (snap.total.flops, conv_macs + linear)
}

#[test]
fn flops_match_the_table_under_nb201s_rule() {
    let table = table();
    let mut worst: f64 = 0.0;
    let archs = sample_archs();
    for a in &archs {
        let s = a.to_arch_string();
        let (_, rule) = counted_flops(&Nb201Config::new(*a, 10, 3));
        let want: f64 = table[&s].1.parse().unwrap();
        let got = rule as f64 / 1e6;
        worst = worst.max((got - want).abs() / want);
        assert_eq!(
            format!("{got:.5}"),
            table[&s].1,
            "{s}: {rule} multiply-adds"
        );
    }
    assert!(worst < 1e-6, "largest relative difference {worst}");
    println!("{} archs agree with flops_m to its 5 decimals", archs.len());
}

#[test]
fn flops_grow_with_the_conv_ops() {
    let all = |op| Nb201Config::new(arch([op; 6]), 10, 3);
    let (skip, _) = counted_flops(&all(Nb201Op::SkipConnect));
    let (c1, _) = counted_flops(&all(Nb201Op::NorConv1x1));
    let (c3, _) = counted_flops(&all(Nb201Op::NorConv3x3));
    assert!(c3 > c1 && c1 > skip, "3x3 {c3}, 1x1 {c1}, skip {skip}");
    // The all-skip network is the stem, the two blocks and the head: NB201's 7.78305 M.
    assert_eq!(counted_flops(&all(Nb201Op::SkipConnect)).1, 7_783_050);
}

#[test]
fn state_dict_uses_nb201_names_and_round_trips() {
    let be = Cpu::<f32>::new();
    let cfg = Nb201Config {
        cells_per_stage: 2,
        ..tiny(mixed(), 4, 10, 3)
    };
    let mut net = Nb201Network::new(&be, cfg.clone(), 3).unwrap();
    let (floats, ints) = net.state_dict(&be).unwrap();
    for name in [
        "stem.0.weight",
        "stem.1.weight",
        "stem.1.running_var",
        "cells.0.edges.1<-0.op.1.weight",
        "cells.0.edges.2<-0.op.2.bias",
        "cells.1.edges.3<-2.op.1.weight",
        "cells.2.conv_a.op.1.weight",
        "cells.2.conv_b.op.2.running_mean",
        "cells.2.downsample.1.weight",
        "cells.5.downsample.1.weight",
        "cells.7.edges.3<-2.op.1.weight",
        "lastact.0.weight",
        "lastact.0.running_mean",
        "classifier.weight",
        "classifier.bias",
    ] {
        assert!(floats.contains_key(name), "missing {name}");
    }
    assert!(ints.contains_key("lastact.0.num_batches_tracked"));
    // Edges without weights have no tensors; no cell 8 (3N + 2 = 8 modules).
    assert!(!floats
        .keys()
        .any(|k| k.contains("2<-1") || k.contains("3<-0")));
    assert!(!floats.keys().any(|k| k.starts_with("cells.8.")));
    assert_eq!(
        floats["cells.2.conv_a.op.1.weight"].shape,
        vec![8, 4, 3, 3],
        "stride-2 conv C -> 2C"
    );
    // A network of another seed loaded with it computes the same logits.
    let mut rng = Rng::new(1);
    let batch = host_batch(&mut rng, 2, 3, 8, 10);
    let x = DeviceBatch::from_batch(&be, &batch, 10).unwrap().images;
    let want = eval_logits(&be, &mut net, &x).unwrap();
    let mut other = Nb201Network::new(&be, cfg, 4).unwrap();
    assert_ne!(eval_logits(&be, &mut other, &x).unwrap(), want);
    let path = std::path::Path::new("state_dict");
    other.load_state_dict(&be, &floats, &[], path).unwrap();
    assert_eq!(eval_logits(&be, &mut other, &x).unwrap(), want);
    // Another cell's state_dict is refused, naming what to check.
    let mut third =
        Nb201Network::new(&be, tiny(arch([Nb201Op::NorConv3x3; 6]), 4, 10, 3), 0).unwrap();
    let err = third
        .load_state_dict(&be, &floats, &[], path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--arch"), "{err}");
}

#[test]
fn same_seed_same_weights_and_logits() {
    let be = Cpu::<f32>::new();
    let cfg = tiny(mixed(), 4, 10, 3);
    let mut rng = Rng::new(2);
    let x = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 2, 3, 16, 10), 10)
        .unwrap()
        .images;
    let run = |seed| {
        let mut net = Nb201Network::new(&be, cfg.clone(), seed).unwrap();
        let logits = eval_logits(&be, &mut net, &x).unwrap();
        (net.state_dict(&be).unwrap().0, logits)
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_ne!(a.1, c.1);
}

#[test]
fn full_size_forward_and_backward_on_the_cpu() {
    let be = Cpu::<f32>::new();
    let mut net = Nb201Network::new(&be, Nb201Config::new(mixed(), 10, 3), 0).unwrap();
    let mut rng = Rng::new(3);
    let batch = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 2, 3, 32, 10), 10).unwrap();
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(batch.images.clone());
    let logits = net.run(&mut tape, x, Mode::WEIGHT_STEP).unwrap();
    assert_eq!(tape.shape(logits).dims(), &[2, 10]);
    let loss = tape.softmax_cross_entropy(logits, &batch.labels).unwrap();
    let value = tape.scalar(loss, "loss").unwrap();
    assert!(value.is_finite() && value > 0.0, "{value}");
    let grads = tape.backward(loss).unwrap();
    let gw = grads.params(&be, &net.weights).unwrap();
    let mut nonzero = 0;
    for (id, g) in net.weights.ids().zip(&gw) {
        let v = g.to_host(&be).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{}", net.weights.name(id));
        nonzero += usize::from(v.iter().any(|&x| x != 0.0));
    }
    assert_eq!(nonzero, net.weights.len(), "every weight gets a gradient");
    assert_eq!(net.bn_batches, 1);
}

/// Finite differences of the training-mode loss in every weight tensor (f64, C=2, one cell
/// per stage, 8x8 images), against the tape's gradient.
#[test]
fn gradients_match_finite_differences() {
    type B = Cpu<f64>;
    let be = B::default();
    let mut net = Nb201Network::new(&be, tiny(mixed(), 2, 3, 2), 5).unwrap();
    let mut rng = Rng::new(4);
    let batch = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 3, 2, 8, 3), 3).unwrap();
    // Batch statistics, no running update: the objective is a function of the weights only.
    let mode = Mode {
        update_running: false,
        ..Mode::WEIGHT_STEP
    };
    let loss_of = |net: &mut Nb201Network<B>, grad: bool| {
        let mut tape = Tape::new(be.clone());
        tape.set_grad_enabled(grad);
        let x = tape.constant(batch.images.clone());
        let logits = net.run(&mut tape, x, mode).unwrap();
        let loss = tape.softmax_cross_entropy(logits, &batch.labels).unwrap();
        let value = tape.scalar(loss, "loss").unwrap();
        let grads = grad.then(|| {
            let g = tape.backward(loss).unwrap();
            g.params(&be, &net.weights).unwrap()
        });
        (value, grads)
    };
    let analytic = loss_of(&mut net, true).1.unwrap();
    let h = 1e-6;
    let mut checked = 0;
    for id in net.weights.ids().collect::<Vec<_>>() {
        let name = net.weights.name(id).to_string();
        let base = net.weights.get(id).to_host(&be).unwrap();
        let shape = net.weights.get(id).shape.clone();
        let grad = analytic[id.0].to_host(&be).unwrap();
        for _ in 0..3 {
            let j = rng.below(base.len());
            let mut at = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let t = Tensor::from_host(&be, &v, shape.clone()).unwrap();
                net.weights.set(id, t).unwrap();
                loss_of(&mut net, false).0
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let a = grad[j];
            let tol = 1e-6 + 1e-5 * a.abs().max(numeric.abs());
            assert!(
                (a - numeric).abs() <= tol,
                "{name}[{j}]: analytic {a} vs numeric {numeric}"
            );
            checked += 1;
        }
        let t = Tensor::from_host(&be, &base, shape).unwrap();
        net.weights.set(id, t).unwrap();
    }
    assert!(checked >= 3 * 20, "{checked} probes");
}

#[test]
fn sgd_steps_on_a_fixed_batch_lower_the_loss() {
    let be = Cpu::<f32>::new();
    let net = Nb201Network::new(&be, tiny(mixed(), 4, 3, 1), 0).unwrap();
    let hyper = TrainHyper {
        lr_max: 0.05,
        ..TrainHyper::nb201()
    };
    let mut trainer = Trainer::new(be.clone(), net, hyper).unwrap();
    let mut rng = Rng::new(5);
    let batch = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 8, 1, 8, 3), 3).unwrap();
    let losses: Vec<f64> = (0..12)
        .map(|_| trainer.step(&batch, 0.05, 0.0, &mut rng).unwrap().loss)
        .collect();
    assert!(
        losses[11] < 0.5 * losses[0],
        "losses did not fall: {losses:?}"
    );
    // No drop-path in this network.
    let err = trainer.step(&batch, 0.05, 0.1, &mut rng).unwrap_err();
    assert!(err.to_string().contains("--drop-path"), "{err}");
}

/// A cell whose node 1 has only `none` inputs: its conv edge reads zeros, and its BN turns
/// them into the BN shift (as in PyTorch). Every cell of this arch ignores its input, so the
/// last cell alone decides the logits.
#[test]
fn zero_nodes_feed_their_convs() {
    let be = Cpu::<f32>::new();
    let a = Nb201Arch::parse("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
        .unwrap();
    let mut net = Nb201Network::new(&be, tiny(a, 4, 3, 1), 0).unwrap();
    let mut rng = Rng::new(6);
    let batch = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 4, 1, 8, 3), 3).unwrap();
    let logits = eval_logits(&be, &mut net, &batch.images).unwrap();
    // Every image gives the same logits: the cells ignore their input.
    assert!(logits.iter().all(|v| v.is_finite()));
    assert_eq!(logits[..3], logits[3..6]);
    // Shifting that conv's BN in the last cell (3N + 1 = 4, at 4C = 16 channels) moves the
    // logits.
    let beta = net.weights.find("cells.4.edges.2<-1.op.2.bias").unwrap();
    let t = Tensor::from_host(&be, &[1.0f32; 16], [16]).unwrap();
    net.weights.set(beta, t).unwrap();
    assert_ne!(eval_logits(&be, &mut net, &batch.images).unwrap(), logits);
}

/// A saved NB201 network reads back through `load_any_network` (the DARTS loader refuses it,
/// naming the space); a file whose metadata claims another network than its tensors hold
/// (N = 1e8, C = 1e9, other classes, another cell) is refused naming the file, before
/// anything of that size is built.
#[test]
fn saved_networks_load_back_and_lying_metadata_is_refused() {
    let be = Cpu::<f32>::new();
    let dir = common::tmp_dir("nb201_model", "files");
    std::fs::create_dir_all(&dir).unwrap();
    let mut net = Nb201Network::new(&be, tiny(mixed(), 4, 10, 3), 0).unwrap();
    let path = dir.join("model.safetensors");
    save_network(
        &be,
        &net,
        Some("synthetic"),
        &path,
        BTreeMap::new(),
        HashMap::new(),
    )
    .unwrap();
    let mut rng = Rng::new(12);
    let x = DeviceBatch::from_batch(&be, &host_batch(&mut rng, 2, 3, 8, 10), 10)
        .unwrap()
        .images;
    let want = eval_logits(&be, &mut net, &x).unwrap();
    match load_any_network(&be, &path, None).unwrap() {
        LoadedNetwork::Nb201(mut back, meta) => {
            assert_eq!(meta.model, net.config);
            assert_eq!(meta.dataset.as_deref(), Some("synthetic"));
            assert_eq!(eval_logits(&be, &mut *back, &x).unwrap(), want);
        }
        LoadedNetwork::Darts(..) => panic!("read as a DARTS network"),
        LoadedNetwork::MbConv(..) => panic!("read as an MBConv network"),
    }
    let err = match load_network(&be, &path, None) {
        Ok(_) => panic!("the DARTS loader read an NB201 file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("nb201") && err.contains("model.safetensors"),
        "{err}"
    );

    let (tensors, meta) = load_safetensors(&path).unwrap();
    let all_3x3 = arch([Nb201Op::NorConv3x3; 6]).to_arch_string();
    for (field, value, says) in [
        (
            "cells_per_stage",
            serde_json::json!(100_000_000u64),
            "residual block",
        ),
        (
            "channels",
            serde_json::json!(1_000_000_000u64),
            "stem.0.weight",
        ),
        ("classes", serde_json::json!(7), "classifier.weight"),
        // The edge 2<-0 is a 1x1 conv in the file, a 3x3 one in the claimed cell.
        (
            "arch",
            serde_json::json!(all_3x3),
            "cells.0.edges.2<-0.op.1.weight",
        ),
    ] {
        let mut m: serde_json::Value = serde_json::from_str(&meta["nasrs.model"]).unwrap();
        m["model"][field] = value;
        let mut lying = meta.clone();
        lying.insert("nasrs.model".into(), m.to_string());
        let bad = dir.join(format!("{field}.safetensors"));
        save_safetensors(&bad, &tensors, lying).unwrap();
        let err = match load_any_network(&be, &bad, None) {
            Ok(_) => panic!("{field}: a lying file loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("{field}.safetensors")) && err.contains(says),
            "{field}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logits (training and eval mode) and weight gradients of one step on the device, against
/// the CPU's.
fn matches_the_cpu<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    fn outputs<D: Backend<Elem = f32>>(be: &D, seed: u64) -> nasrs::Result<Outputs> {
        let mut net = Nb201Network::new(be, tiny(mixed(), 4, 10, 3), seed)?;
        let mut rng = Rng::new(9);
        let batch = DeviceBatch::from_batch(be, &host_batch(&mut rng, 2, 3, 8, 10), 10)?;
        let mut tape = Tape::new(be.clone());
        let x = tape.constant(batch.images.clone());
        let logits = net.run(&mut tape, x, Mode::WEIGHT_STEP)?;
        let loss = tape.softmax_cross_entropy(logits, &batch.labels)?;
        let mut out = Outputs::default();
        out.push("train_logits", tape.value(logits)?.to_host(be)?);
        out.scalar("loss", tape.scalar(loss, "loss")?);
        let grads = tape.backward(loss)?;
        let mut g = ParamStore::new();
        for (id, t) in net.weights.ids().zip(grads.params(be, &net.weights)?) {
            g.add(net.weights.name(id).to_string(), t);
        }
        drop(grads);
        tape.clear();
        out.store(be, "grad", &g)?;
        out.store(be, "bn", &net.buffers)?;
        let eval: Vec<f32> = eval_logits(be, &mut net, &batch.images)?
            .iter()
            .map(|&v| v as f32)
            .collect();
        out.push("eval_logits", eval);
        Ok(out)
    }
    let got = outputs(be, 11)?;
    let want = outputs(&Cpu::<f32>::new(), 11)?;
    assert_close(be, "NB201 network", &got, &want, TOL);
    Ok(())
}

test_device!(nb201_network_matches_the_cpu, matches_the_cpu);
