//! `nasrs search spos`: Single Path One-Shot on the DARTS or the NB201 space: train the
//! supernet one sampled path per batch, then search it by evolution (or at random) with
//! inherited weights and recalibrated batch norms, into a run folder.

use super::args::{DataArgs, DeviceArgs, RunFolderArgs};
use super::progress::EpochBar;
use super::{check_memory, in_pool, open_device, resume_notice};
use clap::Args;
use nasrs::data::Dataset;
use nasrs::data::DatasetKind;
use nasrs::nas::classifier::NetworkConfig;
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::multi_trial::StrategyConfig;
use nasrs::nas::nb201_model::Nb201SupernetConfig;
use nasrs::nas::run_dir::Start;
use nasrs::nas::sizing;
use nasrs::nas::space::SearchSpace;
use nasrs::nas::spos::run::{Phase, SposRun, SposRunConfig, SposSearch};
use nasrs::nas::spos::{EvolutionConfig, PathLimits, Sampling, SposHyper, SupernetConfig};
use nasrs::nas::{Primitive, SearchConfig};
use nasrs::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct SposArgs {
    /// darts | nb201
    #[arg(long, default_value = "darts")]
    space: String,
    /// all (train, then search) | train (the supernet only) | search (the supernet a
    /// finished train phase left in --out; may change the search settings)
    #[arg(long, default_value = "all")]
    phase: String,
    #[command(flatten)]
    data: DataArgs,
    /// Supernet training epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Initial channels C of the supernet (default: 4 for darts, 8 for nb201).
    #[arg(long)]
    channels: Option<usize>,
    /// darts: cells L (reductions at L/3 and 2L/3; default 5). nb201: cells per stage N
    /// (default 1).
    #[arg(long)]
    layers: Option<usize>,
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
    params_min: Option<u64>,
    /// Train and search only paths with at most this many weights.
    #[arg(long)]
    params_max: Option<u64>,
    /// Train and search only paths of at least this many forward FLOPs per image (as
    /// `nasrs model` counts them).
    #[arg(long)]
    flops_min: Option<u64>,
    /// Train and search only paths of at most this many forward FLOPs per image.
    #[arg(long)]
    flops_max: Option<u64>,
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
    let kind = a.data.kind()?;
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    let phase = Phase::parse(&a.phase)?;
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
    let sampling = Sampling::parse(&a.sampling)?;
    let limits = PathLimits {
        params: PathLimits::range(a.params_min, a.params_max, "--params-min", "--params-max")?,
        flops: PathLimits::range(a.flops_min, a.flops_max, "--flops-min", "--flops-max")?,
    };
    let space = a.space.as_str();
    if !matches!(space, "darts" | "nb201") {
        return Err(Error::invalid(
            "--space",
            format!("'{space}' (expected darts or nb201)"),
        ));
    }
    let device = open_device(&a.dev.device)?;
    let (train, _test) = a.data.load()?;
    let out =
        a.run.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!("runs/spos-{space}-{}-s{}", kind.name(), a.seed))
        });
    eprintln!(
        "nasrs search spos: {space} space, {} on {}, run folder {}",
        kind.name(),
        device.name(),
        out.display()
    );
    // The training half of the samples used (--train-limit 0: all) bounds the batch.
    let used = match a.train_limit {
        0 => train.n,
        n => n.min(train.n),
    };
    let samples = used.max(1);
    let batch = a.batch.min(samples / 2).max(1);
    let (h, w) = (train.h, train.w);
    if space == "nb201" {
        let model = Nb201SupernetConfig {
            channels: a.channels.unwrap_or(8),
            cells_per_stage: a.layers.unwrap_or(1),
            classes: train.classes,
            in_channels: train.c,
        };
        model.validate()?;
        // A path's step needs at most what the widest path's network needs.
        let need = model.widest().memory_lower_bound(batch, h, w)?;
        check_memory(&request(&a, &model, h, w), &device, |_| Ok(need))?;
        let config = run_config(&a, kind, model, search, sampling, limits);
        let found = with_backend!(device, |be| run(be, config, &out, &train, start, phase)?);
        let Some(best) = found else {
            return trained(&out);
        };
        let arch = best.arch.to_arch_string();
        out!("{arch}");
        report(&best.score, best.query, best.generation);
        eprintln!(
            "written to {}; train it with: nasrs train --space nb201 --arch '{arch}'",
            out.join("arch.txt").display()
        );
        return Ok(());
    }
    let model = SearchConfig::darts(
        a.channels.unwrap_or(4),
        a.layers.unwrap_or(5),
        train.classes,
        train.c,
    )
    .ops(Primitive::ALL.to_vec());
    // A path's step needs less than the whole supernet's DARTS step: this bounds it.
    check_memory(&request(&a, &model, h, w), &device, |budget| {
        sizing::search_step_bytes(&model, &DartsHyper::default(), batch, h, w, budget)
    })?;
    let config = run_config(&a, kind, model, search, sampling, limits);
    let found = with_backend!(device, |be| run(be, config, &out, &train, start, phase)?);
    let Some(best) = found else {
        return trained(&out);
    };
    let g = best.arch.to_genotype();
    out!("{}", g.to_json());
    report(&best.score, best.query, best.generation);
    eprintln!("{}", g.to_python());
    eprintln!(
        "written to {} and {}; train it with: nasrs train --genotype {}",
        out.join("best.json").display(),
        out.join("genotype.py").display(),
        out.join("best.json").display()
    );
    Ok(())
}

