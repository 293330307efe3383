//! `nasrs search darts`: a DARTS search on a dataset into a run folder.

use super::args::{DataArgs, DeviceArgs, RunFolderArgs};
use super::progress::EpochBar;
use super::{check_memory, in_pool, open_device, resume_notice};
use clap::Args;
use nasrs::data::DatasetKind;
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{SearchRun, SearchRunConfig};
use nasrs::nas::sizing;
use nasrs::nas::{Primitive, SearchConfig, SearchNetwork};
use nasrs::Result;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct SearchArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Initial channels C.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Cells L (reductions at L/3 and 2L/3).
    #[arg(long, default_value_t = 5)]
    layers: usize,
    /// Intermediate nodes per cell.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Comma-separated op set (default: all 8 DARTS primitives).
    #[arg(long)]
    ops: Option<String>,
    /// 1 = first-order DARTS, 2 = second-order (unrolled).
    #[arg(long, default_value_t = 1)]
    order: u8,
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 2000)]
    train_limit: usize,
    /// Weight learning rate (cosine-annealed to 0.001).
    #[arg(long, default_value_t = 0.025)]
    lr: f64,
    /// Architecture (alpha) learning rate.
    #[arg(long, default_value_t = 3e-4)]
    arch_lr: f64,
    /// Storage of the activations kept for backward: f32, or bf16 (half the memory; f32
    /// arithmetic, weights and gradients).
    #[arg(long, default_value = "f32")]
    activations: String,
    /// Let the architecture step's forwards update the BN running statistics, as PyTorch's
    /// DARTS does (2 forwards per first-order iteration, 4 per second-order); off by default:
    /// weights, alphas and losses are the same either way, only running statistics differ.
    #[arg(long)]
    arch_step_updates_bn: bool,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    run: RunFolderArgs,
}

pub(crate) fn search(a: SearchArgs) -> Result<()> {
    let threads = a.dev.threads;
    in_pool(threads, || search_in_pool(a))
}

fn search_in_pool(a: SearchArgs) -> Result<()> {
    let kind = a.data.kind()?;
    let ops = match &a.ops {
        Some(s) => Primitive::parse_list(s)?,
        None => Primitive::ALL.to_vec(),
    };
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    let device = open_device(&a.dev.device)?;
    let (train, _test) = a.data.load()?;
    let mut model = SearchConfig::darts(a.channels, a.layers, train.classes, train.c);
    model.steps = a.nodes;
    model.multiplier = a.nodes;
    model.ops = ops;
    let hyper = DartsHyper {
        order: a.order,
        lr_max: a.lr,
        arch_lr: a.arch_lr,
        activations: a.activations.parse()?,
        arch_step_updates_bn: a.arch_step_updates_bn,
        ..DartsHyper::default()
    };
    let config = SearchRunConfig {
        dataset: kind.name().to_string(),
        model,
        hyper,
        epochs: a.epochs,
        batch: a.batch,
        seed: a.seed,
        train_portion: 0.5,
        train_limit: (a.train_limit > 0).then_some(a.train_limit),
        augment: kind == DatasetKind::Cifar10,
    };
    let out = a
        .run
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/search-{}-s{}", kind.name(), a.seed)));
    eprintln!(
        "nasrs search darts: {} ({} training images of {}) on {}, run folder {}",
        kind.name(),
        config.train_limit.unwrap_or(train.n).min(train.n),
        a.data.dir().display(),
        device.name(),
        out.display()
    );
    let samples = config.train_limit.unwrap_or(train.n).min(train.n);
    check_memory(
        &format!(
            "search C={} L={} with {} nodes and {} ops, batch {} of {}x{} images",
            a.channels,
            a.layers,
            a.nodes,
            config.model.ops.len(),
            a.batch,
            train.h,
            train.w
        ),
        &device,
        |budget| {
            let batch = a.batch.min(samples / 2).max(1);
            sizing::search_step_bytes(
                &config.model,
                &config.hyper,
                batch,
                train.h,
                train.w,
                budget,
            )
        },
    )?;
    let genotype = with_backend!(device, |be| {
        let net_weights = SearchNetwork::new(&be, config.model.clone(), config.seed)?.num_weights();
        eprintln!(
            "supernet: C={} L={} {} ops, {} weights, order {}, {} activations",
            a.channels,
            a.layers,
            config.model.ops.len(),
            net_weights,
            a.order,
            config.hyper.activations
        );
        let run = SearchRun::new(be, config, &out)?;
        resume_notice(start, &out);
        run.run(&train, start, &mut EpochBar::default())?
    });
    out!("{}", genotype.to_json());
    eprintln!("{}", genotype.to_python());
    eprintln!(
        "genotype written to {} and {}",
        out.join("genotype.json").display(),
        out.join("genotype.py").display()
    );
    Ok(())
}
