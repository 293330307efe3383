//! The multi-trial strategies' semantics on a small space: aging evolution's population is
//! always the last P queries (the oldest dies, not the worst), its tournament takes the best
//! of S uniform draws from the population and the child differs from it in exactly one
//! decision; every strategy is deterministic per seed, spends exactly its budget (random
//! search: never a repeat, stopping when the space is exhausted) and never proposes an
//! architecture outside the constraint; a NaN score stops the search naming the architecture.

#[path = "common/toy_space.rs"]
mod toy_space;

use nasrs::nas::history::Scored;
use nasrs::nas::multi_trial::evolution::{AgingConfig, AgingEvolution};
use nasrs::nas::multi_trial::{
    incumbents, search, RandomSearch, ReinforceConfig, Strategy, StrategyConfig,
};
use nasrs::rng::Rng;
use nasrs::Error;
use std::collections::HashSet;
use toy_space::ToySpace;

/// A fixed pseudo-random score per architecture (so repeats score the same).
fn toy_score(a: &[usize]) -> f64 {
    let mut h: u64 = 1469598103934665603;
    for &d in a {
        h = (h ^ d as u64).wrapping_mul(1099511628211);
    }
    (h % 10_000) as f64 / 100.0
}

fn all_strategies() -> Vec<StrategyConfig> {
    vec![
        StrategyConfig::Random,
        StrategyConfig::Evolution(AgingConfig::NB201),
        StrategyConfig::Evolution(AgingConfig::PAPER),
        StrategyConfig::Reinforce(ReinforceConfig::default()),
        StrategyConfig::Reinforce(ReinforceConfig {
            lr: 0.1,
            baseline_decay: 0.5,
            entropy: 0.01,
            batch: 1,
        }),
        StrategyConfig::Reinforce(ReinforceConfig {
            batch: 5,
            ..ReinforceConfig::default()
        }),
    ]
}

fn run(
    strategy: &StrategyConfig,
    space: &ToySpace,
    budget: usize,
    seed: u64,
    accept: &dyn Fn(&Vec<usize>) -> bool,
) -> nasrs::Result<Vec<Scored<Vec<usize>>>> {
    let mut rng = Rng::new(seed);
    let mut score = |a: &Vec<usize>| Ok(toy_score(a));
    strategy.search(space, budget, &mut rng, accept, &mut score)
}

/// Drives aging evolution by hand with `score` (by query number), checking after every
/// query that the population is exactly the last P queries.
fn drive_aging(config: AgingConfig, queries: usize, score: impl Fn(usize) -> f64) {
    let space = ToySpace::new(&[4, 4, 4, 4]);
    let mut evo: AgingEvolution<Vec<usize>> = AgingEvolution::new(config.clone()).expect("config");
    let mut rng = Rng::new(3);
    for q in 1..=queries {
        let arch = evo
            .propose(&space, &mut rng, &|_| true)
            .expect("propose")
            .expect("an architecture");
        evo.observe(&space, &arch, score(q)).expect("observe");
        let borns: Vec<usize> = evo.population().map(|m| m.born).collect();
        let first = q.saturating_sub(config.population) + 1;
        assert_eq!(borns, (first..=q).collect::<Vec<_>>(), "after query {q}");
    }
}

#[test]
fn aging_the_oldest_dies_not_the_worst() {
    // The first queries are the best ever: they die of age all the same.
    drive_aging(AgingConfig::NB201, 60, |q| 1000.0 - q as f64);
    // The first queries are the worst: their age, not their score, removes them.
    drive_aging(AgingConfig::NB201, 60, |q| q as f64);
    drive_aging(
        AgingConfig {
            population: 1,
            sample_size: 1,
        },
        10,
        |q| (q % 3) as f64,
    );
}

