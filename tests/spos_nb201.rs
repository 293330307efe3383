//! SPOS on the NB201 space: the supernet's path is the stand-alone NB201 network (the same
//! logits and the same weight gradients when the network holds the supernet's weights for
//! the path, nothing else touched), a path's weight count is NB201's parameter count (the
//! bundled table's `params_m`) and its FLOPs the network's, a run resumes bit for bit and
//! keeps every path inside FLOPs limits, and the CLI's result trains with `nasrs train
//! --space nb201`.

mod common;

use common::{assert_close_values, host_batch, tmp_dir};
use nasrs::autograd::Tape;
use nasrs::backend::counting::Counting;
use nasrs::data::synthetic;
use nasrs::nas::darts::DeviceBatch;
use nasrs::nas::evaluate::eval_logits;
use nasrs::nas::nb201_model::{Nb201Network, Nb201Supernet, Nb201SupernetConfig};
use nasrs::nas::progress::Silent;
use nasrs::nas::run_dir::Start;
use nasrs::nas::space::nb201::{Nb201Arch, Nb201Op, Nb201Space, EDGES};
use nasrs::nas::space::SearchSpace;
use nasrs::nas::spos::run::{Phase, SearchRecord, SposRun, SposRunConfig, SposSearch, CHECKPOINT};
use nasrs::nas::spos::{PathLimits, PathMeter, Sampling, SposHyper, Supernet};
use nasrs::nas::Mode;
use nasrs::{Cpu, Rng, Tensor};
use std::path::Path;
use std::process::Command;

fn sizes(channels: usize, cells: usize) -> Nb201SupernetConfig {
    Nb201SupernetConfig {
        channels,
        cells_per_stage: cells,
        classes: 3,
        in_channels: 1,
    }
}

/// Every op on every edge (edge e takes op (e + k) % 5), and seeded random cells.
fn archs(n_random: usize) -> Vec<Nb201Arch> {
    let mut out: Vec<Nb201Arch> = (0..5)
        .map(|k| Nb201Arch(std::array::from_fn(|e| Nb201Op::ALL[(e + k) % 5])))
        .collect();
    let mut rng = Rng::new(7);
    out.extend((0..n_random).map(|_| Nb201Space.sample(&mut rng)));
    out
}

/// The supernet's name of a stand-alone network's weight: an edge's op gains its index.
fn supernet_name(name: &str, arch: &Nb201Arch) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 4 && parts[0] == "cells" && parts[2] == "edges" {
        let e = EDGES
            .iter()
            .position(|&(to, from)| parts[3] == format!("{to}<-{from}"))
            .unwrap();
        let k = Nb201Op::ALL.iter().position(|&op| op == arch.0[e]).unwrap();
        format!("{}.{k}.{}", parts[..4].join("."), parts[4..].join("."))
    } else {
        name.to_string()
    }
}

#[test]
fn path_weights_are_nb201s_parameter_count() {
    let be = Counting::new();
    let cfg = Nb201SupernetConfig {
        channels: 16,
        cells_per_stage: 5,
        classes: 10,
        in_channels: 3,
    };
    let net = Nb201Supernet::new(&be, cfg.clone(), 0).unwrap();
    for a in archs(30) {
        let alone = Nb201Network::new(&be, cfg.network(a), 0).unwrap();
        assert_eq!(
            Supernet::path_weights(&net, &a).unwrap(),
            alone.num_weights(),
            "{}",
            a.to_arch_string()
        );
    }
    let skip = Nb201Arch([Nb201Op::SkipConnect; 6]);
    assert_eq!(net.path_weights(&skip), 73_306, "the table's all-skip cell");
}

