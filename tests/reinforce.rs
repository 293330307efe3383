//! REINFORCE's pieces against their definitions: the categorical policy's log-probability
//! and entropy gradients against finite differences; the per-sample update direction, averaged
//! exactly over a small policy, against finite differences of the expected objective
//! `E[reward] + beta * H` (any baseline); the moving-average baseline; the host Adam; and
//! REINFORCE concentrating its policy on the optimum of a known synthetic NB201 table.

#[path = "common/synthetic_table.rs"]
mod synthetic_table;
#[path = "common/toy_space.rs"]
mod toy_space;

use nasrs::nas::multi_trial::adam::Adam;
use nasrs::nas::multi_trial::policy::CategoricalPolicy;
use nasrs::nas::multi_trial::reinforce::{sample_gradient, MovingAverage};
use nasrs::nas::multi_trial::{search, Reinforce, ReinforceConfig};
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::rng::Rng;
use synthetic_table::synthetic_evaluator;
use toy_space::ToySpace;

const CHOICES: [usize; 3] = [2, 3, 4];

fn random_policy(seed: u64) -> CategoricalPolicy {
    let mut rng = Rng::new(seed);
    let mut p = CategoricalPolicy::uniform(&CHOICES);
    for z in &mut p.logits {
        z.iter_mut().for_each(|x| *x = rng.normal());
    }
    p
}

/// Central differences of `f` in every logit.
fn numeric_grad(p: &CategoricalPolicy, f: &dyn Fn(&CategoricalPolicy) -> f64) -> Vec<f64> {
    let h = 1e-5;
    let flat = p.flat();
    (0..flat.len())
        .map(|i| {
            let mut q = p.clone();
            let mut up = flat.clone();
            up[i] += h;
            q.set_flat(&up);
            let fp = f(&q);
            let mut down = flat.clone();
            down[i] -= h;
            q.set_flat(&down);
            (fp - f(&q)) / (2.0 * h)
        })
        .collect()
}

fn assert_close(analytic: &[f64], numeric: &[f64], what: &str) {
    assert_eq!(analytic.len(), numeric.len());
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-7 + 1e-6 * n.abs(),
            "{what}: logit {i}: analytic {a} numeric {n}"
        );
    }
}

/// Every decision vector of `CHOICES`.
fn all_decisions() -> Vec<Vec<usize>> {
    ToySpace::new(&CHOICES).enumerate(100).expect("small space")
}

/// A reward per architecture with no structure the policy could exploit by accident.
fn reward(d: &[usize]) -> f64 {
    10.0 + 3.0 * d[0] as f64 - 2.0 * (d[1] as f64 - 1.0).powi(2) + (d[2] * d[0]) as f64
}