#[test]
fn the_tournament_mutates_the_best_of_its_sample_in_one_decision() {
    let space = ToySpace::new(&[3, 4, 5, 2, 3]);
    let config = AgingConfig {
        population: 8,
        sample_size: 3,
    };
    let mut evo: AgingEvolution<Vec<usize>> = AgingEvolution::new(config.clone()).expect("config");
    let mut rng = Rng::new(11);
    // How often each population slot (0 = oldest) is drawn: uniform.
    let mut slot_draws = vec![0usize; config.population];
    let cycles = 6000;
    for q in 1..=config.population + cycles {
        let population: Vec<(usize, Vec<usize>, f64)> = evo
            .population()
            .map(|m| (m.born, m.arch.clone(), m.score))
            .collect();
        let child = evo
            .propose(&space, &mut rng, &|_| true)
            .expect("propose")
            .expect("an architecture");
        if q <= config.population {
            assert!(evo.last_tournament().is_none(), "query {q} is a random one");
        } else {
            let t = evo.last_tournament().expect("a tournament");
            assert_eq!(t.sampled.len(), config.sample_size);
            let member = |born: usize| {
                population
                    .iter()
                    .position(|m| m.0 == born)
                    .unwrap_or_else(|| panic!("sampled {born}, not in the population"))
            };
            for &b in &t.sampled {
                slot_draws[member(b)] += 1;
            }
            // The winner: the highest score of the sample, the first drawn on a tie.
            let best = t
                .sampled
                .iter()
                .map(|&b| population[member(b)].2)
                .fold(f64::NEG_INFINITY, f64::max);
            let first_best = t
                .sampled
                .iter()
                .copied()
                .find(|&b| population[member(b)].2 == best)
                .expect("a best");
            assert_eq!(t.parent, first_best);
            let parent = &population[member(t.parent)].1;
            let changed = parent.iter().zip(&child).filter(|(a, b)| a != b).count();
            assert_eq!(changed, 1, "child {child:?} of {parent:?}");
        }
        // Few score levels, so ties happen and the tie rule is exercised.
        evo.observe(&space, &child, (toy_score(&child) / 25.0).floor())
            .expect("observe");
    }
    let expected = (cycles * config.sample_size) as f64 / config.population as f64;
    for (slot, &n) in slot_draws.iter().enumerate() {
        assert!(
            (n as f64 - expected).abs() < 0.1 * expected,
            "slot {slot} drawn {n} times, expected about {expected}"
        );
    }
}

#[test]
fn presets_and_bad_settings() {
    assert_eq!(
        AgingConfig::preset("nb201").expect("nb201"),
        AgingConfig {
            population: 10,
            sample_size: 3
        }
    );
    assert_eq!(
        AgingConfig::preset("paper").expect("paper"),
        AgingConfig {
            population: 100,
            sample_size: 25
        }
    );
    let e = AgingConfig::preset("nasnet")
        .expect_err("unknown preset")
        .to_string();
    assert!(e.contains("--preset") && e.contains("nasnet"), "{e}");
    let bad = AgingConfig {
        population: 3,
        sample_size: 4,
    };
    assert!(bad
        .validate()
        .expect_err("S > P")
        .to_string()
        .contains("--sample-size"));
    for (c, flag) in [
        (
            ReinforceConfig {
                lr: 0.0,
                ..Default::default()
            },
            "--lr",
        ),
        (
            ReinforceConfig {
                baseline_decay: 1.0,
                ..Default::default()
            },
            "--baseline-decay",
        ),
        (
            ReinforceConfig {
                entropy: f64::NAN,
                ..Default::default()
            },
            "--entropy",
        ),
    ] {
        assert!(c.validate().expect_err(flag).to_string().contains(flag));
    }
}

#[test]
fn every_strategy_is_deterministic_per_seed() {
    let space = ToySpace::new(&[5, 5, 5, 5, 5, 5]);
    for s in all_strategies() {
        let key = |h: &[Scored<Vec<usize>>]| -> Vec<(Vec<usize>, f64, usize)> {
            h.iter()
                .map(|x| (x.arch.clone(), x.score, x.query))
                .collect()
        };
        let a = run(&s, &space, 120, 5, &|_| true).expect("run");
        let b = run(&s, &space, 120, 5, &|_| true).expect("run");
        let c = run(&s, &space, 120, 6, &|_| true).expect("run");
        assert_eq!(key(&a), key(&b), "{}", s.name());
        assert_ne!(key(&a), key(&c), "{}: seeds 5 and 6 agree", s.name());
        // A longer budget starts with the shorter run's queries (what --resume relies on).
        let longer = run(&s, &space, 150, 5, &|_| true).expect("run");
        assert_eq!(key(&longer[..120]), key(&a), "{}", s.name());
    }
}

