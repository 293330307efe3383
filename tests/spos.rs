//! Single Path One-Shot on the DARTS supernet: a path's forward is the supernet's with one-hot
//! alphas, training touches only the path's weights, the fair sampler trains every value
//! equally often, recalibration averages batch statistics and leaves the supernet as it was,
//! and evolution searches any space with any score, deterministically.

use nasrs::autograd::Tape;
use nasrs::data::Batch;
use nasrs::nas::darts::DeviceBatch;
use nasrs::nas::space::darts::{DartsArch, DartsSpace};
use nasrs::nas::space::nb201::{Nb201Arch, Nb201Space};
use nasrs::nas::space::SearchSpace;
use nasrs::nas::spos::{
    best, evolution_search, random_search, recalibrate_bn, score_path, EvolutionConfig,
    PathSampler, Sampling, SposHyper, SposTrainer,
};
use nasrs::nas::{Mode, SearchConfig, SearchNetwork};
use nasrs::{Cpu, Rng, Tensor};
use std::collections::HashMap;

type B = Cpu<f32>;

fn config() -> SearchConfig {
    SearchConfig::default()
        .channels(4)
        .layers(3)
        .classes(3)
        .in_channels(2)
}

fn batch(be: &B, rng: &mut Rng, n: usize) -> DeviceBatch<B> {
    let b = Batch {
        images: (0..n * 2 * 8 * 8).map(|_| rng.normal() as f32).collect(),
        labels: (0..n).map(|_| rng.below(3) as u32).collect(),
        n,
        c: 2,
        h: 8,
        w: 8,
    };
    DeviceBatch::from_batch(be, &b, 3).unwrap()
}

fn logits(be: &B, net: &mut SearchNetwork<B>, x: &Tensor<B>, path: Option<&DartsArch>) -> Vec<f64> {
    let mut tape = Tape::new(be.clone());
    tape.set_grad_enabled(false);
    let xv = tape.constant(x.clone());
    let y = match path {
        Some(p) => net.run_path(&mut tape, xv, Mode::EVAL, p).unwrap(),
        None => net.run(&mut tape, xv, Mode::EVAL, None).unwrap(),
    };
    tape.value(y).unwrap().to_f64(be).unwrap()
}

/// Alphas that put all the weight on the path's op of each chosen edge and on `none` elsewhere.
fn one_hot_alphas(net: &mut SearchNetwork<B>, be: &B, path: &DartsArch) {
    let ops = net.config.ops.clone();
    for (reduce, nodes) in [(false, &path.normal), (true, &path.reduce)] {
        let edges = net.config.edges();
        let mut table = vec![0f32; edges * ops.len()];
        let none = ops
            .iter()
            .position(|&o| o == nasrs::nas::Primitive::None)
            .unwrap();
        for e in 0..edges {
            table[e * ops.len() + none] = 1000.0;
        }
        let mut first = 0;
        for (i, n) in nodes.iter().enumerate() {
            for (input, op) in [(n.inputs.0, n.ops.0), (n.inputs.1, n.ops.1)] {
                let e = first + input;
                table[e * ops.len() + none] = 0.0;
                table[e * ops.len() + ops.iter().position(|&o| o == op).unwrap()] = 1000.0;
            }
            first += i + 2;
        }
        let t = Tensor::from_host(be, &table, &[edges, ops.len()][..]).unwrap();
        net.set_alpha_table(be, reduce, &t).unwrap();
    }
}

#[test]
fn a_path_is_the_supernet_with_one_hot_alphas() {
    let be = B::default();
    let mut net = SearchNetwork::new(&be, config(), 3).unwrap();
    let mut rng = Rng::new(1);
    let space = DartsSpace::default();
    let x = batch(&be, &mut rng, 2).images;
    for _ in 0..3 {
        let path = space.sample(&mut rng);
        one_hot_alphas(&mut net, &be, &path);
        let full = logits(&be, &mut net, &x, None);
        let single = logits(&be, &mut net, &x, Some(&path));
        for (a, b) in full.iter().zip(&single) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn a_step_updates_only_the_paths_weights() {
    let be = B::default();
    let net = SearchNetwork::new(&be, config(), 3).unwrap();
    let mut t = SposTrainer::new(be.clone(), net, SposHyper::default()).unwrap();
    let mut rng = Rng::new(2);
    let space = DartsSpace::default();
    let b = batch(&be, &mut rng, 4);
    let path = space.sample(&mut rng);
    let before: Vec<Vec<f64>> = t
        .net
        .weights
        .tensors()
        .iter()
        .map(|w| w.to_f64(&be).unwrap())
        .collect();
    t.step(&b, &path, 0.1).unwrap();
    let after: Vec<Vec<f64>> = t
        .net
        .weights
        .tensors()
        .iter()
        .map(|w| w.to_f64(&be).unwrap())
        .collect();
    let names = t.net.weights.names().to_vec();
    let changed: Vec<&String> = names
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (a, b))| a != b)
        .map(|(n, _)| n)
        .collect();
    assert!(!changed.is_empty());
    // What changed is exactly what the path uses.
    let changed_numel: usize = t
        .net
        .weights
        .shapes()
        .filter(|(n, _)| changed.iter().any(|c| c.as_str() == *n))
        .map(|(_, s)| s.numel())
        .sum();
    assert_eq!(changed_numel, t.net.path_weights(&path).unwrap());
    assert!(
        changed.len() < names.len() / 2,
        "{} of {}",
        changed.len(),
        names.len()
    );
    // The stem and the classifier are on every path.
    assert!(changed.iter().any(|n| n.starts_with("stem")));
    assert!(changed.iter().any(|n| n.starts_with("classifier")));
    // Momentum exists only for what was updated.
    for (name, m) in names.iter().zip(t.opt.state.tensors()) {
        let moved = m.to_f64(&be).unwrap().iter().any(|&v| v != 0.0);
        assert_eq!(moved, changed.contains(&name), "{name}");
    }
}

