//! The soft multi-objective reward on a table (MnasNet's `ACC x (SIZE / TARGET)^w`): its
//! value on the bundled NB201 table, bad settings refused naming the flag, a strong penalty
//! steering the search to smaller cells, and the CLI recording the objective it searched on.

use nasrs::nas::history::best;
use nasrs::nas::multi_trial::{
    default_table, search_rng, AgingConfig, SizePenalty, StrategyConfig, TableEvaluator, TableSpec,
    MNAS_WEIGHT,
};
use nasrs::nas::space::nb201::Nb201Space;
use nasrs::nas::space::SearchSpace;
use std::process::Command;

fn spec(penalty: Option<SizePenalty>) -> TableSpec {
    TableSpec {
        path: default_table("nb201").expect("the bundled table"),
        metric: "cifar10_valid_acc".into(),
        report: "cifar10_test_acc".into(),
        params_max_m: None,
        flops_max_m: None,
        penalty,
    }
}

fn params_penalty(target: f64, weight: f64) -> Option<SizePenalty> {
    Some(SizePenalty {
        params_target_m: Some(target),
        flops_target_m: None,
        weight,
    })
}

#[test]
fn the_objective_is_the_metric_times_the_size_ratio_to_the_weight() {
    let plain = TableEvaluator::open(Nb201Space, spec(None)).unwrap();
    let sized = TableEvaluator::open(Nb201Space, spec(params_penalty(0.5, MNAS_WEIGHT))).unwrap();
    let with_params = TableEvaluator::open(
        Nb201Space,
        TableSpec {
            params_max_m: Some(10.0),
            ..spec(None)
        },
    )
    .unwrap();
    let mut rng = nasrs::Rng::new(5);
    for _ in 0..20 {
        let a = Nb201Space.sample(&mut rng);
        let m = plain.metric(&a).unwrap();
        assert_eq!(plain.objective(&a).unwrap(), m);
        // params_m is the third column the limit evaluator loaded.
        let params = with_params.table.row(&a).unwrap()[2];
        let want = m * (params / 0.5).powf(MNAS_WEIGHT);
        assert!((sized.objective(&a).unwrap() - want).abs() < 1e-12);
    }
}

#[test]
fn bad_penalties_are_refused_naming_the_flag() {
    for (penalty, flag) in [
        (params_penalty(0.0, -0.07), "--params-target-m"),
        (params_penalty(f64::NAN, -0.07), "--params-target-m"),
        (params_penalty(0.5, f64::INFINITY), "--penalty-weight"),
        (
            Some(SizePenalty {
                params_target_m: None,
                flops_target_m: None,
                weight: -0.07,
            }),
            "--penalty-weight",
        ),
    ] {
        let e = TableEvaluator::open(Nb201Space, spec(penalty))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(flag), "{flag}: {e}");
    }
}

#[test]
fn a_strong_penalty_finds_smaller_cells() {
    let strategy = StrategyConfig::Evolution(AgingConfig::NB201);
    let found = |eval: &TableEvaluator<Nb201Space>| {
        let mut score = |a: &_| eval.objective(a);
        let history = strategy
            .search(&Nb201Space, 300, &mut search_rng(0), &|_| true, &mut score)
            .unwrap();
        best(&history).unwrap().arch
    };
    let size = TableEvaluator::open(
        Nb201Space,
        TableSpec {
            params_max_m: Some(10.0),
            ..spec(None)
        },
    )
    .unwrap();
    let params = |a| size.table.row(a).unwrap()[2];
    let plain = found(&TableEvaluator::open(Nb201Space, spec(None)).unwrap());
    let small = found(&TableEvaluator::open(Nb201Space, spec(params_penalty(0.1, -1.0))).unwrap());
    assert!(
        params(&small) < params(&plain),
        "{} M with the penalty, {} M without",
        params(&small),
        params(&plain)
    );
}

#[test]
fn the_cli_journal_records_the_objective() {
    let out = std::env::temp_dir().join(format!("nasrs-size-penalty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args([
            "search",
            "evolution",
            "--budget",
            "20",
            "--params-target-m",
            "0.5",
            "--penalty-weight",
            "-0.07",
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
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    for line in journal.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (m, o) = (
            v["metric"].as_f64().unwrap(),
            v["objective"].as_f64().unwrap(),
        );
        assert!(o > 0.0 && (o / m - 1.0).abs() < 0.5, "{line}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(["search", "random", "--params-target-m=-1", "--out"])
        .arg(out.join("bad"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--params-target-m"));
    let _ = std::fs::remove_dir_all(&out);
}