/// What the memory check names: the supernet and the batch.
fn request<M: SupernetConfig>(a: &SposArgs, model: &M, h: usize, w: usize) -> String {
    format!(
        "SPOS supernet {}, batch {} of {h}x{w} images",
        model.describe(),
        a.batch
    )
}

fn run_config<M: SupernetConfig>(
    a: &SposArgs,
    kind: DatasetKind,
    model: M,
    search: SposSearch,
    sampling: Sampling,
    limits: PathLimits,
) -> SposRunConfig<M> {
    SposRunConfig {
        space: M::Space::default().name().to_string(),
        dataset: kind.name().to_string(),
        model,
        hyper: SposHyper {
            lr_max: a.lr,
            ..SposHyper::default()
        },
        sampling,
        epochs: a.epochs,
        batch: a.batch,
        seed: a.seed,
        train_portion: 0.5,
        train_limit: (a.train_limit > 0).then_some(a.train_limit),
        augment: kind == DatasetKind::Cifar10,
        search,
        recalibration_batches: a.recalibration_batches,
        limits,
    }
}

fn run<B: nasrs::backend::Backend, M: SupernetConfig>(
    be: B,
    config: SposRunConfig<M>,
    out: &Path,
    train: &Dataset,
    start: Start,
    phase: Phase,
) -> Result<Option<nasrs::nas::spos::Scored<<M::Space as SearchSpace>::Arch>>> {
    let run = SposRun::new(be, config, out)?;
    if phase != Phase::Search {
        resume_notice(start, out);
    }
    run.run_phase(train, start, phase, &mut EpochBar::default())
}

/// After `--phase train`: where the supernet is and how to search it.
fn trained(out: &Path) -> Result<()> {
    eprintln!(
        "supernet trained: {}; search it with the same flags and --phase search",
        out.join(nasrs::nas::spos::run::CHECKPOINT).display()
    );
    Ok(())
}

fn report(score: &f64, query: usize, generation: usize) {
    eprintln!(
        "best: validation accuracy {score:.4} (inherited weights), found at query {query} \
         (generation {generation})"
    );
}

/// `nasrs search random|evolution|reinforce --evaluator supernet --supernet DIR`: the search
/// phase of the SPOS run in `dir` (its space, sizes and data split from its `config.json`)
/// with a multi-trial strategy; the search files are written to `dir`.
pub(crate) fn search_supernet(
    dir: &Path,
    data: &super::train_search::TrainEvalArgs,
    strategy: StrategyConfig,
    budget: usize,
    seed: u64,
) -> Result<()> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::bad_file(&file, e.to_string()))?;
    let space = value
        .get("space")
        .and_then(|v| v.as_str())
        .unwrap_or("darts")
        .to_string();
    let kind: DatasetKind = data.trials.dataset.parse()?;
    // The supernet scores on the split of the data it was trained on: the same dataset.
    let trained_on = value.get("dataset").and_then(|v| v.as_str()).unwrap_or("");
    if trained_on != kind.name() {
        return Err(Error::invalid(
            "--dataset",
            format!(
                "{}: the supernet in {} was trained on '{trained_on}'; pass --dataset \
                 {trained_on}",
                kind.name(),
                dir.display()
            ),
        ));
    }
    let dir_data = data
        .trials
        .data
        .clone()
        .unwrap_or_else(nasrs::data::default_data_dir);
    let (train, _test) = nasrs::data::load(kind, &dir_data)?;
    let device = open_device(&data.trials.device)?;
    eprintln!(
        "nasrs search {} --evaluator supernet: the {space} supernet in {} on {}",
        strategy.name(),
        dir.display(),
        device.name()
    );
    fn prepare<M: SupernetConfig>(
        value: serde_json::Value,
        file: &Path,
        strategy: StrategyConfig,
        budget: usize,
        seed: u64,
    ) -> Result<SposRunConfig<M>> {
        let mut config: SposRunConfig<M> =
            serde_json::from_value(value).map_err(|e| Error::bad_file(file, e.to_string()))?;
        config.search = SposSearch::Strategy {
            strategy,
            budget,
            seed,
        };
        Ok(config)
    }
    if space == "nb201" {
        let config = prepare::<Nb201SupernetConfig>(value, &file, strategy, budget, seed)?;
        let found = with_backend!(device, |be| run(
            be,
            config,
            dir,
            &train,
            Start::Resume,
            Phase::Search
        )?);
        if let Some(best) = found {
            out!("{}", best.arch.to_arch_string());
            report(&best.score, best.query, best.generation);
        }
        return Ok(());
    }
    let config = prepare::<SearchConfig>(value, &file, strategy, budget, seed)?;
    let found = with_backend!(device, |be| run(
        be,
        config,
        dir,
        &train,
        Start::Resume,
        Phase::Search
    )?);
    if let Some(best) = found {
        out!("{}", best.arch.to_genotype().to_json());
        report(&best.score, best.query, best.generation);
    }
    Ok(())
}