#[test]
fn training_one_path_lowers_its_loss() {
    let be = B::default();
    let net = SearchNetwork::new(&be, config(), 3).unwrap();
    let mut t = SposTrainer::new(be.clone(), net, SposHyper::default()).unwrap();
    let mut rng = Rng::new(4);
    let b = batch(&be, &mut rng, 8);
    let path = DartsSpace::default().sample(&mut rng);
    let first = t.step(&b, &path, 0.05).unwrap().loss;
    let mut last = first;
    for _ in 0..15 {
        last = t.step(&b, &path, 0.05).unwrap().loss;
    }
    assert!(last < first * 0.8, "{first} -> {last}");
}

#[test]
fn fair_sampling_trains_every_value_equally_often() {
    let space = Nb201Space;
    let mut s = PathSampler::new(Sampling::Fair, 9);
    let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
    for _ in 0..5 * 40 {
        let a = s.next(&space, &|_| true).unwrap();
        for (i, v) in space.encode(&a).into_iter().enumerate() {
            *counts.entry((i, v)).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 6 * 5);
    assert!(counts.values().all(|&c| c == 40), "{counts:?}");
    // Resuming from a serialized sampler continues the same sequence.
    let saved = serde_json::to_string(&s).unwrap();
    let mut r: PathSampler = serde_json::from_str(&saved).unwrap();
    for _ in 0..17 {
        assert_eq!(
            s.next(&space, &|_| true).unwrap(),
            r.next(&space, &|_| true).unwrap()
        );
    }
}

#[test]
fn recalibration_averages_batches_and_scoring_restores_the_supernet() {
    let be = B::default();
    let mut net = SearchNetwork::new(&be, config(), 3).unwrap();
    let mut rng = Rng::new(5);
    let path = DartsSpace::default().sample(&mut rng);
    let b1 = batch(&be, &mut rng, 4);
    let stats = |net: &SearchNetwork<B>| -> Vec<Vec<f64>> {
        net.buffers
            .tensors()
            .iter()
            .map(|t| t.to_f64(&be).unwrap())
            .collect()
    };
    // One batch twice averages to that batch's statistics.
    recalibrate_bn(&be, &mut net, &path, std::slice::from_ref(&b1)).unwrap();
    let once = stats(&net);
    let b1b = DeviceBatch {
        images: b1.images.clone(),
        labels: b1.labels.clone(),
        classes: 3,
    };
    recalibrate_bn(&be, &mut net, &path, &[b1, b1b]).unwrap();
    for (a, b) in once.iter().flatten().zip(stats(&net).iter().flatten()) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
    // Scoring leaves the supernet's statistics bitwise as they were.
    let mut net = SearchNetwork::new(&be, config(), 3).unwrap();
    let before = stats(&net);
    let recal = vec![batch(&be, &mut rng, 4)];
    let val = vec![batch(&be, &mut rng, 6)];
    let s = score_path(&be, &mut net, &path, &recal, &val).unwrap();
    assert!((0.0..=1.0).contains(&s));
    assert_eq!(stats(&net), before);
}

/// A known score over NB201: +1 for every conv 3x3, so the optimum is all nor_conv_3x3.
fn synthetic(a: &Nb201Arch) -> f64 {
    a.0.iter().filter(|o| o.name() == "nor_conv_3x3").count() as f64
}

#[test]
fn evolution_finds_the_optimum_of_a_known_score_and_is_deterministic() {
    let space = Nb201Space;
    let cfg = EvolutionConfig {
        population: 20,
        parents: 5,
        mutations: 10,
        crossovers: 10,
        mutation_prob: 0.2,
        generations: 10,
    };
    let run = |seed| {
        let mut rng = Rng::new(seed);
        evolution_search(&space, &cfg, &mut rng, &|_| true, &mut |a| Ok(synthetic(a))).unwrap()
    };
    let h = run(1);
    assert_eq!(best(&h).unwrap().score, 6.0);
    let again = run(1);
    assert_eq!(
        h.iter().map(|s| s.arch).collect::<Vec<_>>(),
        again.iter().map(|s| s.arch).collect::<Vec<_>>()
    );
    // Each architecture is scored once.
    let distinct: std::collections::HashSet<_> = h.iter().map(|s| s.arch).collect();
    assert_eq!(distinct.len(), h.len());
    // A constraint is respected by every candidate.
    let no_pool = |a: &Nb201Arch| a.0.iter().all(|o| o.name() != "avg_pool_3x3");
    let mut rng = Rng::new(2);
    let c = evolution_search(&space, &cfg, &mut rng, &no_pool, &mut |a| Ok(synthetic(a))).unwrap();
    assert!(c.iter().all(|s| no_pool(&s.arch)));
    // Random search with the same budget does worse on average than evolution here.
    let mut rng = Rng::new(3);
    let r = random_search(&space, h.len(), &mut rng, &|_| true, &mut |a| {
        Ok(synthetic(a))
    })
    .unwrap();
    assert_eq!(r.len(), h.len());
    assert!(best(&r).unwrap().score <= 6.0);
}
