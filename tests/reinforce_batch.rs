//! REINFORCE's controller batch (Zoph and Le's m), on both controllers: the policy does not
//! move until m scores are in, and then moves by one Adam step on the mean of the m draws'
//! directions (each draw's advantage taken as its reward arrived); a driver may ask for the
//! next draw only while the batch is not full; a batch of m still concentrates on the
//! optimum of a known synthetic table.

#[path = "common/synthetic_table.rs"]
mod synthetic_table;

use nasrs::backend::cpu::Cpu;
use nasrs::nas::multi_trial::adam::Adam;
use nasrs::nas::multi_trial::reinforce::{sample_gradient, MovingAverage};
use nasrs::nas::multi_trial::{
    search, LstmReinforceConfig, Reinforce, ReinforceConfig, ReinforceLstm, Strategy,
    StrategyConfig,
};
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::optim;
use nasrs::rng::Rng;
use nasrs::Tensor;
use synthetic_table::synthetic_evaluator;

fn batched(m: usize) -> ReinforceConfig {
    ReinforceConfig {
        lr: 0.05,
        entropy: 0.01,
        batch: m,
        ..ReinforceConfig::default()
    }
}

/// Three draws and their rewards, from a fixed stream.
fn draws() -> Vec<(Vec<usize>, f64)> {
    let mut rng = Rng::new(5);
    (0..3)
        .map(|_| {
            let d: Vec<usize> = (0..6).map(|_| rng.below(5)).collect();
            (d, 50.0 + 40.0 * rng.uniform())
        })
        .collect()
}

#[test]
fn a_driver_may_draw_only_while_the_batch_is_not_full() {
    let c = batched(3);
    // (proposed, observed) -> may draw
    for (p, o, may) in [
        (0, 0, true),
        (2, 0, true),
        (3, 0, false),
        (3, 2, false),
        (3, 3, true),
        (5, 3, true),
        (6, 4, false),
        (6, 6, true),
    ] {
        assert_eq!(c.may_propose(p, o), may, "proposed {p}, observed {o}");
    }
    let one = batched(1);
    assert!(one.may_propose(4, 4) && !one.may_propose(5, 4));
    assert_eq!(StrategyConfig::Reinforce(c).max_in_flight(), 3);
    assert_eq!(StrategyConfig::Random.max_in_flight(), usize::MAX);
    let bad = ReinforceConfig {
        batch: 0,
        ..ReinforceConfig::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("--controller-batch"), "{err}");
}

#[test]
fn the_policy_moves_once_per_batch_by_the_mean_direction() {
    let space = Nb201Space;
    let c = batched(3);
    let mut r = Reinforce::new(&space, c.clone()).unwrap();
    let start = r.policy().clone();
    let mut baseline = MovingAverage::new(c.baseline_decay);
    let mut mean = vec![0.0; start.flat().len()];
    for (i, (d, reward)) in draws().into_iter().enumerate() {
        let arch = space.decode(&d).unwrap();
        r.observe(&space, &arch, reward).unwrap();
        if i < 2 {
            assert_eq!(r.policy(), &start, "moved before the batch was full");
        }
        baseline.update(reward);
        let advantage = reward - baseline.value().unwrap();
        for (m, g) in mean
            .iter_mut()
            .zip(sample_gradient(&start, &d, advantage, c.entropy))
        {
            *m -= g / 3.0;
        }
    }
    let mut expect = start.flat();
    Adam::new(expect.len(), c.lr).step(&mut expect, &mean);
    for (got, want) in r.policy().flat().iter().zip(&expect) {
        assert!((got - want).abs() <= 1e-12, "{got} vs {want}");
    }
    assert_ne!(r.policy(), &start);
}

#[test]
fn the_lstm_moves_once_per_batch_by_the_mean_gradient() {
    let space = Nb201Space;
    let c = LstmReinforceConfig {
        reinforce: batched(3),
        hidden: 8,
    };
    let mut r = ReinforceLstm::new(&space, c.clone(), Cpu::new(), &mut Rng::new(3)).unwrap();
    let be = Cpu::new();
    let host = |r: &ReinforceLstm<Cpu>| -> Vec<Vec<f32>> {
        let store = r.controller().store();
        store
            .ids()
            .map(|id| store.get(id).to_host(&be).unwrap())
            .collect()
    };
    let start = host(&r);
    // The reference: the same controller, its gradients averaged by hand, one Adam step.
    let reference = ReinforceLstm::new(&space, c.clone(), Cpu::new(), &mut Rng::new(3)).unwrap();
    let mut store = reference.controller().store().deep_copy(&be).unwrap();
    let mut baseline = MovingAverage::new(c.reinforce.baseline_decay);
    let mut sum: Option<Vec<Vec<f32>>> = None;
    for (i, (d, reward)) in draws().into_iter().enumerate() {
        r.observe(&space, &space.decode(&d).unwrap(), reward)
            .unwrap();
        if i < 2 {
            assert_eq!(host(&r), start, "moved before the batch was full");
        }
        baseline.update(reward);
        let advantage = reward - baseline.value().unwrap();
        let (_, g) = reference
            .controller()
            .loss_and_gradient(&d, advantage, c.reinforce.entropy)
            .unwrap();
        let g: Vec<Vec<f32>> = g.iter().map(|t| t.to_host(&be).unwrap()).collect();
        sum = Some(match sum {
            None => g
                .iter()
                .map(|t| t.iter().map(|x| x / 3.0).collect())
                .collect(),
            Some(s) => s
                .iter()
                .zip(&g)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y / 3.0).collect())
                .collect(),
        });
    }
    let mean: Vec<Tensor<Cpu>> = sum
        .unwrap()
        .iter()
        .zip(store.tensors())
        .map(|(v, t)| Tensor::from_host(&be, v, t.shape.clone()).unwrap())
        .collect();
    let mut adam = optim::Adam::new(&be, &store, (0.9, 0.999), 1e-8, 0.0).unwrap();
    adam.step(&be, &mut store, &mean, c.reinforce.lr).unwrap();
    let got = host(&r);
    for (id, g) in store.ids().zip(&got) {
        let want = store.get(id).to_host(&be).unwrap();
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    assert_ne!(got, start);
}

#[test]
fn a_batch_of_four_still_concentrates_on_the_optimum() {
    let dir = std::env::temp_dir().join(format!("nasrs-reinforce-batch-{}", std::process::id()));
    let (eval, optimum) = synthetic_evaluator(&dir);
    let config = ReinforceConfig {
        lr: 0.1,
        batch: 4,
        ..ReinforceConfig::default()
    };
    let mut r = Reinforce::new(&Nb201Space, config).expect("config");
    let mut score = |a: &_| eval.metric(a);
    search(
        &Nb201Space,
        &mut r,
        2000,
        &mut Rng::new(0),
        &|_| true,
        &mut score,
    )
    .expect("search");
    assert_eq!(r.policy().mode(), optimum);
    let _ = std::fs::remove_dir_all(&dir);
}
