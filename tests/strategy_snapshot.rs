//! A strategy's snapshot is its whole state: every strategy (random, aging evolution,
//! REINFORCE on both controllers), on the NB201 and DARTS spaces, snapshotted in the middle
//! of a search, written to JSON text and restored into a strategy built anew (an LSTM with
//! other weights), continues with exactly the proposals and final state of the strategy that
//! was never stopped, REINFORCE with scores of a batch pending included. A snapshot of another strategy or space is refused.

use nasrs::nas::multi_trial::evolution::AgingConfig;
use nasrs::nas::multi_trial::{LstmReinforceConfig, ReinforceConfig, Strategy, StrategyConfig};
use nasrs::nas::space::darts::DartsSpace;
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use nasrs::rng::Rng;

/// A fixed pseudo-random score per architecture.
fn score<S: SearchSpace>(space: &S, a: &S::Arch) -> f64 {
    let mut h: u64 = 1469598103934665603;
    for b in space.to_string(a).bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    (h % 10_000) as f64 / 100.0
}

fn strategies() -> Vec<StrategyConfig> {
    vec![
        StrategyConfig::Random,
        StrategyConfig::Evolution(AgingConfig {
            population: 4,
            sample_size: 2,
        }),
        StrategyConfig::Reinforce(ReinforceConfig {
            lr: 0.1,
            baseline_decay: 0.5,
            entropy: 0.01,
            batch: 1,
        }),
        // Batches that the snapshot (after 9 scores) cuts in the middle: scores pending.
        StrategyConfig::Reinforce(ReinforceConfig {
            batch: 4,
            ..ReinforceConfig::default()
        }),
        StrategyConfig::ReinforceLstm(LstmReinforceConfig {
            reinforce: ReinforceConfig::default(),
            hidden: 8,
        }),
        StrategyConfig::ReinforceLstm(LstmReinforceConfig {
            reinforce: ReinforceConfig {
                batch: 2,
                ..ReinforceConfig::default()
            },
            hidden: 8,
        }),
    ]
}

/// `n` proposals, each told its score; the proposals' canonical forms.
fn steps<S: SearchSpace>(
    space: &S,
    strategy: &mut dyn Strategy<S>,
    rng: &mut Rng,
    n: usize,
) -> Vec<String> {
    (0..n)
        .map(|_| {
            let arch = strategy
                .propose(space, rng, &|_| true)
                .unwrap()
                .expect("a proposal");
            strategy.observe(space, &arch, score(space, &arch)).unwrap();
            space.to_string(&arch)
        })
        .collect()
}

fn continues_exactly<S: SearchSpace>(space: &S) {
    for config in strategies() {
        let mut rng = Rng::new(7);
        let mut whole = config.build(space, &mut rng).unwrap();
        steps(space, whole.as_mut(), &mut rng, 9);
        let text = serde_json::to_string(&whole.snapshot(space).unwrap()).unwrap();
        let mut rng_at = rng.clone();
        let after = steps(space, whole.as_mut(), &mut rng, 12);

        // Built from another seed: whatever it drew at construction must be overwritten.
        let mut resumed = config.build(space, &mut Rng::new(99)).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        resumed.restore(space, &state).unwrap();
        assert_eq!(
            serde_json::to_string(&resumed.snapshot(space).unwrap()).unwrap(),
            text,
            "{} on {}: the restored state differs",
            config.name(),
            space.name()
        );
        let again = steps(space, resumed.as_mut(), &mut rng_at, 12);
        assert_eq!(
            again,
            after,
            "{} on {}: other proposals after the restore",
            config.name(),
            space.name()
        );
        assert_eq!(
            resumed.snapshot(space).unwrap(),
            whole.snapshot(space).unwrap(),
            "{} on {}: other final state",
            config.name(),
            space.name()
        );
    }
}

#[test]
fn every_strategy_continues_exactly_from_its_snapshot_on_nb201() {
    continues_exactly(&Nb201Space);
}

#[test]
fn every_strategy_continues_exactly_from_its_snapshot_on_darts() {
    continues_exactly(&DartsSpace::default());
}

#[test]
fn a_snapshot_of_another_strategy_or_space_is_refused() {
    let nb201 = Nb201Space;
    let darts = DartsSpace::default();
    let configs = strategies();
    for (i, a) in configs.iter().enumerate() {
        let mut rng = Rng::new(1);
        let mut from = a.build(&nb201, &mut rng).unwrap();
        steps(&nb201, from.as_mut(), &mut rng, 5);
        let state = from.snapshot(&nb201).unwrap();
        for (j, b) in configs.iter().enumerate() {
            // Another batch size of the same strategy takes its state (pending scores
            // permitting): only other strategies are refused.
            if i == j || a.name() == b.name() {
                continue;
            }
            let mut to = b.build(&nb201, &mut Rng::new(1)).unwrap();
            // Random search's state (a list of architectures) is a subset of no other's.
            let err = to.restore(&nb201, &state).err();
            let err = err.unwrap_or_else(|| {
                panic!("{} took a {} state", b.name(), a.name());
            });
            assert!(err.to_string().contains("strategy state"), "{err}");
        }
        // The same strategy on another space: its architectures or shapes do not fit.
        let mut other = a.build(&darts, &mut Rng::new(1)).unwrap();
        let err = other.restore(&darts, &state).err();
        assert!(err.is_some(), "{} on darts took an nb201 state", a.name());
    }
}
