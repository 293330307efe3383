//! The search-space abstraction on both spaces: canonical forms round-trip, sampling is
//! uniform (chi-square), mutation changes exactly one decision, crossover keeps each decision
//! from a parent, and every architecture of the NAS-Bench-201 table parses.

use nasrs::nas::space::darts::{DartsArch, DartsSpace};
use nasrs::nas::space::nb201::{Nb201Arch, Nb201Space};
use nasrs::nas::space::SearchSpace;
use nasrs::nas::Genotype;
use nasrs::rng::Rng;
use std::collections::HashMap;

const NB201_TABLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/nb201-12ep/nb201_12ep.csv"
);

fn nb201_table_archs() -> Vec<String> {
    let text = std::fs::read_to_string(NB201_TABLE).expect("the bundled NB201 table");
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().expect("an arch column").to_string())
        .collect()
}

/// The chi-square statistic's upper 0.1% point for `df` degrees of freedom (Wilson-Hilferty).
fn chi2_critical(df: f64) -> f64 {
    let z = 3.09;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

fn chi2<K: std::hash::Hash + Eq>(counts: &HashMap<K, usize>, cells: usize, n: usize) -> f64 {
    let expected = n as f64 / cells as f64;
    let seen: f64 = counts
        .values()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // Cells never drawn contribute `expected` each.
    seen + (cells - counts.len()) as f64 * expected
}

#[test]
fn nb201_table_strings_round_trip_and_cover_the_space() {
    let space = Nb201Space;
    let archs = nb201_table_archs();
    assert_eq!(archs.len(), 15_625);
    let mut seen = std::collections::HashSet::new();
    for s in &archs {
        let a = space.parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(&space.to_string(&a), s);
        assert_eq!(space.decode(&space.encode(&a)).expect("decode"), a);
        assert_eq!(space.from_json(&space.to_json(&a)).expect("json"), a);
        seen.insert(a);
    }
    assert_eq!(seen.len() as u128, space.size());
    let all = space.enumerate(20_000).expect("enumerate");
    assert_eq!(all.len(), 15_625);
    assert!(all.iter().all(|a| seen.contains(a)));
    assert!(space.enumerate(1000).is_err());
}

#[test]
fn nb201_bad_strings_are_refused_with_the_reason() {
    let space = Nb201Space;
    for (bad, why) in [
        ("|none~0|+|none~0|none~1|", "2 nodes"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|conv~2|", "conv"),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "twice"),
        (
            "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
            "cannot take input 1",
        ),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "enclosed"),
    ] {
        let err = space.parse(bad).expect_err(bad).to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    assert!(space.decode(&[0, 0, 0, 0, 0, 5]).is_err());
    assert!(space.decode(&[0, 0, 0]).is_err());
}

#[test]
fn nb201_sampling_is_uniform_over_all_architectures() {
    let space = Nb201Space;
    let mut rng = Rng::new(7);
    let n = 15_625 * 20;
    let mut counts: HashMap<Nb201Arch, usize> = HashMap::new();
    for _ in 0..n {
        *counts.entry(space.sample(&mut rng)).or_default() += 1;
    }
    let stat = chi2(&counts, 15_625, n);
    let crit = chi2_critical(15_624.0);
    assert!(stat < crit, "chi-square {stat:.1} >= {crit:.1}");
}

#[test]
fn darts_sampling_is_uniform_in_every_decision_and_pair_of_decisions() {
    let space = DartsSpace::default();
    let mut rng = Rng::new(11);
    let n = 60_000;
    let samples: Vec<Vec<usize>> = (0..n)
        .map(|_| space.encode(&space.sample(&mut rng)))
        .collect();
    let choices = space.choices().to_vec();
    for i in 0..choices.len() {
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for s in &samples {
            *counts.entry(s[i]).or_default() += 1;
        }
        let stat = chi2(&counts, choices[i], n);
        assert!(
            stat < chi2_critical((choices[i].max(2) - 1) as f64),
            "decision {i}: {stat}"
        );
    }
    // Joint uniformity of neighbouring decisions (independence, not just marginals).
    for i in 0..choices.len() - 1 {
        let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
        for s in &samples {
            *counts.entry((s[i], s[i + 1])).or_default() += 1;
        }
        let cells = choices[i] * choices[i + 1];
        let stat = chi2(&counts, cells, n);
        assert!(
            stat < chi2_critical((cells - 1) as f64),
            "decisions {i},{}: {stat}",
            i + 1
        );
    }
}

fn differing(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

fn check_operators<S: SearchSpace>(space: &S, seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..2000 {
        let a = space.sample(&mut rng);
        let b = space.sample(&mut rng);
        let m = space.mutate(&a, &mut rng);
        assert_eq!(
            differing(&space.encode(&a), &space.encode(&m)),
            1,
            "{a:?} -> {m:?}"
        );
        let c = space.crossover(&a, &b, &mut rng);
        let (da, db, dc) = (space.encode(&a), space.encode(&b), space.encode(&c));
        for i in 0..dc.len() {
            assert!(dc[i] == da[i] || dc[i] == db[i], "decision {i}");
        }
        let e = space.mutate_each(&a, 0.1, &mut rng);
        assert_eq!(space.encode(&e).len(), da.len());
        // Canonical forms round-trip.
        assert_eq!(space.parse(&space.to_string(&a)).expect("parse"), a);
        assert_eq!(space.from_json(&space.to_json(&a)).expect("json"), a);
        assert_eq!(space.decode(&da).expect("decode"), a);
    }
    // Mutation reaches every value of a decision, crossover mixes both parents.
    let a = space.sample(&mut rng);
    let mut values = std::collections::HashSet::new();
    for _ in 0..20_000 {
        let m = space.encode(&space.mutate(&a, &mut rng));
        values.insert(m);
    }
    let reachable: usize = space.choices().iter().map(|c| c - 1).sum();
    assert_eq!(values.len(), reachable);
}

#[test]
fn nb201_mutation_and_crossover() {
    check_operators(&Nb201Space, 3);
}

#[test]
fn darts_mutation_and_crossover() {
    check_operators(&DartsSpace::default(), 5);
}

#[test]
fn darts_space_holds_the_published_cells() {
    let space = DartsSpace::default();
    assert_eq!(space.choices().len(), 24);
    // (1 * 3 * 6 * 10 * 7^8)^2
    assert_eq!(space.size(), (180u128 * 7u128.pow(8)).pow(2));
    for name in ["DARTS_V1", "DARTS_V2", "PC_DARTS", "PDARTS"] {
        let g = Genotype::builtin(name).expect(name);
        let a = DartsArch::from_genotype(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = a.to_genotype();
        // The same cell up to the order of each node's two pairs.
        for (x, y) in [(&g.normal, &back.normal), (&g.reduce, &back.reduce)] {
            for node in 0..4 {
                let mut p: Vec<_> = x[2 * node..2 * node + 2].to_vec();
                let mut q: Vec<_> = y[2 * node..2 * node + 2].to_vec();
                p.sort_by_key(|e| e.1);
                q.sort_by_key(|e| e.1);
                assert_eq!(p, q, "{name} node {node}");
            }
        }
        assert_eq!(space.parse(&g.to_python()).expect("python form"), a);
    }
    let mut g = Genotype::builtin("DARTS_V2").expect("v2");
    g.normal[0].1 = 5;
    let err = DartsArch::from_genotype(&g).expect_err("reads a later state");
    assert!(err.to_string().contains("node 2 reads state 5"), "{err}");
}
