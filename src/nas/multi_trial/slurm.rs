//! Trials as Slurm jobs (`--executor slurm`): each attempt has a two-line script `job.sh`
//! that runs `nasrs trial` and writes its result file to an absolute path (on a cluster, a
//! filesystem the compute nodes share with the submitting machine). Trials submitted
//! together (the driver fills its free slots, then waits) go in as one `sbatch`: one job for
//! one trial, a **job array** for several (`array.sh` beside the first trial's `job.sh` runs
//! task i's `job.sh` into that trial's log; Slurm's own messages of task i go to
//! `array-<i>.out` beside it), one entry for the scheduler and one submission for the
//! controller instead of many. Jobs and array tasks (`<job>_<task>`) are polled with
//! `squeue -r` (one call for every running one); one that left the queue has finished, and
//! its result file says how. A job that ends without one (failed, cancelled,
//! timed out, node failure) is a failed trial, its state read from `scontrol show job`. No
//! `sacct`: it needs the accounting daemon, which many small installations do not run.

use super::executor::{Executor, TrialJob};
use super::trial::TrialResult;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Job states in which a job is still queued or running (squeue's `%T`).
const ACTIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
];

/// The Slurm options of a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlurmConfig {
    /// `--partition` (None: the cluster's default).
    pub partition: Option<String>,
    /// `--time` of each job (Slurm's forms: `MM`, `HH:MM:SS`, `D-HH`); None: the partition's.
    pub time_limit: Option<String>,
    /// GPUs per trial (`--gres=gpu:N`); 0 asks for none.
    pub gpus_per_trial: usize,
    /// CPUs per trial (`--cpus-per-task`).
    pub cpus_per_trial: usize,
}

/// Submits and polls Slurm jobs.
pub struct SlurmExecutor {
    config: SlurmConfig,
    /// Running jobs with their Slurm job ids (`<job>_<task>` for an array task).
    running: Vec<(TrialJob, String)>,
    /// Submitted to this executor, not yet to Slurm (see `flush`).
    queued: Vec<TrialJob>,
    poll: Duration,
}

impl SlurmExecutor {
    /// Checks that `sbatch` and `squeue` answer before the first trial is submitted.
    pub fn new(config: SlurmConfig, poll: Duration) -> Result<Self> {
        run("squeue", &["-h", "-o", "%i"]).map_err(|e| {
            Error::invalid(
                "--executor slurm",
                format!("Slurm does not answer on this machine: {e}"),
            )
        })?;
        Ok(SlurmExecutor {
            config,
            running: Vec::new(),
            queued: Vec::new(),
            poll,
        })
    }

    /// The `sbatch` arguments of a job (or array) named `name` running `script`, Slurm's
    /// output to `output`: the search's options, the same for every trial.
    fn sbatch_args(
        &self,
        name: &str,
        output: &Path,
        array: Option<usize>,
        script: &Path,
    ) -> Vec<String> {
        let c = &self.config;
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={name}"),
            format!("--output={}", output.display()),
            format!("--cpus-per-task={}", c.cpus_per_trial.max(1)),
        ];
        if let Some(n) = array {
            a.push(format!("--array=0-{}", n - 1));
        }
        if let Some(p) = &c.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(t) = &c.time_limit {
            a.push(format!("--time={t}"));
        }
        if c.gpus_per_trial > 0 {
            a.push(format!("--gres=gpu:{}", c.gpus_per_trial));
        }
        a.push(script.display().to_string());
        a
    }

    /// Hands the queued trials to Slurm: one job, or one job array for several.
    fn flush(&mut self) -> Result<()> {
        let jobs = std::mem::take(&mut self.queued);
        let (Some(first), Some(last)) = (jobs.first(), jobs.last()) else {
            return Ok(());
        };
        let dir = trial_dir(first)?.to_path_buf();
        if jobs.len() == 1 {
            let args = self.sbatch_args(
                &format!("nasrs-trial-{}", first.trial),
                &first.log,
                None,
                &dir.join(SCRIPT),
            );
            let id = sbatch(&args)?;
            self.running
                .extend(jobs.into_iter().map(|j| (j, id.clone())));
            return Ok(());
        }
        let mut script = String::from("#!/bin/sh\ncase \"$SLURM_ARRAY_TASK_ID\" in\n");
        for (i, job) in jobs.iter().enumerate() {
            let job_sh = trial_dir(job)?.join(SCRIPT);
            script.push_str(&format!(
                "  {i}) exec /bin/sh {} > {} 2>&1 ;;\n",
                quote(&job_sh.display().to_string()),
                quote(&job.log.display().to_string())
            ));
        }
        script
            .push_str("esac\necho \"no trial for array task $SLURM_ARRAY_TASK_ID\" >&2\nexit 1\n");
        let array_sh = dir.join(ARRAY_SCRIPT);
        crate::io::atomic_write(&array_sh, script.as_bytes())?;
        let args = self.sbatch_args(
            &format!("nasrs-trials-{}-{}", first.trial, last.trial),
            &dir.join("array-%a.out"),
            Some(jobs.len()),
            &array_sh,
        );
        let id = sbatch(&args)?;
        self.running.extend(
            jobs.into_iter()
                .enumerate()
                .map(|(i, j)| (j, format!("{id}_{i}"))),
        );
        Ok(())
    }

    /// Why a job that left the queue without a result ended, from `scontrol`.
    fn job_state(id: &str) -> String {
        match run("scontrol", &["show", "job", id]) {
            Ok(text) => {
                let field = |name: &str| {
                    text.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .unwrap_or("?")
                        .to_string()
                };
                format!(
                    "Slurm job {id} ended {} ({}, exit code {})",
                    field("JobState="),
                    field("Reason="),
                    field("ExitCode=")
                )
            }
            Err(_) => format!("Slurm job {id} left the queue"),
        }
    }
}

