//! The local executor's GPU slots (`--gpus`): trials are spread over the listed GPUs, each
//! started with `CUDA_VISIBLE_DEVICES` set to one of them (recorded in its result); a bad list
//! or `--gpus` on Slurm is refused naming the flag. Runs on the CPU: the variable is set
//! whatever device the trial uses.

#[path = "common/trials.rs"]
mod trials;

use trials::{finished, nasrs, tmp, TINY};

#[test]
fn trials_are_spread_over_the_listed_gpus() {
    let out = tmp("gpu-slots");
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec![
        "search",
        "random",
        "--evaluator",
        "train",
        "--budget",
        "4",
        "--workers",
        "2",
        "--gpus",
        "3,5",
        "--seed",
        "1",
        "--out",
        &out_s,
    ];
    args.extend_from_slice(TINY);
    let run = nasrs(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let done = finished(&out);
    assert_eq!(done.len(), 4);
    let gpus: Vec<&str> = done
        .iter()
        .map(|e| e["visible_devices"].as_str().expect("a GPU was given"))
        .collect();
    assert!(gpus.iter().all(|g| *g == "3" || *g == "5"), "{gpus:?}");
    // The first two start together, on different GPUs.
    assert_ne!(gpus[0], gpus[1], "{gpus:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_gpu_lists_are_refused() {
    for (extra, flag) in [
        (vec!["--gpus", "0,,1"], "--gpus"),
        (
            vec!["--gpus", "0", "--executor", "slurm"],
            "--gpus-per-trial",
        ),
    ] {
        let out = tmp("gpu-bad");
        let out_s = out.to_string_lossy().into_owned();
        let mut args = vec![
            "search",
            "random",
            "--evaluator",
            "train",
            "--budget",
            "1",
            "--out",
            &out_s,
        ];
        args.extend(extra.iter().copied());
        args.extend_from_slice(TINY);
        let run = nasrs(&args);
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(
            !out.join("journal.jsonl").exists(),
            "nothing written for a refused run"
        );
    }
}