#[test]
fn a_path_is_the_standalone_network_with_the_supernets_weights() {
    let be = Cpu::new();
    let cfg = sizes(3, 1);
    let mut sup = Nb201Supernet::new(&be, cfg.clone(), 5).unwrap();
    let mut rng = Rng::new(11);
    let host = host_batch(&mut rng, 2, 1, 8, 3);
    let batch = DeviceBatch::from_batch(&be, &host, 3).unwrap();
    for a in archs(3) {
        let mut net = Nb201Network::new(&be, cfg.network(a), 0).unwrap();
        // The network takes the supernet's weights and statistics for the path.
        for (store, from) in [
            (&mut net.weights, sup.weights()),
            (&mut net.buffers, sup.buffers()),
        ] {
            for id in store.ids().collect::<Vec<_>>() {
                let src = from.find(&supernet_name(store.name(id), &a)).unwrap();
                store.set(id, from.get(src).clone()).unwrap();
            }
        }
        let what = a.to_arch_string();
        // Eval mode: the same logits.
        let mut tape = Tape::new(be.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.images.clone());
        let y = sup.run_path(&mut tape, x, Mode::EVAL, &a).unwrap();
        let got = tape.value(y).unwrap().to_f64(&be).unwrap();
        drop(tape);
        let want = eval_logits(&be, &mut net, &batch.images).unwrap();
        assert_close_values(&format!("{what} eval logits"), &got, &want, 1e-6);
        // Training mode: the same loss gradient for each of the path's weights; the
        // supernet's other weights get none.
        let grads_of = |tape: &mut Tape<Cpu>, y| {
            let loss = tape.softmax_cross_entropy(y, &batch.labels).unwrap();
            tape.backward(loss).unwrap()
        };
        let train = Mode {
            update_running: false,
            ..Mode::WEIGHT_STEP
        };
        let mut t1 = Tape::new(be.clone());
        let x = t1.constant(batch.images.clone());
        let y = sup.run_path(&mut t1, x, train, &a).unwrap();
        let g_sup = grads_of(&mut t1, y);
        let mut t2 = Tape::new(be.clone());
        let x = t2.constant(batch.images.clone());
        let y = net.run(&mut t2, x, train).unwrap();
        let g_net = grads_of(&mut t2, y);
        let mut on_path = 0;
        for id in net.weights.ids() {
            let name = supernet_name(net.weights.name(id), &a);
            let sid = sup.weights().find(&name).unwrap();
            // A weight on a dead branch (feeding a node no edge reads) has none in both.
            let (got, want) = match (
                g_sup.param(sup.weights(), sid),
                g_net.param(&net.weights, id),
            ) {
                (None, None) => continue,
                (Some(g), Some(w)) => (g, w),
                (g, w) => panic!(
                    "{what} {name}: gradient {} in the supernet, {} alone",
                    g.is_some(),
                    w.is_some()
                ),
            };
            assert_close_values(
                &format!("{what} d/d {name}"),
                &got.to_host(&be).unwrap(),
                &want.to_host(&be).unwrap(),
                1e-5,
            );
            on_path += 1;
        }
        let with_grad = sup
            .weights()
            .ids()
            .filter(|&id| g_sup.param(sup.weights(), id).is_some())
            .count();
        assert_eq!(
            with_grad, on_path,
            "{what}: weights off the path got gradients"
        );
    }
}

#[test]
fn path_flops_are_the_standalone_networks() {
    let cfg = sizes(4, 1);
    let meter = PathMeter::new(
        &cfg,
        PathLimits {
            params: None,
            flops: Some((0, u64::MAX)),
        },
        16,
        16,
    )
    .unwrap();
    for a in archs(5) {
        let be = Counting::new();
        let mut net = Nb201Network::new(&be, cfg.network(a), 0).unwrap();
        let x = Tensor::zeros(&be, [1, 1, 16, 16]).unwrap();
        be.reset().unwrap();
        eval_logits(&be, &mut net, &x).unwrap();
        let flops = be.snapshot().unwrap().total.flops;
        let (weights, got) = meter.measure(&a).unwrap();
        assert_eq!(got, flops, "{}", a.to_arch_string());
        assert_eq!(weights, net.num_weights() as u64);
    }
}

fn config(epochs: usize, limits: PathLimits) -> SposRunConfig<Nb201SupernetConfig> {
    SposRunConfig {
        space: "nb201".into(),
        dataset: "synthetic".into(),
        model: sizes(2, 1),
        hyper: SposHyper::default(),
        sampling: Sampling::Fair,
        epochs,
        batch: 8,
        seed: 6,
        train_portion: 0.5,
        train_limit: None,
        augment: false,
        search: SposSearch::Random(12),
        recalibration_batches: 1,
        limits,
    }
}