#[test]
fn every_strategy_spends_exactly_its_budget() {
    let space = ToySpace::new(&[5, 5, 5, 5]);
    for s in all_strategies() {
        for budget in [1, 7, 50, 300] {
            let h = run(&s, &space, budget, 1, &|_| true).expect("run");
            assert_eq!(h.len(), budget, "{} budget {budget}", s.name());
            let queries: Vec<usize> = h.iter().map(|x| x.query).collect();
            assert_eq!(queries, (1..=budget).collect::<Vec<_>>());
        }
        let e = run(&s, &space, 0, 1, &|_| true)
            .expect_err("budget 0")
            .to_string();
        assert!(e.contains("--budget"), "{e}");
    }
}

#[test]
fn random_search_never_repeats_and_stops_when_the_space_is_exhausted() {
    let space = ToySpace::new(&[2, 3]);
    let h = run(&StrategyConfig::Random, &space, 10, 0, &|_| true).expect("run");
    assert_eq!(h.len(), 6);
    let distinct: HashSet<_> = h.iter().map(|x| x.arch.clone()).collect();
    assert_eq!(distinct.len(), 6);
    // The whole of a larger space, in as many queries as it has architectures.
    let space = ToySpace::new(&[4, 4, 4, 4]);
    let h = run(&StrategyConfig::Random, &space, 256, 0, &|_| true).expect("run");
    assert_eq!(
        h.iter()
            .map(|x| x.arch.clone())
            .collect::<HashSet<_>>()
            .len(),
        256
    );
    // A constraint met by 3 of a million: rejection gives up, enumeration finds them.
    let space = ToySpace::new(&[10; 6]);
    let ok: Vec<Vec<usize>> = vec![vec![1; 6], vec![2; 6], vec![9, 8, 7, 6, 5, 4]];
    let accept = |a: &Vec<usize>| ok.contains(a);
    let mut rs = RandomSearch::new();
    let mut rng = Rng::new(0);
    let mut score = |a: &Vec<usize>| Ok(toy_score(a));
    let h = search(&space, &mut rs, 5, &mut rng, &accept, &mut score).expect("run");
    assert_eq!(
        h.iter().map(|x| x.arch.clone()).collect::<HashSet<_>>(),
        ok.iter().cloned().collect::<HashSet<_>>()
    );
}

#[test]
fn every_strategy_honours_the_constraint() {
    let space = ToySpace::new(&[4, 4, 4, 4, 4]);
    // About a quarter of the space: the decisions sum to a multiple of 4.
    let accept = |a: &Vec<usize>| a.iter().sum::<usize>() % 4 == 0;
    for s in all_strategies() {
        let h = run(&s, &space, 200, 2, &accept).expect("run");
        assert_eq!(h.len(), 200);
        assert!(h.iter().all(|x| accept(&x.arch)), "{}", s.name());
    }
    // Nothing satisfies it: an error, not a hang or a panic.
    for s in all_strategies() {
        let e = run(&s, &space, 5, 2, &|_| false).expect_err("impossible constraint");
        assert!(e.to_string().contains("constraint"), "{}: {e}", s.name());
    }
}

#[test]
fn a_nan_score_stops_the_search_naming_the_architecture() {
    let space = ToySpace::new(&[3, 3]);
    let mut rng = Rng::new(0);
    let mut calls = 0;
    let mut score = |_: &Vec<usize>| {
        calls += 1;
        Ok(if calls == 4 { f64::NAN } else { 1.0 })
    };
    let e = StrategyConfig::Evolution(AgingConfig::NB201)
        .search(&space, 20, &mut rng, &|_| true, &mut score)
        .expect_err("NaN accepted");
    match e {
        Error::NonFinite(what) => assert!(what.contains("query 4") && what.contains('-'), "{what}"),
        other => panic!("{other}"),
    }
}

#[test]
fn incumbents_follow_the_best_score_so_far_earliest_on_ties() {
    let h: Vec<Scored<u8>> = [3.0, 1.0, 5.0, 5.0, 4.0, 6.0]
        .iter()
        .enumerate()
        .map(|(i, &s)| Scored {
            arch: i as u8,
            score: s,
            generation: 0,
            query: i + 1,
        })
        .collect();
    assert_eq!(incumbents(&h), [0, 0, 2, 2, 2, 5]);
}
