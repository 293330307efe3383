//! `nasrs scale`: EfficientNet's compound scaling of an MBConv network (`nasrs::nas::scaling`).
//! `search` trains the base network scaled by every grid point within the tolerance of
//! `alpha * beta^2 * gamma^2 = 2` as training trials (local workers or Slurm, the flags of
//! `--evaluator train`) into a run folder with `scaling.json`, and prints the chosen
//! coefficients; `apply` scales a base by coefficients at a phi and writes the network's JSON
//! that `nasrs train --space mbconv --scaled FILE` trains.

use super::args::RunFolderArgs;
use super::to_json;
use super::trial_args::TrialRunArgs;
use clap::{Args, Subcommand};
use nasrs::data::load;
use nasrs::io::{atomic_write_json, check_output};
use nasrs::nas::run_dir::Start;
use nasrs::nas::scaling::apply::apply;
use nasrs::nas::scaling::base::{read_base, ScalingBase};
use nasrs::nas::scaling::search::{
    open_scale_search, run_scale_search, ScaleSearchConfig, ScalingReport, JOURNAL, SCALING,
};
use nasrs::nas::scaling::{parse_range, Coefficients, Grid};
use nasrs::{Error, Result};
use std::path::{Path, PathBuf};

// Parsed once per process and matched at once: boxing the large variant saves nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ScaleCommand {
    /// Grid-search the compound-scaling coefficients alpha (depth), beta (width) and gamma
    /// (resolution): every grid point with |alpha * beta^2 * gamma^2 - 2| <= --tolerance is
    /// the base network scaled at phi = 1 (width base * beta, depth base * alpha, resolution
    /// round(base * gamma)), trained as a training trial; the best validation accuracy (the
    /// earliest on a tie) is chosen. Writes config.json, journal.jsonl and scaling.json in
    /// the run folder; prints the chosen coefficients as JSON.
    Search(ScaleSearchArgs),
    /// Scale a base network by alpha^phi (depth: blocks ceil(n * d)), beta^phi (width:
    /// channels to multiples of 8) and gamma^phi (resolution, rounded) and print (or --out)
    /// the network's JSON for `nasrs train --space mbconv --scaled FILE`. The named
    /// EfficientNets b0..b7 come from the published table (`nasrs train --arch b3`), which
    /// does not follow one phi exactly.
    Apply(ScaleApplyArgs),
}

/// The network scaling starts from.
#[derive(Args)]
pub(crate) struct BaseArgs {
    /// The base network: the best.json of `nasrs search ... --space mbconv --evaluator
    /// train`, a scaled network's JSON (`scale apply --out`), a file holding an MBConv arch
    /// string, or b0..b7 (B0's architecture at that row's width and depth).
    #[arg(long)]
    base: Option<String>,
    /// The base's width multiplier (default: the base file's, else 1).
    #[arg(long)]
    base_width: Option<f64>,
    /// The base's depth multiplier (default: the base file's, else 1).
    #[arg(long)]
    base_depth: Option<f64>,
    /// The image side the base trains at (default: the base file's; search: else the
    /// dataset's own size).
    #[arg(long)]
    base_resolution: Option<usize>,
}

impl BaseArgs {
    /// The base of `--base` (required unless `fallback` gives one), with the multipliers
    /// the flags override.
    fn read(&self, fallback: Option<ScalingBase>) -> Result<ScalingBase> {
        let mut base =
            match (&self.base, fallback) {
                (Some(spec), _) => read_base(spec)?,
                (None, Some(b)) => b,
                (None, None) => return Err(Error::invalid(
                    "--base",
                    "is required (a best.json of an mbconv search, a scaled network's JSON, an \
                     arch string file, or b0..b7)",
                )),
            };
        for (flag, v, slot) in [
            ("--base-width", self.base_width, &mut base.width_mult),
            ("--base-depth", self.base_depth, &mut base.depth_mult),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::invalid(
                        flag,
                        format!("{v} is not a positive number"),
                    ));
                }
                *slot = v;
            }
        }
        Ok(base)
    }
}

