//! `nasrs train`: train a genotype's evaluation network from scratch into a run folder.

use super::args::{DeviceArgs, RunFolderArgs};
use super::progress::EpochBar;
use super::{check_memory, in_pool, open_device, resume_notice};
use clap::Args;
use nasrs::data::{default_data_dir, load, DatasetKind};
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig};
use nasrs::nas::run_dir::Start;
use nasrs::nas::sizing;
use nasrs::nas::train_run::{TrainHyper, TrainRun, TrainRunConfig, MODEL};
use nasrs::Result;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// A built-in (DARTS_V1, DARTS_V2, PC_DARTS, PDARTS, ...), a genotype.json or
    /// genotype.py written by `nasrs search`, an inline `Genotype(normal=[...], ...)`, or
    /// FILE:NAME in a genotypes.py.
    #[arg(long)]
    genotype: String,
    /// Data folder (default: the bundled MNIST subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cifar10 | mnist | fashion-mnist | synthetic
    #[arg(long, default_value = "mnist")]
    dataset: String,
    #[arg(long, default_value_t = 600)]
    epochs: usize,
    #[arg(long, default_value_t = 96)]
    batch: usize,
    /// Initial channels C.
    #[arg(long, default_value_t = 36)]
    channels: usize,
    /// Cells L (reductions at L/3 and 2L/3).
    #[arg(long, default_value_t = 20)]
    layers: usize,
    /// Add the auxiliary head after cell 2L/3 (needs 32x32 images).
    #[arg(long)]
    auxiliary: bool,
    /// Weight of the auxiliary loss.
    #[arg(long, default_value_t = 0.4)]
    auxiliary_weight: f64,
    /// Cutout side in pixels, 0 = off (default: 16 on CIFAR-10, off elsewhere).
    #[arg(long)]
    cutout: Option<usize>,
    /// Final drop-path probability (raised linearly from 0 over the epochs).
    #[arg(long, default_value_t = 0.2)]
    drop_path: f64,
    /// Initial learning rate (cosine-annealed to 0).
    #[arg(long, default_value_t = 0.025)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    /// Use only the first N test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    run: RunFolderArgs,
}

pub(crate) fn train(a: TrainArgs) -> Result<()> {
    let threads = a.dev.threads;
    in_pool(threads, || train_in_pool(a))
}

fn train_in_pool(a: TrainArgs) -> Result<()> {
    let kind: DatasetKind = a.dataset.parse()?;
    let dir = a.data.clone().unwrap_or_else(default_data_dir);
    let genotype = resolve_genotype(&a.genotype)?;
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    let device = open_device(&a.dev.device)?;
    let (train, test) = load(kind, &dir)?;
    let cifar = kind == DatasetKind::Cifar10;
    let cutout = a.cutout.unwrap_or(if cifar { 16 } else { 0 });
    let augment = nasrs::data::Augment {
        crop_pad: cifar.then_some(4),
        flip: cifar,
        cutout: (cutout > 0).then_some(cutout),
    };
    let config = TrainRunConfig {
        dataset: kind.name().to_string(),
        model: EvalConfig {
            genotype,
            channels: a.channels,
            layers: a.layers,
            classes: train.classes,
            in_channels: train.c,
            auxiliary: a.auxiliary,
        },
        hyper: TrainHyper {
            lr_max: a.lr,
            drop_path: a.drop_path,
            auxiliary_weight: a.auxiliary_weight,
            ..TrainHyper::default()
        },
        epochs: a.epochs,
        batch: a.batch,
        seed: a.seed,
        augment,
        train_limit: (a.train_limit > 0).then_some(a.train_limit),
        test_limit: (a.test_limit > 0).then_some(a.test_limit),
    };
    let out = a
        .run
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/train-{}-s{}", kind.name(), a.seed)));
    eprintln!(
        "nasrs train: {} ({} training / {} test images of {}) on {}, run folder {}",
        kind.name(),
        config.train_limit.unwrap_or(train.n).min(train.n),
        config.test_limit.unwrap_or(test.n).min(test.n),
        dir.display(),
        device.name(),
        out.display()
    );
    config.model.check_image_size(train.h, train.w)?;
    let samples = config.train_limit.unwrap_or(train.n).min(train.n);
    check_memory(
        &format!(
            "training C={} L={}{}, batch {} of {}x{} images",
            a.channels,
            a.layers,
            if a.auxiliary {
                " with the auxiliary head"
            } else {
                ""
            },
            a.batch,
            train.h,
            train.w
        ),
        &device,
        |budget| {
            let batch = a.batch.min(samples).max(1);
            sizing::train_step_bytes(
                &config.model,
                &config.hyper,
                batch,
                train.h,
                train.w,
                budget,
            )
        },
    )?;
    let history = with_backend!(device, |be| {
        let net = nasrs::nas::eval_model::EvalNetwork::new(&be, config.model.clone(), config.seed)?;
        eprintln!(
            "network: C={} L={} auxiliary={} {} weights ({:.6}M, auxiliary head excluded)",
            a.channels,
            a.layers,
            a.auxiliary,
            net.num_weights(),
            net.num_weights() as f64 / 1e6
        );
        drop(net);
        let run = TrainRun::new(be, config, &out)?;
        resume_notice(start, &out);
        run.run(&train, &test, start, &mut EpochBar::default())?
    });
    if let Some(m) = history.last() {
        out!(
            "final test accuracy {:.2}% (loss {:.4}) after {} epochs",
            100.0 * m.test_acc,
            m.test_loss,
            history.len()
        );
    }
    eprintln!("model written to {}", out.join(MODEL).display());
    Ok(())
}