#[test]
fn log_prob_and_entropy_gradients_match_finite_differences() {
    for seed in 0..5 {
        let p = random_policy(seed);
        for d in all_decisions() {
            let analytic: Vec<f64> = p.log_prob_grad(&d).into_iter().flatten().collect();
            assert_close(&analytic, &numeric_grad(&p, &|q| q.log_prob(&d)), "log p");
        }
        let analytic: Vec<f64> = p.entropy_grad().into_iter().flatten().collect();
        assert_close(&analytic, &numeric_grad(&p, &|q| q.entropy()), "entropy");
        // The probabilities of all architectures sum to one.
        let total: f64 = all_decisions().iter().map(|d| p.log_prob(d).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}

#[test]
fn the_policy_gradient_matches_finite_differences_of_the_expected_objective() {
    for (seed, beta, baseline) in [(0, 0.0, 0.0), (1, 0.0, 7.3), (2, 0.5, 12.0), (3, 2.0, -4.0)] {
        let p = random_policy(seed);
        let objective = |q: &CategoricalPolicy| -> f64 {
            let expected: f64 = all_decisions()
                .iter()
                .map(|d| q.log_prob(d).exp() * reward(d))
                .sum();
            expected + beta * q.entropy()
        };
        // The exact expectation of the per-sample direction REINFORCE ascends.
        let mut exact = vec![0.0; p.flat().len()];
        for d in all_decisions() {
            let prob = p.log_prob(&d).exp();
            let g = sample_gradient(&p, &d, reward(&d) - baseline, beta);
            for (e, gi) in exact.iter_mut().zip(g) {
                *e += prob * gi;
            }
        }
        assert_close(&exact, &numeric_grad(&p, &objective), "E[direction]");
    }
}

#[test]
fn sampling_follows_the_policy() {
    let p = random_policy(9);
    let probs = p.probs();
    let mut rng = Rng::new(4);
    let n = 200_000;
    let mut counts: Vec<Vec<usize>> = CHOICES.iter().map(|&c| vec![0; c]).collect();
    for _ in 0..n {
        for (i, v) in p.sample(&mut rng).into_iter().enumerate() {
            counts[i][v] += 1;
        }
    }
    for (i, c) in counts.iter().enumerate() {
        for (v, &k) in c.iter().enumerate() {
            let f = k as f64 / n as f64;
            assert!(
                (f - probs[i][v]).abs() < 0.005,
                "decision {i} value {v}: {f} vs {}",
                probs[i][v]
            );
        }
    }
}

#[test]
fn the_moving_average_is_bias_corrected() {
    let mut m = MovingAverage::new(0.9);
    assert_eq!(m.value(), None);
    m.update(10.0);
    assert!((m.value().unwrap() - 10.0).abs() < 1e-12);
    m.update(20.0);
    // (0.9 * 0.1 * 10 + 0.1 * 20) / (0.9 * 0.1 + 0.1)
    let expected = (0.09 * 10.0 + 0.1 * 20.0) / 0.19;
    assert!((m.value().unwrap() - expected).abs() < 1e-12);
}

#[test]
fn adam_steps_by_lr_first_and_converges_on_a_quadratic() {
    let mut adam = Adam::new(3, 0.1);
    let mut x = vec![1.0, -2.0, 0.5];
    adam.step(&mut x, &[4.0, -0.001, 0.0]);
    // Bias correction makes the first step lr * sign(g) (zero gradient: no step).
    assert!(
        (x[0] - 0.9).abs() < 1e-9 && (x[1] + 1.9).abs() < 1e-6 && x[2] == 0.5,
        "{x:?}"
    );
    let mut adam = Adam::new(2, 0.05);
    let mut x = vec![0.0, 10.0];
    for _ in 0..2000 {
        let g = [2.0 * (x[0] - 3.0), 2.0 * (x[1] + 1.0)];
        adam.step(&mut x, &g);
    }
    assert!(
        (x[0] - 3.0).abs() < 1e-3 && (x[1] + 1.0).abs() < 1e-3,
        "{x:?}"
    );
    assert_eq!(adam.steps(), 2000);
}

#[test]
fn reinforce_concentrates_on_the_optimum_of_a_synthetic_table() {
    let dir = std::env::temp_dir().join(format!("nasrs-reinforce-{}", std::process::id()));
    let (eval, optimum) = synthetic_evaluator(&dir);
    for seed in 0..3 {
        let config = ReinforceConfig {
            lr: 0.1,
            ..ReinforceConfig::default()
        };
        let mut r = Reinforce::new(&Nb201Space, config).expect("config");
        let mut rng = Rng::new(seed);
        let mut score = |a: &_| eval.metric(a);
        search(&Nb201Space, &mut r, 500, &mut rng, &|_| true, &mut score).expect("search");
        let p = r.policy();
        assert_eq!(p.mode(), optimum, "seed {seed}: the policy's mode");
        let p_opt = p.log_prob(&optimum).exp();
        // Uniform would give 5^-6 = 6.4e-5.
        assert!(p_opt > 0.5, "seed {seed}: p(optimum) = {p_opt}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
