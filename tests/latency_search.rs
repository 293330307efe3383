//! Latency in a training search (`--latency-table`, `nas::multi_trial::latency_terms`): under a
//! plain limit no architecture over the target is ever trained; under MnasNet's soft reward
//! the strategy is told `acc * (lat / T)^-0.07`, journaled beside the accuracy, and the best
//! is the best by that reward; every run writes the accuracy-latency Pareto front (its front
//! non-dominated, drawn from the results) and its SVG; a resumed finished run answers the
//! same, and one whose table changed since it started is refused. `latency predict` answers
//! from the table. Bad latency flags are refused naming the flag.

#[path = "common/cli.rs"]
mod cli;

use cli::{data, nasrs, ok, refused};
use nasrs::nas::latency::LatencyTable;
use nasrs::nas::space::mbconv::{MbConvArch, MbConvSpace};
use nasrs::nas::space::SearchSpace;
use nasrs::Rng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "nasrs-latency-search-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny CPU table (batch 1, 16x16, width 0.25, MNIST's one channel), built once.
fn table() -> &'static Path {
    static TABLE: OnceLock<PathBuf> = OnceLock::new();
    TABLE.get_or_init(|| {
        let path = tmp("table").join("latency.json");
        let flags = "latency build --space mbconv --device cpu --batch 1 --size 16 \
                     --width-mult 0.25 --in-channels 1 --classes 10 --warmup 0 --repeats 2";
        let mut args: Vec<&str> = flags.split_whitespace().collect();
        args.extend(["--out", path.to_str().unwrap()]);
        ok(&args);
        path
    })
}

