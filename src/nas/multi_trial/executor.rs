//! Where training trials run: an [`Executor`] takes trial jobs (a spec file, the result file
//! the trial writes, a log) and says which of them finished, with their results. The local
//! one ([`LocalExecutor`]) runs each as a `nasrs trial` child process sharing the machine's
//! cores; the Slurm one is in `slurm.rs`. A trial that ends without a readable result (a
//! crash, a kill, a timed-out job) is a failed trial whose message says why: the driver
//! decides whether to retry it.

use super::trial::{TrialResult, TrialStatus};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How often the local executor looks at its children.
const LOCAL_POLL: Duration = Duration::from_millis(50);

/// One attempt at a trial: its files, all absolute paths in the attempt's own folder.
#[derive(Clone, Debug)]
pub struct TrialJob {
    /// The trial's number in the search (1-based).
    pub trial: usize,
    /// The `nasrs` binary that runs it.
    pub exe: PathBuf,
    pub spec: PathBuf,
    pub result: PathBuf,
    pub log: PathBuf,
}

impl TrialJob {
    /// The attempt whose files live in `dir`.
    pub fn in_dir(trial: usize, exe: &Path, dir: &Path) -> TrialJob {
        TrialJob {
            trial,
            exe: exe.to_path_buf(),
            spec: dir.join("trial.json"),
            result: dir.join("result.json"),
            log: dir.join("log.txt"),
        }
    }

    /// The command line that runs the trial.
    pub fn args(&self) -> Vec<String> {
        vec![
            "trial".into(),
            "--spec".into(),
            self.spec.display().to_string(),
            "--result".into(),
            self.result.display().to_string(),
        ]
    }

    /// The result the trial wrote; a failed result saying `how_it_ended` when there is none
    /// or it cannot be read.
    pub fn read_result(&self, how_it_ended: &str) -> TrialResult {
        let parsed = std::fs::read_to_string(&self.result)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<TrialResult>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) if r.status == TrialStatus::Ok && r.valid_acc.is_some_and(f64::is_finite) => r,
            Ok(r) if r.status == TrialStatus::Failed => r,
            Ok(_) => TrialResult::failed(
                format!(
                    "{}: an ok result without a finite valid_acc",
                    self.result.display()
                ),
                0.0,
            ),
            Err(e) => TrialResult::failed(
                format!(
                    "{how_it_ended}, no result in {} ({e}); see {}",
                    self.result.display(),
                    self.log.display()
                ),
                0.0,
            ),
        }
    }
}

/// Where trials run (`--executor`), as a run's `config.json` records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExecutorConfig {
    /// Child processes on this machine.
    Local,
    /// Slurm jobs (`sbatch`), polled with `squeue` / `scontrol`.
    Slurm(super::slurm::SlurmConfig),
}

/// Runs trial jobs and reports the finished ones.
pub trait Executor {
    /// Starts `job` (its spec file is written), or queues it to start at the next `wait`
    /// (Slurm: the trials submitted between two waits go in as one job array).
    fn submit(&mut self, job: TrialJob) -> Result<()>;
    /// Waits until at least one submitted job has finished and returns every finished one
    /// (trial number, result); empty only when nothing is running.
    fn wait(&mut self) -> Result<Vec<(usize, TrialResult)>>;
}

/// Trials as child processes of this one, optionally each given one GPU of a list.
#[derive(Default)]
pub struct LocalExecutor {
    /// Running trials, each with the index in `gpus` of the GPU it was given.
    running: Vec<(TrialJob, Child, Option<usize>)>,
    /// GPU ids (`CUDA_VISIBLE_DEVICES` values) trials are spread over; empty: none given.
    gpus: Vec<String>,
}

impl LocalExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trials spread over `gpus`: each starts with `CUDA_VISIBLE_DEVICES` set to the one
    /// running the fewest trials (the first on a tie), so with as many workers as GPUs each
    /// trial has a GPU to itself and sees it as `cuda:0`.
    pub fn with_gpus(gpus: Vec<String>) -> Self {
        LocalExecutor {
            running: Vec::new(),
            gpus,
        }
    }

    /// The GPU the next trial gets: the least used, the first on a tie.
    fn next_gpu(&self) -> Option<usize> {
        (0..self.gpus.len()).min_by_key(|&g| {
            self.running
                .iter()
                .filter(|(_, _, used)| *used == Some(g))
                .count()
        })
    }
}

impl Executor for LocalExecutor {
    fn submit(&mut self, job: TrialJob) -> Result<()> {
        let log = std::fs::File::create(&job.log).map_err(|e| Error::io(&job.log, e))?;
        let err = log.try_clone().map_err(|e| Error::io(&job.log, e))?;
        let gpu = self.next_gpu();
        let mut command = Command::new(&job.exe);
        command
            .args(job.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if let Some(g) = gpu {
            command.env("CUDA_VISIBLE_DEVICES", &self.gpus[g]);
        }
        let child = command.spawn().map_err(|e| Error::io(&job.exe, e))?;
        self.running.push((job, child, gpu));
        Ok(())
    }

    fn wait(&mut self) -> Result<Vec<(usize, TrialResult)>> {
        loop {
            if self.running.is_empty() {
                return Ok(Vec::new());
            }
            let mut done = Vec::new();
            let mut i = 0;
            while i < self.running.len() {
                let (job, child, _) = &mut self.running[i];
                match child.try_wait().map_err(|e| Error::io(&job.exe, e))? {
                    Some(status) => {
                        let (job, _, _) = self.running.swap_remove(i);
                        let how = format!("the trial process ended with {status}");
                        done.push((job.trial, job.read_result(&how)));
                    }
                    None => i += 1,
                }
            }
            if !done.is_empty() {
                // Trial order, so that a batch of results is handled the same way each time.
                done.sort_by_key(|(t, _)| *t);
                return Ok(done);
            }
            std::thread::sleep(LOCAL_POLL);
        }
    }
}
