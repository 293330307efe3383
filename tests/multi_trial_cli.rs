//! `nasrs search random|evolution|reinforce` and `nasrs study strategies` end to end through
//! the binary, on the bundled NAS-Bench-201 table: the run folder's files; a finished run
//! refused without `--force`, resumed to the same bytes, replaced by the same bytes; a run
//! cut short resumed to the journal of the uninterrupted one; a larger `--budget` extends a
//! run; a journal of another run refused; bad flags refused in one line naming the flag; a
//! study's figures, its refusal to overwrite and its seed `s` equal to `--seed s`; the same
//! for REINFORCE's LSTM controller (`--controller lstm`, `reinforce-lstm` in a study).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-mt-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn nasrs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(args)
        .output()
        .expect("run nasrs")
}

fn ok(args: &[&str]) -> (String, String) {
    let out = nasrs(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "nasrs {args:?}: {err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

/// Exit code 2 and a one-line error naming each of `parts`.
fn refused(args: &[&str], parts: &[&str]) {
    let out = nasrs(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "nasrs {args:?}: {err}");
    let line = err.lines().last().unwrap_or("");
    assert!(
        line.starts_with("error: ") && !err.contains("panicked"),
        "nasrs {args:?}: {err}"
    );
    for p in parts {
        assert!(
            line.contains(p),
            "nasrs {args:?}: '{p}' missing from: {err}"
        );
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const FILES: [&str; 4] = ["config.json", "journal.jsonl", "best.json", "anytime.svg"];

fn files(dir: &Path) -> Vec<String> {
    FILES.iter().map(|f| read(&dir.join(f))).collect()
}

fn search(strategy: &str, out: &Path, budget: &str, extra: &[&str]) -> (String, String) {
    let out = out.to_string_lossy();
    let mut args = vec![
        "search", strategy, "--budget", budget, "--seed", "3", "--out", &out,
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn a_run_folder_is_written_refused_resumed_and_replaced() {
    for strategy in ["random", "evolution", "reinforce"] {
        let dir = tmp(&format!("run-{strategy}"));
        let (stdout, _) = search(strategy, &dir, "60", &[]);
        let journal: Vec<serde_json::Value> = read(&dir.join("journal.jsonl"))
            .lines()
            .map(|l| serde_json::from_str(l).expect("journal line"))
            .collect();
        assert_eq!(journal.len(), 60);
        let best = json(&dir.join("best.json"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stdout).expect("stdout"),
            best
        );
        let top = journal
            .iter()
            .max_by(|a, b| {
                a["metric"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["metric"].as_f64().unwrap())
            })
            .expect("a query");
        assert_eq!(best["metric_value"], top["metric"]);
        assert_eq!(best["report"], "cifar10_test_acc");
        let q = best["query"].as_u64().expect("query") as usize;
        assert_eq!(journal[q - 1]["arch"], best["arch"]);
        assert_eq!(journal[q - 1]["report"], best["report_value"]);
        let config = json(&dir.join("config.json"));
        assert_eq!(config["budget"], 60);
        assert!(
            config["strategy"].to_string().contains(strategy),
            "{config}"
        );
        assert!(read(&dir.join("anytime.svg")).starts_with("<svg"));
        let before = files(&dir);
        // A second run into the folder is refused, naming the way out.
        let out = dir.to_string_lossy().into_owned();
        refused(
            &[
                "search", strategy, "--budget", "60", "--seed", "3", "--out", &out,
            ],
            &["--out", "--resume", "--force"],
        );
        let (_, err) = search(strategy, &dir, "60", &["--resume"]);
        assert!(err.contains("60 of 60 queries replayed"), "{err}");
        assert_eq!(
            files(&dir),
            before,
            "{strategy}: --resume of a finished run"
        );
        search(strategy, &dir, "60", &["--force"]);
        assert_eq!(
            files(&dir),
            before,
            "{strategy}: --force reruns to the same files"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_run_cut_short_resumes_to_the_uninterrupted_journal() {
    for strategy in ["evolution", "reinforce"] {
        let whole = tmp(&format!("whole-{strategy}"));
        search(strategy, &whole, "80", &[]);
        let cut = tmp(&format!("cut-{strategy}"));
        search(strategy, &cut, "80", &[]);
        // What a kill after 30 queries leaves: the journal so far and the config.
        let journal = read(&cut.join("journal.jsonl"));
        let first: String = journal.lines().take(30).map(|l| format!("{l}\n")).collect();
        std::fs::write(cut.join("journal.jsonl"), first).expect("truncate");
        std::fs::remove_file(cut.join("best.json")).expect("rm");
        std::fs::remove_file(cut.join("anytime.svg")).expect("rm");
        let (_, err) = search(strategy, &cut, "80", &["--resume"]);
        assert!(err.contains("30 of 80 queries replayed"), "{err}");
        assert_eq!(files(&cut), files(&whole), "{strategy}");
        // A larger budget extends a finished run as if it had been asked from the start.
        let longer = tmp(&format!("longer-{strategy}"));
        search(strategy, &longer, "120", &[]);
        search(strategy, &cut, "120", &["--resume"]);
        assert_eq!(
            read(&cut.join("journal.jsonl")),
            read(&longer.join("journal.jsonl"))
        );
        assert_eq!(
            read(&cut.join("best.json")),
            read(&longer.join("best.json"))
        );
        let out = cut.to_string_lossy().into_owned();
        refused(
            &[
                "search", strategy, "--budget", "50", "--seed", "3", "--out", &out, "--resume",
            ],
            &["--budget", "120"],
        );
        refused(
            &[
                "search", strategy, "--budget", "120", "--seed", "4", "--out", &out, "--resume",
            ],
            &["--resume", "config.json"],
        );
        for d in [whole, cut, longer] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn a_journal_of_another_run_is_refused() {
    let dir = tmp("foreign");
    search("evolution", &dir, "20", &[]);
    let journal = read(&dir.join("journal.jsonl"));
    let mut lines: Vec<String> = journal.lines().map(str::to_string).collect();
    let mut record: serde_json::Value = serde_json::from_str(&lines[4]).expect("line");
    record["arch"] = serde_json::json!("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|");
    lines[4] = record.to_string();
    std::fs::write(dir.join("journal.jsonl"), lines.join("\n") + "\n").expect("write");
    let out = dir.to_string_lossy().into_owned();
    refused(
        &[
            "search",
            "evolution",
            "--budget",
            "20",
            "--seed",
            "3",
            "--out",
            &out,
            "--resume",
        ],
        &["journal.jsonl", "query 5", "--force"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_refused_naming_them() {
    let dir = tmp("flags");
    let out = dir.to_string_lossy().into_owned();
    let base = ["search", "evolution", "--budget", "10", "--out", &out];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (with(&["--space", "darts"]), vec!["--table", "darts"]),
        (with(&["--space", "nb101"]), vec!["--space", "nb101"]),
        (
            with(&["--evaluator", "supernet"]),
            vec!["--evaluator", "supernet"],
        ),
        (
            with(&["--evaluator", "oracle"]),
            vec!["--evaluator", "oracle"],
        ),
        (
            with(&["--metric", "cifar10_accuracy"]),
            vec!["--metric", "cifar10_accuracy", "nb201_12ep.csv"],
        ),
        (with(&["--report", "top1"]), vec!["--report", "top1"]),
        (
            with(&["--table", "/nonexistent/t.csv"]),
            vec!["/nonexistent/t.csv"],
        ),
        (with(&["--preset", "amoeba"]), vec!["--preset", "amoeba"]),
        (
            with(&["--population", "2", "--sample-size", "3"]),
            vec!["--sample-size"],
        ),
        (
            with(&["--params-max-m", "0.0001"]),
            vec!["--params-max-m", "smallest"],
        ),
        (with(&["--resume", "--force"]), vec!["--force", "--resume"]),
    ];
    for (args, parts) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, parts);
    }
    refused(
        &["search", "random", "--budget", "0", "--out", &out],
        &["--budget"],
    );
    refused(
        &["search", "reinforce", "--lr=-1", "--out", &out],
        &["--lr"],
    );
    assert!(!dir.exists(), "a refused run created {}", dir.display());
}

#[test]
fn the_darts_space_searches_a_table_of_genotypes_and_names_what_it_lacks() {
    let dir = tmp("darts");
    std::fs::create_dir_all(&dir).expect("dir");
    // Two DARTS genotypes in their Python form (commas inside: quoted fields).
    let g = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=range(2, 6))";
    let table = dir.join("darts.csv");
    std::fs::write(&table, format!("arch,acc,test\n\"{g}\",97.0,96.9\n")).expect("write");
    let t = table.to_string_lossy().into_owned();
    let out = dir.join("run").to_string_lossy().into_owned();
    let args = [
        "search", "random", "--space", "darts", "--table", &t, "--metric", "acc", "--report",
        "test", "--budget", "3", "--out", &out,
    ];
    refused(&args, &["not in the table", "darts.csv", "Genotype("]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_study_summarizes_every_strategy_and_its_seed_is_a_search() {
    let dir = tmp("study");
    let out = dir.to_string_lossy().into_owned();
    let args = [
        "study",
        "strategies",
        "--budget",
        "40",
        "--seeds",
        "8",
        "--out",
        &out,
    ];
    let (stdout, _) = ok(&args);
    for s in ["random", "evolution", "reinforce", "median", "best"] {
        assert!(stdout.contains(s), "{stdout}");
    }
    let study = json(&dir.join("study.json"));
    let median = study["reference"]["report_median"]
        .as_f64()
        .expect("median");
    assert_eq!(study["reference"]["report_best"], 89.16);
    assert_eq!(study["reference"]["architectures"], 15_625);
    let strategies = study["strategies"].as_array().expect("strategies");
    assert_eq!(strategies.len(), 3);
    for s in strategies {
        let reports = s["reports"].as_array().expect("reports");
        assert_eq!(reports.len(), 8);
        assert_eq!(s["curve"].as_array().expect("curve").len(), 40);
        let mean = s["report"]["mean"].as_f64().expect("mean");
        let direct: f64 = reports.iter().map(|r| r.as_f64().unwrap()).sum::<f64>() / 8.0;
        assert!((mean - direct).abs() < 1e-9);
        assert!(
            mean > median,
            "{}: {mean} <= median {median}",
            s["strategy"]
        );
        // The curve never falls (the incumbent's metric only rises; its report is what it is,
        // but at the last query the curve is the mean returned report).
        let last = s["curve"][39].as_f64().expect("last");
        assert!((last - mean).abs() < 1e-9);
    }
    assert!(read(&dir.join("anytime.svg")).contains("evolution"));
    refused(&args, &["--out", "study.json", "--force"]);
    let before = read(&dir.join("study.json"));
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&forced);
    assert_eq!(
        read(&dir.join("study.json")),
        before,
        "a study is deterministic"
    );
    // Seed 5 of the study is `nasrs search evolution --seed 5`.
    let run = dir.join("seed5").to_string_lossy().into_owned();
    ok(&[
        "search",
        "evolution",
        "--budget",
        "40",
        "--seed",
        "5",
        "--out",
        &run,
    ]);
    let best = json(&dir.join("seed5/best.json"));
    assert_eq!(best["report_value"], strategies[1]["reports"][5]);
    refused(
        &[
            "study",
            "strategies",
            "--strategies",
            "random,bayes",
            "--out",
            &out,
            "--force",
        ],
        &["--strategies", "bayes"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_strategy_keeps_to_the_size_limits() {
    let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/nb201-12ep/nb201_12ep.csv");
    let sizes: std::collections::HashMap<String, (f64, f64)> = read(&table)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                (f[7].parse().unwrap(), f[8].parse().unwrap()),
            )
        })
        .collect();
    for strategy in ["random", "evolution", "reinforce"] {
        let dir = tmp(&format!("limits-{strategy}"));
        search(
            strategy,
            &dir,
            "150",
            &["--params-max-m", "0.4", "--flops-max-m", "50"],
        );
        let journal = read(&dir.join("journal.jsonl"));
        assert_eq!(journal.lines().count(), 150);
        for line in journal.lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("line");
            let (p, f) = sizes[r["arch"].as_str().expect("arch")];
            assert!(
                p <= 0.4 && f <= 50.0,
                "{strategy}: {r} has {p} M weights, {f} MFLOPs"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_lstm_controller_runs_resumes_and_is_a_study_strategy() {
    let lstm = ["--controller", "lstm", "--lstm-hidden", "8"];
    let whole = tmp("lstm-whole");
    search("reinforce", &whole, "40", &lstm);
    let config = json(&whole.join("config.json"));
    assert_eq!(
        config["strategy"]["reinforce_lstm"]["hidden"], 8,
        "{config}"
    );
    let cut = tmp("lstm-cut");
    search("reinforce", &cut, "15", &lstm);
    let resume: Vec<&str> = lstm.iter().copied().chain(["--resume"]).collect();
    let (_, err) = search("reinforce", &cut, "40", &resume);
    assert!(err.contains("15 of 40 queries replayed"), "{err}");
    assert_eq!(files(&cut), files(&whole));
    // The policy controller is another run: its config does not resume this one.
    refused(
        &[
            "search",
            "reinforce",
            "--budget",
            "40",
            "--seed",
            "3",
            "--out",
            &cut.to_string_lossy(),
            "--resume",
        ],
        &["--resume", "config.json"],
    );
    let out = tmp("lstm-flags").to_string_lossy().into_owned();
    refused(
        &["search", "reinforce", "--controller", "gru", "--out", &out],
        &["--controller", "gru"],
    );
    refused(
        &[
            "search",
            "reinforce",
            "--controller",
            "lstm",
            "--lstm-hidden",
            "0",
            "--out",
            &out,
        ],
        &["--lstm-hidden"],
    );
    // Seed 3 of a study is `--seed 3`.
    let study = tmp("lstm-study");
    ok(&[
        "study",
        "strategies",
        "--strategies",
        "reinforce-lstm",
        "--lstm-hidden",
        "8",
        "--budget",
        "40",
        "--seeds",
        "4",
        "--out",
        &study.to_string_lossy(),
    ]);
    let s = json(&study.join("study.json"));
    let best = json(&whole.join("best.json"));
    assert_eq!(s["strategies"][0]["strategy"], "reinforce-lstm");
    assert_eq!(
        best["report_value"], s["strategies"][0]["reports"][3],
        "{s}\n{best}"
    );
    for d in [whole, cut, study] {
        let _ = std::fs::remove_dir_all(d);
    }
}
