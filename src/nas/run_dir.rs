//! A run folder's life cycle, shared by search and training runs: what a new run, `--resume`
//! and `--force` may do with a folder that already exists, and when the files of an earlier
//! run give way to the new one's.
//!
//! The rules (README "Reliability"):
//! - a new run starts only in a folder that is absent or empty; a folder holding an earlier
//!   run is refused with the folder named and the way out (`--resume`, `--force`, another
//!   `--out`);
//! - a folder holding any file this kind of run does not write (the user's, another
//!   command's run) is refused even with `--force`: replacing would leave a mixture;
//!   only resuming from a checkpoint there is allowed;
//! - `--resume` continues from the folder's checkpoint, and refuses a folder holding run files
//!   but no checkpoint (they belong to a run that cannot be continued);
//! - `--force` starts over, but the earlier run's files stay untouched until the new run's
//!   first epoch is saved: a new run that fails early loses nothing;
//! - every start removes the temp files a killed write left behind.
//!
//! A folder is consistent at every moment: `config.json` is written with the checkpoint it
//! describes, never before the first epoch.

use crate::error::{Error, Result};
use crate::io::remove_stale_temps;
use std::fs;
use std::path::{Path, PathBuf};

/// The per-epoch metrics every run writes, one JSON object per line.
pub const METRICS: &str = "metrics.jsonl";

/// How a run treats its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run in an absent or empty folder.
    New,
    /// Continue from the folder's checkpoint; a new run if the folder is absent or empty.
    Resume,
    /// A new run that replaces whatever the folder holds (`--force`).
    Replace,
}

impl Start {
    /// The start the command-line flags `--resume` and `--force` ask for.
    pub fn from_flags(resume: bool, force: bool) -> Result<Start> {
        match (resume, force) {
            (true, true) => Err(Error::invalid(
                "--force",
                "cannot be combined with --resume (one continues the run, the other replaces it)",
            )),
            (true, false) => Ok(Start::Resume),
            (false, true) => Ok(Start::Replace),
            (false, false) => Ok(Start::New),
        }
    }
}

/// A run folder: its path and the names of the files a run writes there.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub path: PathBuf,
    /// Every file the run writes, the checkpoint included.
    files: &'static [&'static str],
    checkpoint: &'static str,
    /// The earlier run's files still wait to be removed (`Start::Replace` before the first
    /// epoch is saved).
    replacing: bool,
}

impl RunDir {
    /// Opens `path` for a run that writes `files` (among them `checkpoint`), as `start`
    /// asks; returns the folder and whether to resume from its checkpoint.
    pub fn open(
        path: &Path,
        files: &'static [&'static str],
        checkpoint: &'static str,
        start: Start,
    ) -> Result<(RunDir, bool)> {
        if path.exists() && !path.is_dir() {
            return Err(Error::invalid(
                "--out",
                format!("{} is a file, not a run folder", path.display()),
            ));
        }
        fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        remove_stale_temps(path, files)?;
        let (ours, others) = Self::contents(path, files)?;
        let has_checkpoint = ours.iter().any(|f| f == checkpoint);
        let describe = |names: &[String]| names.join(", ");
        let resume = match start {
            Start::Resume if has_checkpoint => true,
            Start::Resume if !ours.is_empty() => {
                return Err(Error::invalid(
                    "--resume",
                    format!(
                        "{} holds run files ({}) but no {checkpoint} to continue from; \
                         start over with --force, or choose another --out",
                        path.display(),
                        describe(&ours)
                    ),
                ))
            }
            Start::New if !ours.is_empty() => {
                return Err(Error::invalid(
                    "--out",
                    format!(
                        "{} already holds a run ({}); continue it with --resume, replace it \
                         with --force, or choose another --out",
                        path.display(),
                        describe(&ours)
                    ),
                ))
            }
            _ if !others.is_empty() => {
                return Err(Error::invalid(
                    "--out",
                    format!(
                        "{} is not empty and not this command's run folder (it holds {}); \
                         choose another --out",
                        path.display(),
                        describe(&others)
                    ),
                ))
            }
            _ => false,
        };
        let dir = RunDir {
            path: path.to_path_buf(),
            files,
            checkpoint,
            replacing: start == Start::Replace && !ours.is_empty(),
        };
        Ok((dir, resume))
    }

    /// The run files (names from `files`) and the other entries of `path`, each sorted.
    fn contents(path: &Path, files: &[&str]) -> Result<(Vec<String>, Vec<String>)> {
        let (mut ours, mut others) = (Vec::new(), Vec::new());
        for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let name = entry
                .map_err(|e| Error::io(path, e))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if files.contains(&name.as_str()) {
                ours.push(name);
            } else {
                others.push(name);
            }
        }
        ours.sort();
        others.sort();
        Ok((ours, others))
    }

    pub fn join(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.join(self.checkpoint)
    }

    /// The wall-clock seconds of each epoch as `metrics.jsonl` records them (checkpoints
    /// keep no times, so that resumed and uninterrupted runs write the same bytes); None for
    /// an epoch the file does not say, or with no readable file (it is rewritten anyway).
    pub fn epoch_seconds(&self) -> Vec<Option<f64>> {
        let Ok(text) = fs::read_to_string(self.join(METRICS)) else {
            return Vec::new();
        };
        text.lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()?
                    .get("seconds")?
                    .as_f64()
            })
            .collect()
    }

    /// What a run stopped by an error leaves, for the end of its message: the last good
    /// checkpoint, or the folder as it was when no epoch finished.
    pub fn kept_note(&self, epochs_done: usize) -> String {
        match epochs_done {
            0 => format!("; no epoch finished, {} is as it was", self.path.display()),
            n => format!(
                "; the last good checkpoint (epoch {n}) is kept in {}",
                self.path.display()
            ),
        }
    }

    /// Called after each epoch's files are written (`written`): the first time after a
    /// `--force` start, removes the earlier run's files the new run has not rewritten (a
    /// final model that no longer matches, say).
    pub fn epoch_saved(&mut self, written: &[&str]) -> Result<()> {
        if !std::mem::take(&mut self.replacing) {
            return Ok(());
        }
        for file in self.files.iter().filter(|f| !written.contains(f)) {
            let path = self.join(file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Ok(())
    }
}
