//! `nasrs study ranking`: how well a SPOS supernet ranks architectures against stand-alone
//! training (Kendall tau, Spearman rho over seeds; see `nas::spos::study`), on the DARTS or
//! the NB201 space; writes `study.json` and `ranking.svg` into `--out`.

use super::args::{DataArgs, DeviceArgs};
use super::{in_pool, open_device};
use clap::Args;
use nasrs::data::{Dataset, DatasetKind};
use nasrs::io::{atomic_write, atomic_write_json};
use nasrs::nas::nb201_model::Nb201SupernetConfig;
use nasrs::nas::report::score_scatter_svg;
use nasrs::nas::spos::study::{ranking_study, RankingStudy, RankingStudyConfig};
use nasrs::nas::spos::{Sampling, SposHyper, SupernetConfig};
use nasrs::nas::{Primitive, SearchConfig};
use nasrs::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct RankingArgs {
    /// darts | nb201
    #[arg(long, default_value = "nb201")]
    space: String,
    #[command(flatten)]
    data: DataArgs,
    /// K: architectures ranked (drawn uniformly, distinct).
    #[arg(long, default_value_t = 10)]
    archs: usize,
    /// Supernets per sampling choice (seeds 1..=N).
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Seed of the architectures drawn and of their stand-alone training.
    #[arg(long, default_value_t = 0)]
    arch_seed: u64,
    /// Stand-alone trainings per architecture (the ground truth is their mean; with 2 or
    /// more, the seed-against-seed correlation is reported as the ceiling).
    #[arg(long, default_value_t = 2)]
    standalone_seeds: usize,
    /// Sampling choices measured, comma-separated: uniform, fair.
    #[arg(long, default_value = "uniform,fair")]
    sampling: String,
    #[arg(long, default_value_t = 4)]
    supernet_epochs: usize,
    #[arg(long, default_value_t = 4)]
    standalone_epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Initial channels C (default: 4 for darts, 8 for nb201).
    #[arg(long)]
    channels: Option<usize>,
    /// darts: cells L (default 5); nb201: cells per stage N (default 1).
    #[arg(long)]
    layers: Option<usize>,
    /// Use only the first N training images (0 = all); half trains, half scores.
    #[arg(long, default_value_t = 2000)]
    train_limit: usize,
    /// Supernet learning rate (cosine-annealed to 0.001).
    #[arg(long, default_value_t = 0.025)]
    lr: f64,
    /// Training batches of BN recalibration in the recalibrated variants (0: measure only
    /// the supernet's own statistics).
    #[arg(long, default_value_t = 4)]
    recalibration_batches: usize,
    /// Folder for study.json and ranking.svg.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the study.json of an earlier study in --out.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    dev: DeviceArgs,
}

pub(crate) fn ranking(a: RankingArgs) -> Result<()> {
    let threads = a.dev.threads;
    in_pool(threads, || ranking_in_pool(a))
}

fn ranking_in_pool(a: RankingArgs) -> Result<()> {
    let kind = a.data.kind()?;
    let samplings = a
        .sampling
        .split(',')
        .map(|s| Sampling::parse(s.trim()))
        .collect::<Result<Vec<_>>>()?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/ranking-{}-{}", a.space, kind.name())));
    let study_file = out.join("study.json");
    if study_file.exists() && !a.force {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} holds an earlier study; pass --force to replace it",
                study_file.display()
            ),
        ));
    }
    if !matches!(a.space.as_str(), "darts" | "nb201") {
        return Err(Error::invalid(
            "--space",
            format!("'{}' (expected darts or nb201)", a.space),
        ));
    }
    let device = open_device(&a.dev.device)?;
    let (train, _test) = a.data.load()?;
    eprintln!(
        "nasrs study ranking: {} space, {} on {}, {} archs x {} seeds x {} samplings",
        a.space,
        kind.name(),
        device.name(),
        a.archs,
        a.seeds,
        samplings.len()
    );
    if a.space == "nb201" {
        let model = Nb201SupernetConfig {
            channels: a.channels.unwrap_or(8),
            cells_per_stage: a.layers.unwrap_or(1),
            classes: train.classes,
            in_channels: train.c,
        };
        let cfg = config(&a, kind, model, samplings);
        let study = with_backend!(device, |be| study(&be, &cfg, &train)?);
        return write(&out, &study);
    }
    let model = SearchConfig::darts(
        a.channels.unwrap_or(4),
        a.layers.unwrap_or(5),
        train.classes,
        train.c,
    )
    .ops(Primitive::ALL.to_vec());
    let cfg = config(&a, kind, model, samplings);
    let study = with_backend!(device, |be| study(&be, &cfg, &train)?);
    write(&out, &study)
}