fn run(dir: &Path, cfg: SposRunConfig<Nb201SupernetConfig>, resume: bool) -> f64 {
    let data = synthetic(48, 1, 8, 8, 3, 9).unwrap();
    let start = Start::from_flags(resume, false).unwrap();
    SposRun::new(Cpu::new(), cfg, dir)
        .unwrap()
        .run(&data, start)
        .unwrap()
        .score
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn a_resumed_nb201_run_equals_the_uninterrupted_one_inside_flops_limits() {
    // Limits around the middle of the space's FLOPs at these sizes.
    let cfg = sizes(2, 1);
    let all = PathMeter::new(
        &cfg,
        PathLimits {
            params: None,
            flops: Some((0, u64::MAX)),
        },
        8,
        8,
    )
    .unwrap();
    let mut flops: Vec<u64> = archs(60)
        .iter()
        .map(|a| all.measure(a).unwrap().1)
        .collect();
    flops.sort_unstable();
    let limits = PathLimits {
        params: None,
        flops: Some((flops[15], flops[50])),
    };
    let full = tmp_dir("spos_nb201", "full");
    let split = tmp_dir("spos_nb201", "split");
    let score = run(&full, config(2, limits.clone()), false);
    assert!((0.0..=1.0).contains(&score));
    run(&split, config(1, limits.clone()), false);
    run(&split, config(2, limits.clone()), true);
    for f in [CHECKPOINT, "search.jsonl", "best.json", "arch.txt"] {
        assert_eq!(read(&full, f), read(&split, f), "{f}");
    }
    let (lo, hi) = limits.flops.unwrap();
    let text = String::from_utf8(read(&full, "search.jsonl")).unwrap();
    for line in text.lines() {
        let r: SearchRecord = serde_json::from_str(line).unwrap();
        let a = Nb201Space.from_json(&r.arch).unwrap();
        assert!(
            (lo..=hi).contains(&r.flops),
            "{} outside {lo}..={hi}",
            r.flops
        );
        assert_eq!(all.measure(&a).unwrap().1, r.flops);
    }
    let best = String::from_utf8(read(&full, "arch.txt")).unwrap();
    Nb201Arch::parse(best.trim()).unwrap();
}

#[test]
fn train_then_search_phases_equal_one_run() {
    let data = synthetic(48, 1, 8, 8, 3, 9).unwrap();
    let full = tmp_dir("spos_nb201", "phase-full");
    let split = tmp_dir("spos_nb201", "phase-split");
    run(&full, config(2, PathLimits::default()), false);
    let phase = |p, start| {
        SposRun::new(Cpu::new(), config(2, PathLimits::default()), &split)
            .unwrap()
            .run_phase(&data, start, p, &mut Silent)
    };
    // Nothing to search yet.
    let err = phase(Phase::Search, Start::New).err().unwrap().to_string();
    assert!(err.contains("--phase search"), "{err}");
    assert!(phase(Phase::Train, Start::New).unwrap().is_none());
    assert!(!split.join("search.jsonl").exists());
    assert!(phase(Phase::Search, Start::New).unwrap().is_some());
    for f in [CHECKPOINT, "search.jsonl", "best.json", "arch.txt"] {
        assert_eq!(read(&full, f), read(&split, f), "{f}");
    }
    // A supernet that has not finished training is not searched.
    let short = tmp_dir("spos_nb201", "phase-short");
    run(&short, config(1, PathLimits::default()), false);
    let err = SposRun::new(Cpu::new(), config(2, PathLimits::default()), &short)
        .unwrap()
        .run_phase(&data, Start::Resume, Phase::Search, &mut Silent)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("1 of its 2 epochs"), "{err}");
}

#[test]
fn an_nb201_checkpoint_is_not_resumed_as_darts() {
    let dir = tmp_dir("spos_nb201", "space");
    run(&dir, config(1, PathLimits::default()), false);
    let c = config(2, PathLimits::default());
    let darts = SposRunConfig {
        space: "darts".into(),
        model: nasrs::nas::SearchConfig::darts(2, 3, 3, 1),
        dataset: c.dataset,
        hyper: c.hyper,
        sampling: c.sampling,
        epochs: c.epochs,
        batch: c.batch,
        seed: c.seed,
        train_portion: c.train_portion,
        train_limit: c.train_limit,
        augment: c.augment,
        search: c.search,
        recalibration_batches: c.recalibration_batches,
        limits: c.limits,
    };
    let data = synthetic(48, 1, 8, 8, 3, 9).unwrap();
    let err = SposRun::new(Cpu::new(), darts, &dir)
        .unwrap()
        .run(&data, Start::from_flags(true, false).unwrap())
        .expect_err("a checkpoint of another space is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("nb201 space") && msg.contains("--space nb201"),
        "{msg}"
    );
}

