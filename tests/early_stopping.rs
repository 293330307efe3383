//! Early stopping with epochs as the budget (`--early-stop`): the rung and bracket arithmetic
//! against Hyperband's published schedule (R=81, eta=3); successive halving keeps the top
//! 1/eta of each rung and ASHA promotes by its rule (synthetic scores, no training); the pow3
//! fit recovers a synthetic curve's parameters; and one tiny end-to-end search per mode
//! through the binary, with a resumed run answered from its journal, and a run whose journal
//! was cut mid-schedule (a torn last line) resumed to the uninterrupted run's trials and best.

#[path = "common/trials.rs"]
mod trials;

use nasrs::nas::multi_trial::asha::Asha;
use nasrs::nas::multi_trial::curve_fit::{fit_pow3, predict};
use nasrs::nas::multi_trial::curve_stop::CurveStop;
use nasrs::nas::multi_trial::fidelity::{
    hyperband_brackets, rungs, EarlyStop, Job, Next, Scheduler,
};
use std::path::Path;
use trials::{finished, json, nasrs, read, tmp, TINY};

#[test]
fn rungs_and_brackets_match_hyperbands_published_schedule() {
    assert_eq!(rungs(1, 81, 3), vec![1, 3, 9, 27, 81]);
    assert_eq!(rungs(3, 10, 3), vec![3, 10]);
    assert_eq!(rungs(2, 4, 2), vec![2, 4]);
    // Li et al. 2017, Table 1: (n_i, r_i) per bracket s = 4..0.
    let published: Vec<Vec<(usize, usize)>> = vec![
        vec![(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        vec![(34, 3), (11, 9), (3, 27), (1, 81)],
        vec![(15, 9), (5, 27), (1, 81)],
        vec![(8, 27), (2, 81)],
        vec![(5, 81)],
    ];
    let got: Vec<Vec<(usize, usize)>> = hyperband_brackets(1, 81, 3)
        .iter()
        .map(|b| b.schedule(3))
        .collect();
    assert_eq!(got, published);
}

/// Runs `s` to the end, answering every trial with `score(job)` once it has to wait: a
/// synchronous fake evaluator. Returns the jobs in order.
fn drive(s: &mut dyn Scheduler, score: impl Fn(Job) -> f64) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut pending = Vec::new();
    loop {
        match s.next() {
            Next::Run(j) => {
                jobs.push(j);
                pending.push(j);
            }
            Next::Wait | Next::Done if !pending.is_empty() => {
                for j in pending.drain(..) {
                    s.report(j, score(j), &[]);
                }
            }
            Next::Wait => panic!("waits with nothing running"),
            Next::Done => return jobs,
        }
        assert!(jobs.len() < 10_000);
    }
}

/// A configuration's quality: a fixed permutation, so that the best are not the first.
fn quality(config: usize) -> f64 {
    ((config * 7 + 3) % 11) as f64 / 11.0
}

#[test]
fn successive_halving_keeps_the_top_third() {
    let mut s = EarlyStop::Sh {
        min_epochs: 1,
        eta: 3,
    }
    .scheduler(9, 9)
    .unwrap();
    let jobs = drive(s.as_mut(), |j| quality(j.config) * j.epochs as f64 / 10.0);
    let at = |e: usize| -> Vec<usize> {
        jobs.iter()
            .filter(|j| j.epochs == e)
            .map(|j| j.config)
            .collect()
    };
    assert_eq!(at(1), (0..9).collect::<Vec<_>>());
    let mut by_quality: Vec<usize> = (0..9).collect();
    by_quality.sort_by(|a, b| quality(*b).total_cmp(&quality(*a)));
    let mut top3 = at(3);
    top3.sort_by(|a, b| quality(*b).total_cmp(&quality(*a)));
    assert_eq!(top3, by_quality[..3].to_vec());
    assert_eq!(at(9), vec![by_quality[0]]);
    assert_eq!(jobs.len(), 9 + 3 + 1);
    // The total epochs: 9 x 1 + 3 x 3 + 1 x 9 instead of 9 x 9.
    assert_eq!(jobs.iter().map(|j| j.epochs).sum::<usize>(), 27);
}

#[test]
fn hyperband_runs_every_bracket_then_cycles() {
    let mut s = EarlyStop::Hyperband {
        min_epochs: 1,
        eta: 3,
    }
    .scheduler(9, 9 + 5 + 3 + 2)
    .unwrap();
    let jobs = drive(s.as_mut(), |j| quality(j.config));
    // Brackets for R=9: (9@1, 3@3, 1@9), (5@3, 1@9), (3@9), then the cycle again with 2 left.
    let count = |e: usize| jobs.iter().filter(|j| j.epochs == e).count();
    assert_eq!(count(1), 9 + 2);
    assert_eq!(count(3), 3 + 5 + 1);
    assert_eq!(count(9), 1 + 1 + 3 + 1);
    let configs = jobs.iter().map(|j| j.config).max().unwrap() + 1;
    assert_eq!(configs, 19);
}

#[test]
fn asha_promotes_the_top_third_of_a_rung_as_soon_as_it_can() {
    let mut a = Asha::new(vec![1, 3, 9], 3, 100);
    let new = |c| {
        Next::Run(Job {
            config: c,
            epochs: 1,
        })
    };
    // Nothing finished: every free worker starts a new configuration.
    assert_eq!(a.next(), new(0));
    assert_eq!(a.next(), new(1));
    a.report(
        Job {
            config: 0,
            epochs: 1,
        },
        0.5,
        &[],
    );
    a.report(
        Job {
            config: 1,
            epochs: 1,
        },
        0.9,
        &[],
    );
    // Two results: floor(2/3) = 0 may be promoted.
    assert_eq!(a.next(), new(2));
    a.report(
        Job {
            config: 2,
            epochs: 1,
        },
        0.1,
        &[],
    );
    // Three: the best (config 1) goes to 3 epochs, once.
    let promote = Next::Run(Job {
        config: 1,
        epochs: 3,
    });
    assert_eq!(a.next(), promote);
    assert_eq!(a.next(), new(3));
    for c in 3..6 {
        a.report(
            Job {
                config: c,
                epochs: 1,
            },
            0.2,
            &[],
        );
        if c < 5 {
            assert_eq!(a.next(), new(c + 1));
        }
    }
    // Six results: the top two are 1 (promoted) and 0.
    assert_eq!(
        a.next(),
        Next::Run(Job {
            config: 0,
            epochs: 3
        })
    );
    // Two results at 3 epochs promote nothing to 9; the top two at 1 are promoted already.
    for (c, s) in [(1, 0.95), (0, 0.6)] {
        a.report(
            Job {
                config: c,
                epochs: 3,
            },
            s,
            &[],
        );
    }
    assert_eq!(a.next(), new(6));
    // With a budget of configurations spent, ASHA waits, then stops.
    let mut b = Asha::new(vec![1, 3], 3, 1);
    assert_eq!(b.next(), new(0));
    assert_eq!(b.next(), Next::Wait);
    b.report(
        Job {
            config: 0,
            epochs: 1,
        },
        0.3,
        &[],
    );
    assert_eq!(b.next(), Next::Done);
}

#[test]
fn pow3_fit_recovers_a_synthetic_curve() {
    let (a, b, c) = (0.92, 0.55, 0.8);
    let curve: Vec<f64> = (1..=20).map(|t| a - b * (t as f64).powf(-c)).collect();
    let fit = fit_pow3(&curve).unwrap();
    assert!((fit.a - a).abs() < 1e-4, "{fit:?}");
    assert!((fit.b - b).abs() < 1e-4, "{fit:?}");
    assert!((fit.c - c).abs() < 1e-3, "{fit:?}");
    // From the first third, the prediction at epoch 20 is close to the truth.
    let p = predict(&curve[..7], 20).unwrap();
    assert!((p - curve[19]).abs() < 1e-3, "{p} vs {}", curve[19]);
    assert!(fit_pow3(&curve[..2]).is_none());
    assert!(fit_pow3(&[0.1, f64::NAN, 0.3]).is_none());
}

#[test]
fn the_curve_rule_extends_only_a_promising_trial() {
    let rising: Vec<f64> = (1..=4).map(|t| 0.9 - 0.5 * (t as f64).powf(-1.0)).collect();
    assert!(CurveStop::promising(&rising, 12, 0.0, None));
    assert!(CurveStop::promising(&rising, 12, 0.0, Some(0.8)));
    assert!(!CurveStop::promising(&rising, 12, 0.0, Some(0.95)));
    assert!(CurveStop::promising(&rising, 12, 0.1, Some(0.95)));
    let mut s = CurveStop::new(4, 12, 0.0, 3);
    let job = |c, e| Job {
        config: c,
        epochs: e,
    };
    assert_eq!(s.next(), Next::Run(job(0, 4)));
    s.report(job(0, 4), rising[3], &rising);
    assert_eq!(s.next(), Next::Run(job(0, 12)));
    s.report(job(0, 12), 0.95, &[]);
    assert_eq!(s.next(), Next::Run(job(1, 4)));
    s.report(job(1, 4), rising[3], &rising);
    // Predicted below 0.95: config 1 stops at 4 epochs.
    assert_eq!(s.next(), Next::Run(job(2, 4)));
}

#[test]
fn settings_are_checked_naming_the_flag() {
    let sh = |min_epochs, eta| EarlyStop::Sh { min_epochs, eta };
    for (e, max, flag) in [
        (sh(0, 3), 9, "--min-epochs"),
        (sh(9, 3), 9, "--min-epochs"),
        (sh(1, 1), 9, "--eta"),
        (
            EarlyStop::Curve {
                min_epochs: 2,
                margin: 0.0,
            },
            9,
            "--min-epochs",
        ),
    ] {
        let err = e.validate(max).unwrap_err().to_string();
        assert!(err.contains(flag), "{err}");
    }
}

/// A tiny `nasrs search random --evaluator train --early-stop MODE` into `out`.
fn search(out: &Path, extra: &[&str]) -> (bool, String) {
    let mut a: Vec<String> = ["search", "random", "--evaluator", "train", "--workers", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--out".to_string(), out.display().to_string()]);
    // TINY but its --epochs 1: `extra` gives the budget.
    let at = TINY.iter().position(|f| *f == "--epochs").unwrap();
    a.extend(
        TINY.iter()
            .enumerate()
            .filter(|(i, _)| *i != at && *i != at + 1)
            .map(|(_, s)| s.to_string()),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = nasrs(&a);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// The (configuration, epochs) of each proposed trial in the journal of `run`.
fn budgets(run: &Path) -> Vec<(u64, u64)> {
    read(&run.join("journal.jsonl"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "proposed")
        .map(|e| (e["config"].as_u64().unwrap(), e["epochs"].as_u64().unwrap()))
        .collect()
}

#[test]
fn every_mode_runs_end_to_end_and_resumes() {
    for (mode, budget, epochs, min, expect) in [
        // 3 configurations at 1 epoch, the best at 3.
        ("sh", "3", "3", "1", vec![1, 1, 1, 3]),
        // Brackets (3@1, 1@3), (2@3): 5 configurations.
        ("hyperband", "5", "3", "1", vec![1, 1, 1, 3, 3, 3]),
        ("asha", "4", "3", "1", vec![]),
        ("curve", "2", "4", "3", vec![]),
    ] {
        let out = tmp(&format!("es-{mode}"));
        let flags = [
            "--early-stop",
            mode,
            "--budget",
            budget,
            "--epochs",
            epochs,
            "--min-epochs",
            min,
            "--seed",
            "1",
        ];
        let (ok, err) = search(&out, &flags);
        assert!(ok, "{mode}: {err}");
        assert!(err.contains("trained "), "{mode}: {err}");
        let b = budgets(&out);
        let e: Vec<u64> = b.iter().map(|x| x.1).collect();
        if !expect.is_empty() {
            assert_eq!(e, expect, "{mode}: {b:?}");
        }
        let max: u64 = epochs.parse().unwrap();
        assert!(e.iter().all(|&x| x <= max), "{mode}: {b:?}");
        // The first configuration of the curve rule always gets the full budget.
        if mode == "curve" {
            assert!(b.contains(&(0, 4)), "{b:?}");
        }
        let f = finished(&out);
        assert_eq!(f.len(), b.len(), "{mode}");
        for (v, (_, epochs)) in f.iter().zip(&b) {
            assert_eq!(v["epochs"].as_u64(), Some(*epochs), "{mode}: {v}");
        }
        if mode == "asha" {
            // Deterministic given the seed: a second run from scratch schedules the same.
            let twin = tmp("es-asha-twin");
            assert!(search(&twin, &flags).0);
            assert_eq!(budgets(&twin), b);
            assert_eq!(finished(&twin), f);
        }
        let best = json(&out.join("best.json"));
        assert_eq!(best["epochs"].as_u64(), Some(max), "{mode}: {best}");
        // Resumed: every trial answered from the journal, the same best.
        let journal = read(&out.join("journal.jsonl"));
        let mut again = flags.to_vec();
        again.push("--resume");
        let (ok, err) = search(&out, &again);
        assert!(ok, "{mode}: {err}");
        assert!(err.contains("resumed:"), "{mode}: {err}");
        assert_eq!(read(&out.join("journal.jsonl")), journal, "{mode}");
        assert_eq!(json(&out.join("best.json")), best, "{mode}");
    }
    // A bad mode names the flag.
    let (ok, err) = search(&tmp("es-bad"), &["--early-stop", "median"]);
    assert!(!ok);
    assert!(err.contains("--early-stop"), "{err}");
}

#[test]
fn a_search_cut_mid_schedule_resumes_to_the_uninterrupted_one() {
    for mode in ["hyperband", "asha"] {
        let flags = [
            "--early-stop",
            mode,
            "--budget",
            "5",
            "--epochs",
            "3",
            "--min-epochs",
            "1",
            "--seed",
            "2",
        ];
        let whole = tmp(&format!("cut-whole-{mode}"));
        let (ok, err) = search(&whole, &flags);
        assert!(ok, "{mode}: {err}");
        // What a kill leaves: the journal's first half, the last line torn.
        let cut = tmp(&format!("cut-{mode}"));
        let (ok, err) = search(&cut, &flags);
        assert!(ok, "{mode}: {err}");
        let text = read(&cut.join("journal.jsonl"));
        let lines: Vec<&str> = text.lines().collect();
        let keep = lines.len() / 2;
        let mut torn = lines[..keep].join("\n");
        torn.push('\n');
        torn.push_str(&lines[keep][..lines[keep].len() / 2]);
        std::fs::write(cut.join("journal.jsonl"), torn).unwrap();
        std::fs::remove_file(cut.join("best.json")).unwrap();
        let mut again = flags.to_vec();
        again.push("--resume");
        let (ok, err) = search(&cut, &again);
        assert!(ok, "{mode}: {err}");
        assert_eq!(budgets(&cut), budgets(&whole), "{mode}");
        assert_eq!(finished(&cut), finished(&whole), "{mode}");
        assert_eq!(
            json(&cut.join("best.json")),
            json(&whole.join("best.json")),
            "{mode}"
        );
    }
}
