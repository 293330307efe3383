//! The trial runner end to end through the binary, on tiny trials (a few dozen bundled MNIST
//! images, one epoch, C=2): `nasrs trial` writes its result (and a failed result naming the
//! field of a bad spec); `--evaluator train` with local workers; a search killed with
//! `kill -9` in the middle and resumed continues from the strategy state it journaled and
//! gives the proposals, states, results and best of an uninterrupted run, as does a
//! REINFORCE-LSTM search (batches of two trials in flight) resumed from a journal cut after
//! a state with a score of its batch pending (a damaged state is refused,
//! naming the journal); failed trials are retried, then recorded as failed.

#[path = "common/trials.rs"]
mod trials;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use trials::{finished, json, nasrs, proposals, read, states, tmp, TINY};

const ARCH: &str =
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";

fn spec(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k");
    let mut v = serde_json::json!({
        "space": "nb201", "arch": ARCH, "channels": 2, "layers": 1, "dataset": "mnist",
        "data": data, "train_limit": 48, "epochs": 2, "batch": 8, "seed": 0, "device": "cpu",
        "threads": 1
    });
    edit(&mut v);
    let p = dir.join("spec.json");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

#[test]
fn trial_writes_its_result_and_names_a_bad_field() {
    let dir = tmp("trial");
    let s = spec(&dir, |_| {});
    let r = dir.join("result.json");
    let out = nasrs(&[
        "trial",
        "--spec",
        s.to_str().unwrap(),
        "--result",
        r.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&r);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["epochs"], 2);
    let curve = v["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 2);
    assert_eq!(curve[1], v["valid_acc"]);
    let acc = v["valid_acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));

    for (field, edit) in [
        ("epochs", serde_json::json!(0)),
        ("arch", serde_json::json!("|bogus~0|+|")),
        ("space", serde_json::json!("nasnet")),
        ("valid_fraction", serde_json::json!(1.5)),
    ] {
        let s = spec(&dir, |v| v[field] = edit);
        let out = nasrs(&[
            "trial",
            "--spec",
            s.to_str().unwrap(),
            "--result",
            r.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {err}");
        assert!(err.contains(&format!("field '{field}'")), "{field}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let v = json(&r);
        assert_eq!(v["status"], "failed");
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    // A missing field is named by the JSON reader.
    let s = spec(&dir, |v| {
        v.as_object_mut().unwrap().remove("batch");
    });
    let out = nasrs(&[
        "trial",
        "--spec",
        s.to_str().unwrap(),
        "--result",
        r.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`batch`"));
}

/// Runs `nasrs search evolution --evaluator train` on tiny trials into `out`.
fn search_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let budget = if extra.contains(&"--budget") {
        &[][..]
    } else {
        &["--budget", "8"][..]
    };
    let mut a: Vec<String> = [
        "search",
        "evolution",
        "--evaluator",
        "train",
        "--population",
        "3",
        "--sample-size",
        "2",
        "--workers",
        "2",
    ]
    .iter()
    .chain(budget)
    .map(|s| s.to_string())
    .collect();
    a.push("--out".into());
    a.push(out.display().to_string());
    a.extend(TINY.iter().map(|s| s.to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn kill_9_then_resume_gives_the_uninterrupted_search() {
    let whole = tmp("whole");
    let args = search_args(&whole, &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nasrs(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(finished(&whole).len(), 8);

    let cut = tmp("cut");
    let args = search_args(&cut, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nasrs"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some trials finished and others run.
    let journal = cut.join("journal.jsonl");
    let t = Instant::now();
    // (a trial finishing and the next proposal are two appends: wait for one in flight)
    while finished(&cut).len() < 3
        || proposals(&cut).len() <= finished(&cut).len()
        || states(&cut).is_empty()
    {
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = finished(&cut).len();
    assert!(done < 8, "the search finished before the kill");
    assert!(
        proposals(&cut).len() > done,
        "no trial was in flight at the kill"
    );
    // The trials the killed run left behind finish on their own; let them, so that they do
    // not compete with the resumed run for the cores.
    std::thread::sleep(Duration::from_millis(500));

    let args = search_args(&cut, &["--resume"]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nasrs(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed:"), "{err}");
    // It continued from the strategy's journaled state, not by running it again.
    assert!(err.contains("its state after"), "{err}");
    assert_eq!(proposals(&cut), proposals(&whole));
    // One state per score, each the uninterrupted run's (population and generator).
    let (cut_states, whole_states) = (states(&cut), states(&whole));
    assert_eq!(whole_states.len(), 8);
    assert_eq!(cut_states, whole_states);
    assert_eq!(finished(&cut), finished(&whole));
    assert_eq!(read(&cut.join("best.json")), read(&whole.join("best.json")));
    assert!(journal.exists());
}

/// `nasrs search reinforce --controller lstm --controller-batch 2 --workers 2 --evaluator
/// train` on tiny trials into `out`.
fn lstm_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "search",
        "reinforce",
        "--controller",
        "lstm",
        "--evaluator",
        "train",
        "--budget",
        "6",
        "--controller-batch",
        "2",
        "--workers",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.display().to_string());
    a.extend(TINY.iter().chain(extra).map(|s| s.to_string()));
    a
}

/// The journal cut where a kill could leave it (after the state of the `keep`-th score, with
/// a torn half line after it), and `best.json` gone.
fn cut_after_state(run: &Path, keep: usize) {
    let path = run.join("journal.jsonl");
    let text = read(&path);
    let mut seen = 0;
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        end += line.len();
        if line.contains("\"event\":\"state\"") {
            seen += 1;
            if seen == keep {
                break;
            }
        }
    }
    assert_eq!(seen, keep, "fewer states than {keep}");
    let mut cut = text[..end].to_string();
    cut.push_str("{\"event\":\"proposed\",\"tri");
    std::fs::write(&path, cut).unwrap();
    std::fs::remove_file(run.join("best.json")).unwrap();
}

#[test]
fn reinforce_lstm_resumes_from_its_journaled_controller() {
    let whole = tmp("lstm-whole");
    let args = lstm_args(&whole, &[]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nasrs(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(states(&whole).len(), 6);
    // Batches of two: two trials drawn from one policy, the third only after both scores.
    let journal = read(&whole.join("journal.jsonl"));
    let at = |needle: &str| journal.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(at("\"event\":\"proposed\",\"trial\":2") < at("\"event\":\"state\",\"observed\":1,"));
    assert!(at("\"event\":\"state\",\"observed\":2,") < at("\"event\":\"proposed\",\"trial\":3"));

    let cut = tmp("lstm-cut");
    let out = nasrs(
        &a.iter()
            .map(|s| {
                if *s == whole.to_str().unwrap() {
                    cut.to_str().unwrap()
                } else {
                    s
                }
            })
            .collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cut_after_state(&cut, 3);
    let args = lstm_args(&cut, &["--resume"]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nasrs(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("its state after 3 scores"), "{err}");
    assert_eq!(proposals(&cut), proposals(&whole));
    // The controller's weights, Adam's moments and the baseline of every later score.
    assert_eq!(states(&cut), states(&whole));
    assert_eq!(finished(&cut), finished(&whole));
    assert_eq!(read(&cut.join("best.json")), read(&whole.join("best.json")));

    // A journal whose state is damaged is refused, naming the journal.
    let path = cut.join("journal.jsonl");
    let mut text = read(&path);
    // The last state, the one a resume reads.
    let at = text.rfind("\"f32le\":\"").unwrap() + "\"f32le\":\"".len();
    text.insert(at, '!');
    std::fs::write(&path, &text).unwrap();
    let out = nasrs(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("journal.jsonl") && err.contains("strategy state"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(read(&path), text, "the journal was changed");
}

#[test]
fn failed_trials_are_retried_then_recorded() {
    let out_dir = tmp("failing");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k");
    // CIFAR-10 files are not in the MNIST folder: every trial fails when it loads the data.
    let args = search_args(
        &out_dir,
        &[
            "--dataset",
            "cifar10",
            "--data",
            data.to_str().unwrap(),
            "--retries",
            "1",
            "--budget",
            "2",
        ],
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nasrs(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("every trial failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let text = read(&out_dir.join("journal.jsonl"));
    assert_eq!(text.matches("\"attempt_failed\"").count(), 2, "{text}");
    let f = finished(&out_dir);
    assert_eq!(f.len(), 2);
    for v in &f {
        assert_eq!(v["status"], "failed");
        assert_eq!(v["attempts"], 2);
        assert!(v["error"].as_str().unwrap().contains("data_batch"), "{v}");
    }
}

#[test]
fn train_evaluator_refusals_name_the_flag() {
    let out_dir = tmp("refusals");
    for (extra, flag) in [
        (&["--executor", "pbs"][..], "--executor"),
        (&["--workers", "0"][..], "--workers"),
        (&["--partition", "gpu"][..], "--partition"),
        (&["--data", "/nonexistent/nasrs"][..], "/nonexistent/nasrs"),
    ] {
        let args = search_args(&out_dir, extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nasrs(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(flag), "{extra:?}: {err}");
    }
}