#[test]
fn the_cli_searches_nb201_and_its_result_trains() {
    let out = tmp_dir("spos_nb201", "cli");
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let run = Command::new(bin)
        .args([
            "search",
            "spos",
            "--space",
            "nb201",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--channels",
            "2",
            "--train-limit",
            "96",
            "--search",
            "random",
            "--samples",
            "6",
            "--recalibration-batches",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = String::from_utf8(run.stdout).unwrap();
    let arch = Nb201Arch::parse(printed.trim()).unwrap();
    let saved = String::from_utf8(read(&out, "arch.txt")).unwrap();
    assert_eq!(saved.trim(), arch.to_arch_string());
    let train = Command::new(bin)
        .args([
            "train",
            "--space",
            "nb201",
            "--arch",
            printed.trim(),
            "--epochs",
            "1",
            "--batch",
            "16",
            "--channels",
            "2",
            "--layers",
            "1",
            "--train-limit",
            "64",
            "--out",
        ])
        .arg(tmp_dir("spos_nb201", "cli-train"))
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let bad = Command::new(bin)
        .args(["search", "spos", "--space", "nb301", "--out"])
        .arg(tmp_dir("spos_nb201", "cli-bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--space"));
}

/// One SPOS step on `be` against the CPU's, on each space's supernet: the same loss and the
/// same weights and statistics after the update, and the same recalibrated score.
fn spos_step_matches_the_cpu<B: nasrs::Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    use nasrs::nas::spos::{score_path, SposTrainer, SupernetConfig};
    fn check<B: nasrs::Backend<Elem = f32>, M: SupernetConfig>(
        be: &B,
        model: M,
    ) -> nasrs::Result<()> {
        let cpu = Cpu::new();
        let hyper = SposHyper::default();
        let mut on_dev = SposTrainer::new(be.clone(), model.build(be, 3)?, hyper.clone())?;
        let mut on_cpu = SposTrainer::new(cpu.clone(), model.build(&cpu, 3)?, hyper)?;
        let mut rng = Rng::new(21);
        let space = <M::Space as Default>::default();
        for step in 0..2 {
            let host = host_batch(&mut rng, 4, 1, 8, 3);
            let path = space.sample(&mut rng);
            let a = on_dev.step(&DeviceBatch::from_batch(be, &host, 3)?, &path, 0.05)?;
            let b = on_cpu.step(&DeviceBatch::from_batch(&cpu, &host, 3)?, &path, 0.05)?;
            assert!(
                (a.loss - b.loss).abs() <= 1e-4 * b.loss.abs().max(1.0),
                "step {step}"
            );
        }
        let (dev_state, _) = on_dev.net.state_dict(be)?;
        let (cpu_state, _) = on_cpu.net.state_dict(&cpu)?;
        for (name, want) in &cpu_state {
            let got = &dev_state[name];
            assert_close_values(name, &got.data, &want.data, 1e-4);
        }
        let host = host_batch(&mut rng, 8, 1, 8, 3);
        let path = space.sample(&mut rng);
        let dev_batches = [DeviceBatch::from_batch(be, &host, 3)?];
        let cpu_batches = [DeviceBatch::from_batch(&cpu, &host, 3)?];
        let got = score_path(be, &mut on_dev.net, &path, &dev_batches, &dev_batches)?;
        let want = score_path(&cpu, &mut on_cpu.net, &path, &cpu_batches, &cpu_batches)?;
        // One image's prediction may flip on a near tie.
        assert!((got - want).abs() <= 1.0 / 8.0 + 1e-12, "{got} vs {want}");
        Ok(())
    }
    check(be, sizes(3, 1))?;
    check(
        be,
        nasrs::nas::SearchConfig::darts(2, 3, 3, 1).ops(nasrs::nas::Primitive::ALL.to_vec()),
    )
}

test_device!(spos_steps_match_the_cpu, spos_step_matches_the_cpu);

#[test]
fn multi_trial_strategies_search_a_trained_supernet() {
    let out = tmp_dir("spos_nb201", "cli-supernet-eval");
    let bin = env!("CARGO_BIN_EXE_nasrs");
    let train = Command::new(bin)
        .args([
            "search",
            "spos",
            "--space",
            "nb201",
            "--phase",
            "train",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--channels",
            "2",
            "--train-limit",
            "96",
            "--recalibration-batches",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    assert!(!out.join("search.jsonl").exists());
    let search = |seed: &str| {
        Command::new(bin)
            .args([
                "search",
                "evolution",
                "--evaluator",
                "supernet",
                "--budget",
                "7",
                "--population",
                "3",
                "--sample-size",
                "2",
                "--seed",
                seed,
                "--supernet",
            ])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = search("4");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed = String::from_utf8(first.stdout).unwrap();
    Nb201Arch::parse(printed.trim()).unwrap();
    let journal = String::from_utf8(read(&out, "search.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 7, "{journal}");
    let config: serde_json::Value = serde_json::from_slice(&read(&out, "config.json")).unwrap();
    assert_eq!(config["search"]["Strategy"]["budget"], 7, "{config}");
    // The same seed searches the same way; the supernet is left as it was.
    let again = search("4");
    assert!(again.status.success());
    assert_eq!(read(&out, "search.jsonl"), journal.as_bytes());
    let other_data = Command::new(bin)
        .args([
            "search",
            "random",
            "--evaluator",
            "supernet",
            "--budget",
            "3",
            "--dataset",
            "fashion-mnist",
            "--supernet",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!other_data.status.success());
    let err = String::from_utf8_lossy(&other_data.stderr);
    assert!(
        err.contains("--dataset") && err.contains("'mnist'"),
        "{err}"
    );
    assert_eq!(
        read(&out, "search.jsonl"),
        journal.as_bytes(),
        "nothing written"
    );
    let missing = Command::new(bin)
        .args([
            "search",
            "random",
            "--evaluator",
            "supernet",
            "--budget",
            "3",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--supernet"));
}
