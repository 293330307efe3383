//! `nasrs eval`: test accuracy, per-class accuracy and the confusion matrix of a trained
//! network (nasrs or PyTorch checkpoint; DARTS or NAS-Bench-201, as the file says), and
//! optionally its logits on the first images.

use super::args::DeviceArgs;
use super::{in_pool, open_device};
use clap::Args;
use nasrs::backend::Backend;
use nasrs::data::{default_data_dir, load, resize_dataset, DatasetKind};
use nasrs::nas::classifier::{Classifier, NetworkConfig};
use nasrs::nas::darts::DeviceBatch;
use nasrs::nas::eval_model::resolve_genotype;
use nasrs::nas::evaluate::{evaluate, load_any_network, LoadedNetwork, ModelMeta};
use nasrs::nas::sizing;
use nasrs::{Error, Result};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// model.safetensors or checkpoint.safetensors of `nasrs train` (either space), or a
    /// PyTorch DARTS state_dict in safetensors.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data folder (default: the bundled MNIST subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cifar10 | mnist | fashion-mnist | synthetic (default: the one the checkpoint names).
    #[arg(long)]
    dataset: Option<String>,
    /// The genotype, for checkpoints without nasrs metadata (PyTorch state_dicts).
    #[arg(long)]
    genotype: Option<String>,
    #[arg(long, default_value_t = 96)]
    batch: usize,
    /// Also write the first --logits-count test images and their logits to this safetensors
    /// file (for tools/check_eval_checkpoint.py).
    #[arg(long)]
    logits: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    logits_count: usize,
    /// Replace an existing --logits file.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dev: DeviceArgs,
}

pub(crate) fn eval(a: EvalArgs) -> Result<()> {
    let threads = a.dev.threads;
    in_pool(threads, || eval_in_pool(a))
}

fn eval_in_pool(a: EvalArgs) -> Result<()> {
    let genotype = a.genotype.as_deref().map(resolve_genotype).transpose()?;
    if a.batch == 0 {
        return Err(Error::invalid("--batch", "must be at least 1"));
    }
    if let Some(path) = &a.logits {
        // Every file the command reads: the checkpoint, a genotype file, the data files.
        let data_dir = a.data.clone().unwrap_or_else(default_data_dir);
        let mut inputs = vec![a.checkpoint.clone()];
        inputs.extend(a.genotype.as_ref().map(PathBuf::from));
        if let Ok(entries) = std::fs::read_dir(&data_dir) {
            inputs.extend(entries.flatten().map(|e| e.path()));
        }
        let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
        nasrs::io::check_output(path, "--logits", &inputs, a.force)?;
    }
    let device = open_device(&a.dev.device)?;
    let available = device.available_memory()?;
    let device_name = device.name();
    with_backend!(device, |be| {
        match load_any_network(&be, &a.checkpoint, genotype)? {
            LoadedNetwork::Darts(net, meta) => report(&a, &be, *net, meta, available, &device_name),
            LoadedNetwork::Nb201(net, meta) => report(&a, &be, *net, meta, available, &device_name),
            LoadedNetwork::MbConv(net, meta) => {
                report(&a, &be, *net, meta, available, &device_name)
            }
        }
    })
}

/// Evaluates `net` (read from `a.checkpoint`, described by `meta`) and prints the report.
fn report<B: Backend, N: Classifier<B>>(
    a: &EvalArgs,
    be: &B,
    mut net: N,
    meta: ModelMeta<N::Config>,
    available: Option<u64>,
    device_name: &str,
) -> Result<()> {
    let dataset = match (&a.dataset, &meta.dataset) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(Error::invalid(
                "--dataset",
                format!(
                    "{} does not say which dataset it was trained on; pass --dataset",
                    a.checkpoint.display()
                ),
            ))
        }
    };
    let kind: DatasetKind = dataset.parse()?;
    let dir = a.data.clone().unwrap_or_else(default_data_dir);
    let (_train, test) = load(kind, &dir)?;
    // A network trained at another resolution is tested at it (`nasrs train --resolution`).
    let test = match meta.resolution {
        Some(side) => resize_dataset(&test, side)?,
        None => test,
    };
    let config = net.config().clone();
    if test.c != config.in_channels() {
        return Err(Error::invalid(
            "--dataset",
            format!(
                "{} has {} channels, the network expects {}",
                kind.name(),
                test.c,
                config.in_channels()
            ),
        ));
    }
    config.check_image_size(test.h, test.w)?;
    let batch = a.batch.min(test.n).max(1);
    let need = sizing::eval_bytes(&config, batch, test.h, test.w, available)?;
    sizing::check_fits(
        &format!(
            "evaluating {} ({}), batch {batch} of {}x{} images",
            a.checkpoint.display(),
            config.describe(),
            test.h,
            test.w
        ),
        need,
        available,
        device_name,
    )?;
    let report = evaluate(be, &mut net, &test, a.batch).map_err(|e| match e {
        Error::NonFinite(what) => Error::NonFinite(format!("{}: {what}", a.checkpoint.display())),
        e => e,
    })?;
    if let Some(path) = &a.logits {
        let n = a.logits_count.clamp(1, test.n);
        let idx: Vec<usize> = (0..n).collect();
        let batch = nasrs::data::SequentialBatches::over(&test, idx, n)?
            .next()
            .ok_or_else(|| Error::invalid("--logits-count", "no test images"))?;
        let db = DeviceBatch::from_batch(be, &batch, config.classes())?;
        let logits = nasrs::nas::evaluate::eval_logits(be, &mut net, &db.images)?;
        let k = config.classes();
        let tensors = std::collections::BTreeMap::from([
            (
                "images".to_string(),
                nasrs::io::HostTensor {
                    shape: batch.dims().shape().dims().to_vec(),
                    data: batch.images.clone(),
                },
            ),
            (
                "logits".to_string(),
                nasrs::io::HostTensor {
                    shape: vec![n, k],
                    data: logits.iter().map(|&v| v as f32).collect(),
                },
            ),
        ]);
        nasrs::io::save_safetensors(path, &tensors, Default::default())?;
        eprintln!(
            "{n} test images and their logits written to {}",
            path.display()
        );
    }
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "dataset": kind.name(),
            "space": <N::Config as NetworkConfig>::SPACE,
            "model": config,
            "test": report,
            "per_class_accuracy": report.per_class(),
        });
        out!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| Error::invalid("json", e.to_string()))?
        );
        return Ok(());
    }
    out!(
        "{}: {} test images of {}, eval-mode batch norm",
        a.checkpoint.display(),
        report.count,
        kind.name()
    );
    out!(
        "test accuracy {:.2}%  loss {:.4}",
        100.0 * report.accuracy,
        report.loss
    );
    out!("per-class accuracy:");
    for (c, acc) in report.per_class().iter().enumerate() {
        let total: usize = report.confusion[c].iter().sum();
        match acc {
            Some(acc) => out!("  class {c:>3}: {:>6.2}%  ({total} images)", 100.0 * acc),
            None => out!("  class {c:>3}:      -  (no images)"),
        }
    }
    out!("confusion matrix (rows: true class, columns: predicted):");
    let k = report.confusion.len();
    let mut header = String::from("      ");
    for c in 0..k {
        header += &format!("{c:>6}");
    }
    out!("{header}");
    for (c, row) in report.confusion.iter().enumerate() {
        let cells: String = row.iter().map(|v| format!("{v:>6}")).collect();
        out!("{c:>6}{cells}");
    }
    Ok(())
}
