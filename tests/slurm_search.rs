//! A tiny training search through a real Slurm (`--executor slurm`): four trials as
//! `sbatch` jobs (the two that start together as one job array), polled with `squeue`, their results read from absolute paths; then a
//! search whose every trial fails, retried once as a new job and recorded as failed; a trial
//! that outruns `--time-limit` is ended by Slurm and recorded as failed with its TIMEOUT.
//!
//! CI (`.ci/run`) starts a single-node Slurm and sets `NASRS_SLURM_TESTS=1`: there a missing
//! Slurm fails these tests. Elsewhere, without `sinfo` answering, they print a notice and
//! pass.

#[path = "common/trials.rs"]
mod trials;

use std::path::Path;
use std::process::Command;
use trials::{finished, json, nasrs, proposals, tmp, TINY};

/// Whether to run: Slurm answers, or CI asks for these tests (and then a missing Slurm is a
/// failure, not a skip).
fn slurm_here(test: &str) -> bool {
    let answers = Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var_os("NASRS_SLURM_TESTS").is_some_and(|v| v != "0");
    if required {
        assert!(
            answers,
            "NASRS_SLURM_TESTS is set but `sinfo` does not answer: start Slurm (.ci/slurm-up)"
        );
    } else if !answers {
        // Straight to stderr: the test harness captures eprintln! of a passing test.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: no Slurm answers here (`sinfo`); set NASRS_SLURM_TESTS=1 to require it"
        );
    }
    answers
}

fn search(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "search",
        "random",
        "--evaluator",
        "train",
        "--executor",
        "slurm",
        "--poll-seconds",
        "0.2",
        "--time-limit",
        "5",
        "--workers",
        "2",
        "--out",
    ];
    let out_s = out.display().to_string();
    a.push(&out_s);
    a.extend_from_slice(TINY);
    a.extend_from_slice(extra);
    nasrs(&a)
}

#[test]
fn slurm_search_runs_its_trials_as_jobs() {
    if !slurm_here("slurm_search_runs_its_trials_as_jobs") {
        return;
    }
    let out = tmp("slurm");
    let o = search(&out, &["--budget", "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("on slurm"), "{err}");
    assert_eq!(proposals(&out).len(), 4);
    let f = finished(&out);
    assert_eq!(f.len(), 4, "{f:?}");
    for (i, t) in f.iter().enumerate() {
        assert_eq!(t["status"], "ok", "{t}");
        // Each trial ran as a job: its script and Slurm's output file are in its folder.
        let dir = out.join(format!("trials/{:05}/attempt-1", i + 1));
        assert!(dir.join("job.sh").is_file());
        assert!(dir.join("log.txt").is_file());
    }
    // The first two, submitted together to fill both slots, went in as one job array.
    let first = out.join("trials/00001/attempt-1");
    let array = std::fs::read_to_string(first.join("array.sh")).expect("array.sh");
    assert!(array.contains("00002/attempt-1/job.sh"), "{array}");
    assert!(first.join("array-0.out").is_file() && first.join("array-1.out").is_file());
    assert!(std::fs::read_to_string(first.join("log.txt")).is_ok_and(|l| !l.is_empty()));
    let best = json(&out.join("best.json"));
    assert!(best["valid_acc"].as_f64().is_some());

    // The same search on local processes finds the same trials (training is seeded).
    let local = tmp("slurm-local-twin");
    let mut a = vec![
        "search",
        "random",
        "--evaluator",
        "train",
        "--workers",
        "2",
        "--budget",
        "4",
        "--out",
    ];
    let local_s = local.display().to_string();
    a.push(&local_s);
    a.extend_from_slice(TINY);
    let o = nasrs(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(proposals(&local), proposals(&out));
    let strip = |v: Vec<serde_json::Value>| -> Vec<_> {
        v.into_iter()
            .map(|t| (t["arch"].clone(), t["valid_acc"].clone()))
            .collect()
    };
    assert_eq!(strip(finished(&local)), strip(finished(&out)));
}

#[test]
fn slurm_failed_jobs_are_retried_then_recorded() {
    if !slurm_here("slurm_failed_jobs_are_retried_then_recorded") {
        return;
    }
    let out = tmp("slurm-fail");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k");
    let data_s = data.display().to_string();
    let o = search(
        &out,
        &[
            "--budget",
            "2",
            "--retries",
            "1",
            "--dataset",
            "cifar10",
            "--data",
            &data_s,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("every trial failed"),
        "{err}"
    );
    let f = finished(&out);
    assert_eq!(f.len(), 2);
    for t in &f {
        assert_eq!(t["status"], "failed", "{t}");
        assert_eq!(t["attempts"], 2, "{t}");
    }
    assert!(out.join("trials/00001/attempt-2/job.sh").is_file());
}

#[test]
fn slurm_timed_out_job_is_a_failed_trial() {
    if !slurm_here("slurm_timed_out_job_is_a_failed_trial") {
        return;
    }
    // A trial that cannot finish inside Slurm's smallest time limit (one minute; Slurm ends
    // it within about 30 s more): Slurm kills the job, and the search records the trial as
    // failed with the job's TIMEOUT, rather than waiting for a result that never comes.
    let out = tmp("slurm-timeout");
    let mut a = vec![
        "search",
        "random",
        "--evaluator",
        "train",
        "--executor",
        "slurm",
        "--poll-seconds",
        "1",
        "--time-limit",
        "1",
        "--budget",
        "1",
        "--retries",
        "0",
        "--trial-threads",
        "1",
        "--out",
    ];
    let out_s = out.display().to_string();
    a.push(&out_s);
    // TINY, but far more epochs than a minute holds.
    let mut tiny = TINY.to_vec();
    let at = tiny.iter().position(|&s| s == "--epochs").unwrap() + 1;
    tiny[at] = "1000000";
    a.extend_from_slice(&tiny);
    let o = nasrs(&a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("every trial failed"),
        "{err}"
    );
    let f = finished(&out);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["status"], "failed", "{}", f[0]);
    let why = f[0]["error"].as_str().unwrap_or("");
    assert!(why.contains("TIMEOUT"), "{why}");
}
