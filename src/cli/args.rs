//! Argument groups several commands share, flattened into each (`#[command(flatten)]`), so
//! a flag is declared, documented and defaulted once.

use clap::Args;
use std::path::PathBuf;

/// Where a command runs.
#[derive(Args)]
pub(crate) struct DeviceArgs {
    /// auto | cpu | cuda | cuda:N | cuda-sim
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Worker threads on the CPU (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The run folder of a search or a training run, and what to do if it holds a run.
#[derive(Args)]
pub(crate) struct RunFolderArgs {
    /// Run folder (default: runs/<command>-<dataset>-s<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the run folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start over in a run folder that holds an earlier run (its files are replaced once
    /// the new run's first epoch is saved).
    #[arg(long)]
    pub force: bool,
}
