//! `nasrs trial --spec FILE --result FILE`: one training trial as a process (what the
//! training evaluator's executors launch): reads the spec, trains, writes the result JSON
//! atomically. A trial that cannot run or fails writes a failed result with the message
//! (and exits non-zero), so whoever launched it learns why from the file alone.

use super::{in_pool, open_device};
use clap::Args;
use nasrs::io::{atomic_write_json, check_output};
use nasrs::nas::multi_trial::trial::{run_trial, TrialResult, TrialSpec};
use nasrs::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub(crate) struct TrialArgs {
    /// The trial's spec (JSON: space, arch, channels, layers, dataset, data, train_limit,
    /// valid_fraction, epochs, batch, seed, device, threads; optional resolution (images resized to
    /// that side); mbconv: width_mult, depth_mult).
    #[arg(long)]
    spec: PathBuf,
    /// Where the result goes (JSON: status, valid_acc, epochs, seconds, curve, error);
    /// replaced if it exists.
    #[arg(long)]
    result: PathBuf,
}

pub(crate) fn trial(a: TrialArgs) -> Result<()> {
    check_output(&a.result, "--result", &[&a.spec], true)?;
    let started = Instant::now();
    let outcome = TrialSpec::read(&a.spec).and_then(|spec| {
        let threads = spec.threads;
        in_pool(threads, || {
            let device = open_device(&spec.device).map_err(|e| {
                Error::invalid(
                    format!("{}: field 'device'", a.spec.display()),
                    e.to_string(),
                )
            })?;
            with_backend!(device, |be| run_trial(&be, &spec))
        })
    });
    match outcome {
        Ok(result) => {
            atomic_write_json(&a.result, &result)?;
            out!("{}", super::to_json(&result)?);
            Ok(())
        }
        Err(e) => {
            let failed = TrialResult::failed(e.to_string(), started.elapsed().as_secs_f64());
            atomic_write_json(&a.result, &failed)?;
            Err(e)
        }
    }
}