fn config<M>(
    a: &RankingArgs,
    kind: DatasetKind,
    model: M,
    samplings: Vec<Sampling>,
) -> RankingStudyConfig<M> {
    RankingStudyConfig {
        space: a.space.clone(),
        dataset: kind.name().to_string(),
        model,
        archs: a.archs,
        arch_seed: a.arch_seed,
        standalone_seeds: a.standalone_seeds,
        seeds: (1..=a.seeds as u64).collect(),
        samplings,
        supernet_epochs: a.supernet_epochs,
        standalone_epochs: a.standalone_epochs,
        batch: a.batch,
        train_limit: (a.train_limit > 0).then_some(a.train_limit),
        hyper: SposHyper {
            lr_max: a.lr,
            ..SposHyper::default()
        },
        recalibration_batches: a.recalibration_batches,
    }
}

fn study<B: nasrs::backend::Backend, M: SupernetConfig>(
    be: &B,
    cfg: &RankingStudyConfig<M>,
    train: &Dataset,
) -> Result<RankingStudy<M>> {
    ranking_study(be, cfg, train, &mut |line| eprintln!("{line}"))
}

/// Writes `study.json` and `ranking.svg` (supernet score against stand-alone accuracy,
/// every seed of the first recalibrated variant, or the first variant), prints the summary.
fn write<M: Serialize + serde::de::DeserializeOwned>(
    out: &Path,
    study: &RankingStudy<M>,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    atomic_write_json(&out.join("study.json"), study)?;
    let shown = study
        .summary
        .iter()
        .find(|s| s.variant.contains("recalibrated"))
        .or(study.summary.first())
        .map(|s| s.variant.clone())
        .unwrap_or_default();
    let points: Vec<(f64, f64)> = study
        .runs
        .iter()
        .filter(|r| r.variant == shown)
        .flat_map(|r| {
            study
                .archs
                .iter()
                .zip(&r.scores)
                .map(|(a, &s)| (a.standalone, s))
        })
        .collect();
    atomic_write(
        &out.join("ranking.svg"),
        score_scatter_svg(
            &format!(
                "{} space: supernet score ({shown}; y) against stand-alone accuracy (x)",
                study.config.space
            ),
            &points,
        )
        .as_bytes(),
    )?;
    out!(
        "{:<40} {:>5} {:>15} {:>15}",
        "variant",
        "seeds",
        "Kendall tau",
        "Spearman rho"
    );
    for s in &study.summary {
        out!(
            "{:<40} {:>5} {:>8.3} ± {:<5.3} {:>8.3} ± {:<5.3}",
            s.variant,
            s.seeds,
            s.tau_mean,
            s.tau_std,
            s.rho_mean,
            s.rho_std
        );
    }
    if let (Some(tau), Some(rho)) = (study.standalone_tau, study.standalone_rho) {
        out!(
            "{:<40} {:>5} {:>8.3}         {:>8.3}",
            "stand-alone seed against seed (ceiling)",
            2,
            tau,
            rho
        );
    }
    eprintln!(
        "{} archs, {:.0} s; written to {} and {}",
        study.archs.len(),
        study.seconds,
        out.join("study.json").display(),
        out.join("ranking.svg").display()
    );
    Ok(())
}