#[derive(Args)]
pub(crate) struct ScaleSearchArgs {
    #[command(flatten)]
    base: BaseArgs,
    /// The grid's spacing on every axis.
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    step: f64,
    /// alpha's range MIN,MAX (inclusive; a single value fixes it).
    #[arg(long, default_value = "1,2")]
    alpha_range: String,
    /// beta's range MIN,MAX.
    #[arg(long, default_value = "1,1.5")]
    beta_range: String,
    /// gamma's range MIN,MAX.
    #[arg(long, default_value = "1,1.5")]
    gamma_range: String,
    /// Keep the grid points with |alpha * beta^2 * gamma^2 - 2| at most this.
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    tolerance: f64,
    /// Epochs each candidate trains.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[command(flatten)]
    trials: TrialRunArgs,
    /// Every trial's seed (the same for all: the scores differ by the coefficients only).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    run: RunFolderArgs,
}

#[derive(Args)]
pub(crate) struct ScaleApplyArgs {
    /// The scaling.json of `nasrs scale search`: its chosen coefficients, and its base unless
    /// --base is given.
    #[arg(long, conflicts_with_all = ["alpha", "beta", "gamma"])]
    coefficients: Option<PathBuf>,
    /// Depth coefficient (>= 1), with --beta and --gamma instead of --coefficients.
    #[arg(long, allow_hyphen_values = true)]
    alpha: Option<f64>,
    /// Width coefficient (>= 1).
    #[arg(long, allow_hyphen_values = true)]
    beta: Option<f64>,
    /// Resolution coefficient (>= 1).
    #[arg(long, allow_hyphen_values = true)]
    gamma: Option<f64>,
    /// The compound coefficient (0 gives the base; 0..=16).
    #[arg(long, allow_hyphen_values = true)]
    phi: f64,
    #[command(flatten)]
    base: BaseArgs,
    /// Classes of the classifier the parameter count includes (the bundled MNIST's 10).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Input channels of the stem (the bundled MNIST's 1).
    #[arg(long, default_value_t = 1)]
    in_channels: usize,
    /// Write the scaled network's JSON here too (never over a file without --force).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

pub(crate) fn scale(c: ScaleCommand) -> Result<()> {
    match c {
        ScaleCommand::Search(a) => search(a),
        ScaleCommand::Apply(a) => apply_command(a),
    }
}

fn search(a: ScaleSearchArgs) -> Result<()> {
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    let base = a.base.read(None)?;
    let grid = Grid {
        step: a.step,
        alpha: parse_range("--alpha-range", &a.alpha_range)?,
        beta: parse_range("--beta-range", &a.beta_range)?,
        gamma: parse_range("--gamma-range", &a.gamma_range)?,
        tolerance: a.tolerance,
    };
    let candidates = grid.candidates()?.len();
    if a.epochs == 0 {
        return Err(Error::invalid("--epochs", "must be at least 1"));
    }
    let t = &a.trials;
    let (executor, threads) = t.executor_config(t.workers)?;
    let trial = t.trial_template("mbconv", (1, 1), a.epochs, a.seed, threads)?;
    let (train, _) = load(trial.dataset.parse()?, &trial.data)?;
    let base_resolution = match a.base.base_resolution.or(base.resolution) {
        Some(side) => side,
        None if train.h == train.w => train.h,
        None => {
            return Err(Error::invalid(
                "--base-resolution",
                format!(
                    "is required: the {} images are {}x{}, not square",
                    trial.dataset, train.h, train.w
                ),
            ))
        }
    };
    let config = ScaleSearchConfig {
        base,
        base_resolution,
        grid,
        trial,
        classes: train.classes,
        in_channels: train.c,
        workers: t.workers,
        executor,
        retries: t.retries,
    };
    drop(train);
    let out = a.run.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/scale-search-{}-s{}",
            config.trial.dataset, config.trial.seed
        ))
    });
    let exe = std::env::current_exe().map_err(|e| Error::io("the nasrs binary", e))?;
    let mut runner = t.open_executor(&config.executor)?;
    let opened = open_scale_search(&config, &out, start)?;
    eprintln!(
        "nasrs scale search: base {} ({}, width {} depth {} at {}px), {candidates} candidates \
         (step {}, tolerance {}), {} epochs each on {} images of {}, {} workers, run folder {}",
        config.base.source,
        config.base.arch,
        config.base.width_mult,
        config.base.depth_mult,
        config.base_resolution,
        config.grid.step,
        config.grid.tolerance,
        config.trial.epochs,
        config.trial.train_limit,
        config.trial.dataset,
        config.workers,
        out.display()
    );
    let outcome = run_scale_search(opened, runner.as_mut(), &exe)?;
    if outcome.replayed > 0 {
        eprintln!(
            "resumed: {} of {candidates} candidates answered from {}",
            outcome.replayed,
            out.join(JOURNAL).display()
        );
    }
    eprintln!(
        "trial  alpha  beta  gamma  product  width   depth   res  params     MFLOPs    valid_acc"
    );
    for c in &outcome.report.candidates {
        eprintln!(
            "{:>5}  {:<5}  {:<4}  {:<5}  {:<7.4}  {:<6}  {:<6}  {:>3}  {:>9}  {:>8.2}  {}",
            c.trial,
            c.alpha,
            c.beta,
            c.gamma,
            c.product,
            c.width_mult,
            c.depth_mult,
            c.resolution,
            c.params,
            c.flops as f64 / 1e6,
            c.valid_acc
                .map_or_else(|| "failed".to_string(), |v| format!("{v:.4}"))
        );
    }
    let chosen = outcome.report.chosen.as_ref().ok_or_else(|| {
        Error::invalid(
            "scale search",
            format!(
                "every trial failed; their messages are in {}",
                out.join(JOURNAL).display()
            ),
        )
    })?;
    if outcome.failed > 0 {
        eprintln!(
            "{} of {candidates} trials failed (see {})",
            outcome.failed,
            out.join(JOURNAL).display()
        );
    }
    out!("{}", to_json(chosen)?);
    eprintln!(
        "chosen: alpha {} beta {} gamma {} (product {}), valid_acc {:.4}; written to {}",
        chosen.alpha,
        chosen.beta,
        chosen.gamma,
        chosen.product,
        chosen.valid_acc.unwrap_or(0.0),
        out.join(SCALING).display()
    );
    Ok(())
}

