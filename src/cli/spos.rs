//! `nasrs search spos`: Single Path One-Shot on the DARTS space: train the supernet one
//! sampled path per batch, then search it by evolution (or at random) with inherited weights
//! and recalibrated batch norms, into a run folder.

use super::args::{DeviceArgs, RunFolderArgs};
use super::{check_memory, in_pool, open_device, resume_notice};
use clap::Args;
use nasrs::data::{default_data_dir, load, DatasetKind};
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::run_dir::Start;
use nasrs::nas::sizing;
use nasrs::nas::spos::run::{SposRun, SposRunConfig, SposSearch};
use nasrs::nas::spos::{EvolutionConfig, Sampling, SposHyper};
use nasrs::nas::{Primitive, SearchConfig};
use nasrs::{Error, Result};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct SposArgs {
    /// The search space (darts; nb201 follows).
    #[arg(long, default_value = "darts")]
    space: String,
    /// Data folder (default: the bundled MNIST subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cifar10 | mnist | fashion-mnist | synthetic
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Supernet training epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Initial channels C of the supernet.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Cells L (reductions at L/3 and 2L/3).
    #[arg(long, default_value_t = 5)]
    layers: usize,
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Use only the first N training images (0 = all); half trains the supernet, half scores.
    #[arg(long, default_value_t = 2000)]
    train_limit: usize,
    /// Learning rate (cosine-annealed to 0.001).
    #[arg(long, default_value_t = 0.025)]
    lr: f64,
    /// uniform (SPOS) | fair (every op of every edge trained equally often)
    #[arg(long, default_value = "uniform")]
    sampling: String,
    /// evolution | random
    #[arg(long, default_value = "evolution")]
    search: String,
    #[arg(long, default_value_t = 50)]
    population: usize,
    #[arg(long, default_value_t = 10)]
    parents: usize,
    #[arg(long, default_value_t = 25)]
    mutations: usize,
    #[arg(long, default_value_t = 25)]
    crossovers: usize,
    #[arg(long, default_value_t = 0.1)]
    mutation_prob: f64,
    #[arg(long, default_value_t = 20)]
    generations: usize,
    /// Architectures scored by `--search random`.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Training batches each scored path's BN statistics are recalibrated on (0: keep the
    /// supernet's).
    #[arg(long, default_value_t = 4)]
    recalibration_batches: usize,
    /// Train and search only paths with at least this many weights.
    #[arg(long)]
    params_min: Option<usize>,
    /// Train and search only paths with at most this many weights.
    #[arg(long)]
    params_max: Option<usize>,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    run: RunFolderArgs,
}

pub(crate) fn spos(a: SposArgs) -> Result<()> {
    let threads = a.dev.threads;
    in_pool(threads, || spos_in_pool(a))
}

fn spos_in_pool(a: SposArgs) -> Result<()> {
    if a.space != "darts" {
        return Err(Error::invalid(
            "--space",
            format!("'{}' (SPOS runs on the darts space so far)", a.space),
        ));
    }
    let kind: DatasetKind = a.dataset.parse()?;
    let dir = a.data.clone().unwrap_or_else(default_data_dir);
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    let device = open_device(&a.dev.device)?;
    let (train, _test) = load(kind, &dir)?;
    let model = SearchConfig::darts(a.channels, a.layers, train.classes, train.c)
        .ops(Primitive::ALL.to_vec());
    let search = match a.search.as_str() {
        "evolution" => SposSearch::Evolution(EvolutionConfig {
            population: a.population,
            parents: a.parents,
            mutations: a.mutations,
            crossovers: a.crossovers,
            mutation_prob: a.mutation_prob,
            generations: a.generations,
        }),
        "random" => SposSearch::Random(a.samples),
        other => {
            return Err(Error::invalid(
                "--search",
                format!("'{other}' (expected evolution or random)"),
            ))
        }
    };
    let config = SposRunConfig {
        dataset: kind.name().to_string(),
        model,
        hyper: SposHyper {
            lr_max: a.lr,
            ..SposHyper::default()
        },
        sampling: Sampling::parse(&a.sampling)?,
        epochs: a.epochs,
        batch: a.batch,
        seed: a.seed,
        train_portion: 0.5,
        train_limit: (a.train_limit > 0).then_some(a.train_limit),
        augment: kind == DatasetKind::Cifar10,
        search,
        recalibration_batches: a.recalibration_batches,
        params_range: match (a.params_min, a.params_max) {
            (None, None) => None,
            (lo, hi) => {
                let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(usize::MAX));
                if lo > hi {
                    return Err(Error::invalid(
                        "--params-min",
                        format!("{lo} is above --params-max {hi}"),
                    ));
                }
                Some((lo, hi))
            }
        },
    };
    let out = a
        .run
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/spos-{}-s{}", kind.name(), a.seed)));
    eprintln!(
        "nasrs search spos: {} on {}, run folder {}",
        kind.name(),
        device.name(),
        out.display()
    );
    let samples = config.train_limit.unwrap_or(train.n).min(train.n);
    // A path's step needs less than the whole supernet's DARTS step: this bounds it.
    check_memory(
        &format!(
            "SPOS supernet C={} L={}, batch {} of {}x{} images",
            a.channels, a.layers, a.batch, train.h, train.w
        ),
        &device,
        |budget| {
            let batch = a.batch.min(samples / 2).max(1);
            sizing::search_step_bytes(
                &config.model,
                &DartsHyper::default(),
                batch,
                train.h,
                train.w,
                budget,
            )
        },
    )?;
    let best = with_backend!(device, |be| {
        let run = SposRun::new(be, config, &out)?;
        resume_notice(start, &out);
        run.run(&train, start)?
    });
    let g = best.arch.to_genotype();
    out!("{}", g.to_json());
    eprintln!(
        "best: validation accuracy {:.4} (inherited weights), found at query {} (generation {})",
        best.score, best.query, best.generation
    );
    eprintln!("{}", g.to_python());
    eprintln!(
        "written to {} and {}; train it with: nasrs train --genotype {}",
        out.join("best.json").display(),
        out.join("genotype.py").display(),
        out.join("best.json").display()
    );
    Ok(())
}