/// A trial's script, in its attempt folder.
const SCRIPT: &str = "job.sh";
/// The script of a job array, beside its first trial's.
const ARRAY_SCRIPT: &str = "array.sh";

/// The attempt folder of `job` (where its spec is).
fn trial_dir(job: &TrialJob) -> Result<&Path> {
    job.spec
        .parent()
        .ok_or_else(|| Error::invalid("trial job", "the spec has no folder"))
}

/// Submits with `sbatch args` and returns the job id.
fn sbatch(args: &[String]) -> Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("sbatch", &args)
        .map_err(|e| Error::invalid("--executor slurm", format!("submitting: {e}")))?;
    // --parsable prints "ID" or "ID;CLUSTER".
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::invalid(
            "--executor slurm",
            format!("sbatch printed '{}', not a job id", out.trim()),
        ));
    }
    Ok(id)
}

/// Runs a Slurm command and returns its stdout, or its stderr as the error.
fn run(cmd: &str, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Quotes a path for a POSIX shell script.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Executor for SlurmExecutor {
    fn submit(&mut self, job: TrialJob) -> Result<()> {
        let script_path = trial_dir(&job)?.join(SCRIPT);
        let mut script = String::from("#!/bin/sh\nexec");
        for a in std::iter::once(job.exe.display().to_string()).chain(job.args()) {
            script.push(' ');
            script.push_str(&quote(&a));
        }
        script.push('\n');
        crate::io::atomic_write(&script_path, script.as_bytes())?;
        // Submitted at the next wait, with every other trial submitted before it.
        self.queued.push(job);
        Ok(())
    }

    fn wait(&mut self) -> Result<Vec<(usize, TrialResult)>> {
        self.flush()?;
        loop {
            if self.running.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<&str> = self.running.iter().map(|(_, id)| id.as_str()).collect();
            let listed = match run("squeue", &["-h", "-r", "-j", &ids.join(","), "-o", "%i %T"]) {
                Ok(text) => text,
                // Every job already purged from the controller: none is active.
                Err(e) if e.contains("Invalid job id") => String::new(),
                Err(e) => return Err(Error::invalid("--executor slurm", e)),
            };
            let active: Vec<&str> = listed
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let (id, state) = (w.next()?, w.next()?);
                    ACTIVE.contains(&state).then_some(id)
                })
                .collect();
            let mut done = Vec::new();
            let mut i = 0;
            while i < self.running.len() {
                if active.contains(&self.running[i].1.as_str()) {
                    i += 1;
                    continue;
                }
                let (job, id) = self.running.swap_remove(i);
                let r = job.read_result(&Self::job_state(&id));
                done.push((job.trial, r));
            }
            if !done.is_empty() {
                done.sort_by_key(|(t, _)| *t);
                return Ok(done);
            }
            std::thread::sleep(self.poll);
        }
    }
}
