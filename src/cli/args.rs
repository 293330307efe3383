//! Argument groups several commands share, flattened into each (`#[command(flatten)]`), so
//! a flag is declared, documented and defaulted once.

use clap::Args;
use nasrs::data::{default_data_dir, load, Dataset, DatasetKind};
use nasrs::Result;
use std::path::PathBuf;

/// The dataset a command trains or searches on.
#[derive(Args)]
pub(crate) struct DataArgs {
    /// Data folder (default: the bundled MNIST subset).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cifar10 | mnist | fashion-mnist | synthetic
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
}

impl DataArgs {
    /// The dataset's kind (an unknown name is refused naming `--dataset`).
    pub fn kind(&self) -> Result<DatasetKind> {
        self.dataset.parse()
    }

    /// The data folder: `--data`, or the bundled one.
    pub fn dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(default_data_dir)
    }

    /// Loads the training and test sets from the data folder.
    pub fn load(&self) -> Result<(Dataset, Dataset)> {
        load(self.kind()?, &self.dir())
    }
}

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
