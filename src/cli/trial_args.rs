//! The flags of commands whose work is training trials (`nasrs search ... --evaluator train`,
//! `nasrs scale search`): the data each trial trains on, its device and threads, and where
//! trials run (local workers with optional GPUs, or Slurm), with what they decide: the
//! executor's configuration, a trial spec template, and the executor itself. Declared and
//! checked once here, flattened into each command.

use clap::Args;
use nasrs::data::{default_data_dir, DatasetKind};
use nasrs::nas::multi_trial::executor::{Executor, ExecutorConfig, LocalExecutor};
use nasrs::nas::multi_trial::slurm::{SlurmConfig, SlurmExecutor};
use nasrs::nas::multi_trial::trial::TrialSpec;
use nasrs::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Where training trials run and what data they train on.
#[derive(Args)]
pub(crate) struct TrialRunArgs {
    /// Train on the first N training images (0 = all), the last --valid-fraction of them
    /// held out for the score.
    #[arg(long, default_value_t = 1000)]
    pub(crate) train_limit: usize,
    /// The share of the training images held out for validation.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) valid_fraction: f64,
    #[arg(long, default_value_t = 32)]
    pub(crate) batch: usize,
    /// cifar10 | mnist | fashion-mnist | synthetic
    #[arg(long, default_value = "mnist")]
    pub(crate) dataset: String,
    /// Data folder (default: the bundled MNIST subset); trials on Slurm read it from the
    /// compute nodes, so it must be on a shared filesystem there.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Each trial's device: auto | cpu | cuda | cuda:N | cuda-sim
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// CPU threads per trial (default: the cores shared among the workers locally,
    /// --cpus-per-trial on Slurm).
    #[arg(long)]
    pub(crate) trial_threads: Option<usize>,
    /// Trials in flight at once.
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// local (child processes) | slurm (sbatch jobs)
    #[arg(long, default_value = "local")]
    pub(crate) executor: String,
    /// slurm: the partition (default: the cluster's default).
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// slurm: each job's time limit (MM, HH:MM:SS, D-HH; default: the partition's).
    #[arg(long)]
    pub(crate) time_limit: Option<String>,
    /// slurm: GPUs per trial (--gres=gpu:N).
    #[arg(long, default_value_t = 0)]
    pub(crate) gpus_per_trial: usize,
    /// local: GPU ids to spread trials over, comma-separated (e.g. 0,1,2,3; each trial gets
    /// the least used as CUDA_VISIBLE_DEVICES and runs on it as cuda:0); use as many
    /// --workers as GPUs for one trial per GPU. Default with --device auto or cuda: every
    /// GPU the driver reports.
    #[arg(long)]
    pub(crate) gpus: Option<String>,
    /// slurm: CPUs per trial (--cpus-per-task).
    #[arg(long, default_value_t = 1)]
    pub(crate) cpus_per_trial: usize,
    /// slurm: seconds between polls of the queue.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) poll_seconds: f64,
    /// Attempts after the first for a failed trial (a crash, a failed or timed-out job).
    #[arg(long, default_value_t = 0)]
    pub(crate) retries: usize,
}