/// The median predicted latency of 41 random architectures: a target about half exceed.
fn median_target() -> f64 {
    let t = LatencyTable::load(table()).unwrap();
    let space = MbConvSpace::default();
    let mut rng = Rng::new(11);
    let mut ms: Vec<f64> = (0..41)
        .map(|_| t.predict(&space.sample(&mut rng)).unwrap().total_ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[20]
}

/// The flags of a tiny training search of the MBConv space under the latency table `table`.
fn search_args(strategy: &str, out: &Path, table: &Path, extra: &[&str]) -> Vec<String> {
    let fixed = "--space mbconv --evaluator train --epochs 1 --train-limit 64 --batch 16 \
                 --device cpu --trial-threads 1 --seed 5";
    let mut args: Vec<String> = vec!["search".into(), strategy.into()];
    args.extend(fixed.split_whitespace().map(String::from));
    for (flag, path) in [
        ("--data", Path::new(&data())),
        ("--out", out),
        ("--latency-table", table),
    ] {
        args.push(flag.into());
        args.push(path.to_str().unwrap().into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn search(strategy: &str, out: &Path, extra: &[&str]) -> Value {
    let args = search_args(strategy, out, table(), extra);
    serde_json::from_str(&ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap()
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The journal's finished events.
fn finished(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "finished")
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// `front` holds exactly the results no other result beats on both accuracy and latency.
fn check_front(pareto: &Value) {
    let results = pareto["results"].as_array().unwrap();
    let front = pareto["front"].as_array().unwrap();
    assert!(!front.is_empty());
    let dominated = |p: &Value| {
        results.iter().any(|q| {
            f(&q["accuracy"]) >= f(&p["accuracy"])
                && f(&q["latency_ms"]) <= f(&p["latency_ms"])
                && (f(&q["accuracy"]) > f(&p["accuracy"])
                    || f(&q["latency_ms"]) < f(&p["latency_ms"]))
        })
    };
    for p in results {
        let on_front = front.iter().any(|q| q["trial"] == p["trial"]);
        assert_eq!(on_front, !dominated(p), "{p}");
    }
    let lat: Vec<f64> = front.iter().map(|p| f(&p["latency_ms"])).collect();
    assert!(
        lat.windows(2).all(|w| w[0] <= w[1]),
        "fastest first: {lat:?}"
    );
}

#[test]
fn a_limit_never_trains_an_architecture_over_the_target() {
    let target = median_target();
    let run = tmp("limit").join("run");
    let t = format!("{target}");
    let best = search(
        "evolution",
        &run,
        &[
            "--budget",
            "6",
            "--population",
            "3",
            "--sample-size",
            "2",
            "--latency-target",
            &t,
            "--latency-reward",
            "limit",
        ],
    );
    let table = LatencyTable::load(table()).unwrap();
    let events = finished(&run);
    assert_eq!(events.len(), 6);
    for e in &events {
        let arch = MbConvArch::parse(e["arch"].as_str().unwrap()).unwrap();
        let ms = table.predict(&arch).unwrap().total_ms;
        assert!(
            ms <= target,
            "{} predicted {ms} ms over {target}",
            e["arch"]
        );
        assert_eq!(f(&e["latency_ms"]), ms);
        // Under a limit the reward is the accuracy.
        assert_eq!(f(&e["objective"]), f(&e["valid_acc"]));
    }
    assert_eq!(f(&best["objective"]), f(&best["valid_acc"]));
    let pareto = read(&run.join("pareto.json"));
    assert_eq!(pareto["results"].as_array().unwrap().len(), 6);
    check_front(&pareto);
    let svg = std::fs::read_to_string(run.join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
}

#[test]
fn the_soft_reward_is_mnasnets_and_picks_the_best() {
    let target = median_target();
    let run = tmp("soft").join("run");
    let t = format!("{target}");
    let args = ["--budget", "5", "--latency-target", &t];
    let best = search("random", &run, &args);
    let events = finished(&run);
    assert_eq!(events.len(), 5);
    let mut top = f64::NEG_INFINITY;
    for e in &events {
        let (acc, ms) = (f(&e["valid_acc"]), f(&e["latency_ms"]));
        let want = acc * (ms / target).powf(-0.07);
        assert!((f(&e["objective"]) - want).abs() < 1e-12, "{e}");
        top = top.max(want);
    }
    assert_eq!(f(&best["objective"]), top);
    // The trials' scale, for `nasrs scale --base best.json` (the default width 0.25).
    assert_eq!(f(&best["width_mult"]), 0.25);
    check_front(&read(&run.join("pareto.json")));
    // A finished run resumed answers every trial from its journal and the same best.
    let again = search("random", &run, &[&args[..], &["--resume"]].concat());
    assert_eq!(again, best);
}

#[test]
fn bad_latency_flags_are_refused() {
    let dir = tmp("refused");
    let out = dir.join("run");
    let tab = table().to_str().unwrap().to_string();
    let missing = dir.join("none.json");
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{\"not\": \"a table\"}").unwrap();
    let (missing, junk) = (missing.to_str().unwrap(), junk.to_str().unwrap());
    // (space, table, the flags after it, what the error names)
    let cases: [(&str, Option<&str>, &str, &str); 8] = [
        (
            "nb201",
            Some(&tab),
            "--latency-target 1 --evaluator table",
            "--latency-table",
        ),
        ("nb201", Some(&tab), "--latency-target 1", "--latency-table"),
        ("mbconv", None, "--latency-target 1", "--latency-table"),
        (
            "mbconv",
            Some(&tab),
            "--latency-target -2",
            "--latency-target",
        ),
        (
            "mbconv",
            Some(&tab),
            "--latency-target 1 --latency-reward fast",
            "--latency-reward",
        ),
        (
            "mbconv",
            Some(&tab),
            "--latency-target 1 --latency-weight 0.5",
            "--latency-weight",
        ),
        ("mbconv", Some(missing), "--latency-target 1", "none.json"),
        ("mbconv", Some(junk), "--latency-target 1", "junk.json"),
    ];
    let d = data();
    for (space, table, flags, what) in cases {
        let mut args = vec!["search", "random", "--budget", "1"];
        if !flags.contains("--evaluator") {
            args.extend(["--evaluator", "train"]);
        }
        args.extend([
            "--data",
            &d,
            "--out",
            out.to_str().unwrap(),
            "--space",
            space,
        ]);
        if let Some(t) = table {
            args.extend(["--latency-table", t]);
        }
        args.extend(flags.split_whitespace());
        refused(&args, what);
    }
    assert!(!out.exists(), "a refused search writes nothing");
}

#[test]
fn predict_answers_from_the_table_alone() {
    let tab = table().to_str().unwrap();
    let t = LatencyTable::load(table()).unwrap();
    let b0 = t.predict(&MbConvArch::b0()).unwrap().total_ms;
    let line = ok(&["latency", "predict", "--table", tab, "--arch", "b0"]);
    let printed: f64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!((printed - b0).abs() < 1e-4, "{line}");
    let spread: Value = serde_json::from_str(&ok(&[
        "latency",
        "predict",
        "--table",
        tab,
        "--samples",
        "30",
    ]))
    .unwrap();
    let q: Vec<f64> = [
        "min_ms",
        "p10_ms",
        "p25_ms",
        "median_ms",
        "p75_ms",
        "p90_ms",
        "max_ms",
    ]
    .iter()
    .map(|k| f(&spread[k]))
    .collect();
    assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{spread}");
    refused(
        &["latency", "predict", "--table", tab, "--samples", "0"],
        "--samples",
    );
    refused(
        &["latency", "predict", "--table", tab, "--arch", "e1k3"],
        "e1k3",
    );
}

#[test]
fn resuming_with_a_changed_table_is_refused() {
    let dir = tmp("changed");
    let own = dir.join("latency.json");
    std::fs::copy(table(), &own).unwrap();
    let run = dir.join("run");
    let target = format!("{}", median_target());
    let args = |more: &[&str]| -> Vec<String> {
        search_args(
            "random",
            &run,
            &own,
            &[&["--latency-target", &target][..], more].concat(),
        )
    };
    let first = args(&["--budget", "2"]);
    ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    // Every timing doubled: the journaled rewards no longer follow from the table.
    let mut t: Value = read(&own);
    fn double(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k.ends_with("_ms") {
                        if let Some(n) = x.as_f64() {
                            *x = Value::from(2.0 * n);
                        }
                    } else {
                        double(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(double),
            _ => {}
        }
    }
    double(&mut t);
    std::fs::write(&own, serde_json::to_string(&t).unwrap()).unwrap();
    let again = args(&["--resume", "--budget", "3"]);
    // Refused after the run's banner line: the journal is read once the run folder opens.
    let out = nasrs(&again.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: ")
            && err.contains("the table changed since the run started")
            && !err.contains("panicked"),
        "{err}"
    );
}