/// The coefficients of `--coefficients` (the chosen ones) or of `--alpha/--beta/--gamma`,
/// and the base and base resolution that file gives.
fn coefficients(a: &ScaleApplyArgs) -> Result<(Coefficients, Option<(ScalingBase, usize)>)> {
    if let Some(path) = &a.coefficients {
        let report = ScalingReport::read(path)?;
        let chosen = report.chosen.as_ref().ok_or_else(|| {
            Error::bad_file(path, "has no chosen coefficients (every trial failed)")
        })?;
        return Ok((
            chosen.coefficients(),
            Some((report.base.clone(), report.base_resolution)),
        ));
    }
    let need = |flag: &str, v: Option<f64>| {
        v.ok_or_else(|| {
            Error::invalid(
                flag,
                "is required without --coefficients (give --alpha, --beta and --gamma)",
            )
        })
    };
    let c = Coefficients {
        alpha: need("--alpha", a.alpha)?,
        beta: need("--beta", a.beta)?,
        gamma: need("--gamma", a.gamma)?,
    };
    Ok((c, None))
}

fn apply_command(a: ScaleApplyArgs) -> Result<()> {
    let (c, from_file) = coefficients(&a)?;
    c.validate()?;
    let (fallback, file_resolution) = match from_file {
        Some((b, r)) if a.base.base.is_none() => (Some(b), Some(r)),
        _ => (None, None),
    };
    let base = a.base.read(fallback)?;
    let base_resolution = a
        .base
        .base_resolution
        .or(file_resolution)
        .or(base.resolution)
        .ok_or_else(|| {
            Error::invalid(
                "--base-resolution",
                format!(
                    "is required: {} does not say the image side the base trains at (28 \
                     for the bundled MNIST)",
                    base.source
                ),
            )
        })?;
    for (flag, v) in [("--classes", a.classes), ("--in-channels", a.in_channels)] {
        if v == 0 {
            return Err(Error::invalid(flag, "must be at least 1"));
        }
    }
    if let Some(out) = &a.out {
        let mut inputs: Vec<&Path> = Vec::new();
        if let Some(p) = &a.coefficients {
            inputs.push(p);
        }
        if let Some(b) = &a.base.base {
            inputs.push(Path::new(b));
        }
        check_output(out, "--out", &inputs, a.force)?;
    }
    let net = apply(&base, base_resolution, c, a.phi, a.classes, a.in_channels)?;
    if let Some(out) = &a.out {
        atomic_write_json(out, &net)?;
        eprintln!(
            "written to {}; train it with: nasrs train --space mbconv --scaled {}",
            out.display(),
            out.display()
        );
    }
    out!("{}", to_json(&net)?);
    eprintln!(
        "scaled: width {} depth {} resolution {} ({} parameters at {} classes, {:.2} MFLOPs \
         per image)",
        net.width_mult,
        net.depth_mult,
        net.resolution,
        net.params,
        net.classes,
        net.flops as f64 / 1e6
    );
    Ok(())
}