impl TrialRunArgs {
    /// The executor `--executor` and its flags describe for `workers` trials in flight, and
    /// the CPU threads each trial gets unless `--trial-threads` says (locally the cores
    /// shared among the workers, on Slurm `--cpus-per-trial`).
    pub(crate) fn executor_config(&self, workers: usize) -> Result<(ExecutorConfig, usize)> {
        if workers == 0 {
            return Err(Error::invalid("--workers", "must be at least 1"));
        }
        if !(self.poll_seconds > 0.0 && self.poll_seconds.is_finite()) {
            return Err(Error::invalid(
                "--poll-seconds",
                format!("{} is not a positive number", self.poll_seconds),
            ));
        }
        let (executor, threads) = match self.executor.as_str() {
            "local" => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (ExecutorConfig::Local, (cores / workers).max(1))
            }
            "slurm" => (
                ExecutorConfig::Slurm(SlurmConfig {
                    partition: self.partition.clone(),
                    time_limit: self.time_limit.clone(),
                    gpus_per_trial: self.gpus_per_trial,
                    cpus_per_trial: self.cpus_per_trial.max(1),
                }),
                self.cpus_per_trial.max(1),
            ),
            other => {
                return Err(Error::invalid(
                    "--executor",
                    format!("'{other}' (expected local or slurm)"),
                ))
            }
        };
        if self.executor == "local" {
            for (flag, given) in [
                ("--partition", self.partition.is_some()),
                ("--time-limit", self.time_limit.is_some()),
                ("--gpus-per-trial", self.gpus_per_trial > 0),
            ] {
                if given {
                    return Err(Error::invalid(flag, "is a --executor slurm option"));
                }
            }
        }
        Ok((executor, threads))
    }

    /// Every trial's spec but its network: `space`, the cell spaces' `(channels, layers)`,
    /// the data (its folder made absolute, for trials that run elsewhere), the split,
    /// `epochs`, batch, `seed`, device and threads (`--trial-threads`, else `threads`).
    pub(crate) fn trial_template(
        &self,
        space: &str,
        (channels, layers): (usize, usize),
        epochs: usize,
        seed: u64,
        threads: usize,
    ) -> Result<TrialSpec> {
        let kind: DatasetKind = self.dataset.parse()?;
        let data = self.data.clone().unwrap_or_else(default_data_dir);
        let data = std::fs::canonicalize(&data).map_err(|e| Error::io(&data, e))?;
        Ok(TrialSpec {
            space: space.to_string(),
            arch: String::new(),
            channels,
            layers,
            width_mult: None,
            depth_mult: None,
            resolution: None,
            dataset: kind.name().to_string(),
            data,
            train_limit: self.train_limit,
            valid_fraction: self.valid_fraction,
            epochs,
            batch: self.batch,
            seed,
            device: self.device.clone(),
            threads: Some(self.trial_threads.unwrap_or(threads)),
        })
    }

    /// The executor of `config` (local: over the GPUs of `--gpus`; Slurm: polled every
    /// `--poll-seconds`).
    pub(crate) fn open_executor(&self, config: &ExecutorConfig) -> Result<Box<dyn Executor>> {
        let gpus = gpu_list(self)?;
        Ok(match config {
            ExecutorConfig::Local => Box::new(LocalExecutor::with_gpus(gpus)),
            ExecutorConfig::Slurm(c) => Box::new(SlurmExecutor::new(
                c.clone(),
                Duration::from_secs_f64(self.poll_seconds),
            )?),
        })
    }
}

/// The GPU ids of `--gpus` (local executor only), each non-empty and without spaces.
/// Without the flag, local trials on `--device auto` or `cuda` are spread over every GPU the
/// driver reports (one per GPU with as many `--workers`); none on the CPU.
fn gpu_list(a: &TrialRunArgs) -> Result<Vec<String>> {
    let Some(list) = &a.gpus else {
        let on_gpu = a.executor == "local" && matches!(a.device.as_str(), "auto" | "cuda");
        let n = if on_gpu {
            nasrs::device::gpu_count()
        } else {
            0
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        // The GPUs this process may use are the ones the trials may: an inherited
        // CUDA_VISIBLE_DEVICES names them (the driver's ordinals count within it).
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
        let inherited: Vec<String> = visible
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect();
        return Ok(if inherited.len() == n {
            inherited
        } else {
            (0..n).map(|g| g.to_string()).collect()
        });
    };
    if a.executor != "local" {
        return Err(Error::invalid(
            "--gpus",
            "spreads local trials over GPUs; on Slurm use --gpus-per-trial",
        ));
    }
    let ids: Vec<String> = list.split(',').map(|g| g.trim().to_string()).collect();
    if let Some(bad) = ids
        .iter()
        .find(|g| g.is_empty() || g.chars().any(char::is_whitespace))
    {
        return Err(Error::invalid(
            "--gpus",
            format!("'{list}': GPU id '{bad}' is empty or has spaces (expected e.g. 0,1)"),
        ));
    }
    Ok(ids)
}
