//! `nasrs train`: train a cell's network from scratch into a run folder: a DARTS genotype's
//! evaluation network (`--space darts`, the DARTS paper's recipe), a NAS-Bench-201 cell's
//! network (`--space nb201 --arch ...`, NB201's recipe) or an MBConv network (`--space mbconv
//! --arch ...|b0..b7`, or `--scaled FILE` of `nasrs scale apply`; SGD with NB201's settings,
//! stochastic depth and dropout). `--resolution` resizes the images first (`data::resize`).
//! Flags left out take the space's defaults; flags a space has no use for are refused.

use super::args::{DataArgs, DeviceArgs, RunFolderArgs};
use super::progress::EpochBar;
use super::{check_memory, in_pool, open_device, resume_notice};
use clap::Args;
use nasrs::data::{check_resolution, resize_dataset, Augment, Dataset, DatasetKind};
use nasrs::nas::classifier::{Classifier, NetworkConfig};
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig};
use nasrs::nas::mbconv_model::plan::ScalingRow;
use nasrs::nas::mbconv_model::MbConvConfig;
use nasrs::nas::nb201_model::Nb201Config;
use nasrs::nas::run_dir::Start;
use nasrs::nas::scaling::apply::ScaledNetwork;
use nasrs::nas::sizing;
use nasrs::nas::space::mbconv::MbConvArch;
use nasrs::nas::space::nb201::Nb201Arch;
use nasrs::nas::train_run::{TrainHyper, TrainRun, TrainRunConfig, MODEL};
use nasrs::{Error, Result};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// darts (a --genotype's evaluation network) | nb201 (the NAS-Bench-201 network of an
    /// --arch cell) | mbconv (the MBConv network of an --arch).
    #[arg(long, default_value = "darts")]
    space: String,
    /// darts: a built-in (DARTS_V1, DARTS_V2, PC_DARTS, PDARTS, ...), a genotype.json or
    /// genotype.py written by `nasrs search`, an inline `Genotype(normal=[...], ...)`, or
    /// FILE:NAME in a genotypes.py.
    #[arg(long)]
    genotype: Option<String>,
    /// nb201: the cell as an NB201 arch string,
    /// '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
    /// (ops none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3).
    /// mbconv: an MBConv arch string (`e1k3l1se-e6k3l2se-...`, seven stages of expansion,
    /// kernel, layers and optional SE), or b0..b7 (EfficientNet: B0's arch at that row's
    /// width, depth and dropout of data/efficientnet/scaling.csv).
    #[arg(long)]
    arch: Option<String>,
    /// mbconv: channel multiplier (default 1, or the --arch bN row's).
    #[arg(long)]
    width_mult: Option<f64>,
    /// mbconv: depth multiplier (default 1, or the --arch bN row's).
    #[arg(long)]
    depth_mult: Option<f64>,
    /// mbconv: dropout before the classifier (default 0.2, or the --arch bN row's).
    #[arg(long)]
    dropout: Option<f64>,
    /// mbconv: batch norm momentum, PyTorch's convention (default 0.1; EfficientNet's 0.01
    /// suits long runs only: its running statistics need thousands of steps to settle).
    #[arg(long)]
    bn_momentum: Option<f64>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs (default: 600 for darts, 200 for nb201, 50 for mbconv; NB201's short
    /// tabulated schedule, data/nb201-12ep, is 12).
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size (default: 96 for darts, 256 for nb201, 128 for mbconv).
    #[arg(long)]
    batch: Option<usize>,
    /// Initial channels C (default: 36 for darts, 16 for nb201).
    #[arg(long)]
    channels: Option<usize>,
    /// darts: cells L, reductions at L/3 and 2L/3 (default 20); nb201: cells per stage N
    /// (default 5).
    #[arg(long)]
    layers: Option<usize>,
    /// darts: add the auxiliary head after cell 2L/3 (needs 32x32 images).
    #[arg(long)]
    auxiliary: bool,
    /// darts: weight of the auxiliary loss (default 0.4).
    #[arg(long)]
    auxiliary_weight: Option<f64>,
    /// Cutout side in pixels, 0 = off (default: 16 for darts on CIFAR-10, off elsewhere and
    /// for nb201).
    #[arg(long)]
    cutout: Option<usize>,
    /// darts: final drop-path probability, raised linearly from 0 over the epochs (default
    /// 0.2; nb201 has no drop-path); mbconv: stochastic depth's (block i of n drops its
    /// residual branch with p * i / n), raised the same way (default 0.2).
    #[arg(long)]
    drop_path: Option<f64>,
    /// Initial learning rate, cosine-annealed to 0 (default: 0.025 for darts, 0.1 for nb201
    /// and mbconv).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    /// Use only the first N test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Resize every training and test image to R x R (bilinear, once at load time; 1..=1024)
    /// before training: EfficientNet's resolution. Default: the dataset's own size.
    #[arg(long)]
    resolution: Option<usize>,
    /// mbconv: the scaled network `nasrs scale apply` wrote (its arch, width and depth
    /// multipliers and resolution), instead of --arch, --width-mult, --depth-mult and
    /// --resolution.
    #[arg(long, conflicts_with_all = ["arch", "width_mult", "depth_mult", "resolution"])]
    scaled: Option<PathBuf>,
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(flatten)]
    run: RunFolderArgs,
}

pub(crate) fn train(a: TrainArgs) -> Result<()> {
    let threads = a.dev.threads;
    in_pool(threads, || train_in_pool(a))
}

/// Refuses a flag `space` has no use for.
fn unused(space: &str, flag: &str, given: bool, why: &str) -> Result<()> {
    if given {
        return Err(Error::invalid(
            flag,
            format!("is not a --space {space} option: {why}"),
        ));
    }
    Ok(())
}

fn train_in_pool(a: TrainArgs) -> Result<()> {
    if a.space != "mbconv" {
        for (flag, given) in [
            ("--width-mult", a.width_mult.is_some()),
            ("--depth-mult", a.depth_mult.is_some()),
            ("--dropout", a.dropout.is_some()),
            ("--bn-momentum", a.bn_momentum.is_some()),
            ("--scaled", a.scaled.is_some()),
        ] {
            unused(&a.space, flag, given, "it sizes the MBConv network")?;
        }
    }
    match a.space.as_str() {
        "mbconv" => train_mbconv(&a),
        "darts" => {
            unused(
                "darts",
                "--arch",
                a.arch.is_some(),
                "a DARTS cell is given by --genotype",
            )?;
            let spec = a.genotype.as_deref().ok_or_else(|| {
                Error::invalid(
                    "--genotype",
                    "is required with --space darts (DARTS_V2, a genotype.json, ...)",
                )
            })?;
            let genotype = resolve_genotype(spec)?;
            let hyper = TrainHyper {
                lr_max: a.lr.unwrap_or(0.025),
                drop_path: a.drop_path.unwrap_or(0.2),
                auxiliary_weight: a.auxiliary_weight.unwrap_or(0.4),
                ..TrainHyper::default()
            };
            let (channels, layers, auxiliary) = (
                a.channels.unwrap_or(36),
                a.layers.unwrap_or(20),
                a.auxiliary,
            );
            let plan = Plan {
                epochs: a.epochs.unwrap_or(600),
                batch: a.batch.unwrap_or(96),
                cutout_on_cifar: 16,
                out_prefix: "train",
                hyper,
                resolution: a.resolution,
            };
            run(&a, plan, |train| EvalConfig {
                genotype,
                channels,
                layers,
                classes: train.classes,
                in_channels: train.c,
                auxiliary,
            })
        }
        "nb201" => {
            let no_aux = "the NB201 network has no auxiliary head";
            unused(
                "nb201",
                "--genotype",
                a.genotype.is_some(),
                "an NB201 cell is given by --arch",
            )?;
            unused("nb201", "--auxiliary", a.auxiliary, no_aux)?;
            unused(
                "nb201",
                "--auxiliary-weight",
                a.auxiliary_weight.is_some(),
                no_aux,
            )?;
            let drop = a.drop_path.is_some_and(|p| p != 0.0);
            unused(
                "nb201",
                "--drop-path",
                drop,
                "the NB201 network has no drop-path",
            )?;
            let text = a.arch.as_deref().ok_or_else(|| {
                Error::invalid(
                    "--arch",
                    "is required with --space nb201 (an NB201 arch string, \
                     '|nor_conv_3x3~0|+|...~0|...~1|+|...~0|...~1|...~2|')",
                )
            })?;
            let arch =
                Nb201Arch::parse(text).map_err(|e| Error::invalid("--arch", e.to_string()))?;
            let hyper = TrainHyper {
                lr_max: a.lr.unwrap_or(0.1),
                ..TrainHyper::nb201()
            };
            let channels = a.channels.unwrap_or(Nb201Config::CHANNELS);
            let cells_per_stage = a.layers.unwrap_or(Nb201Config::CELLS_PER_STAGE);
            let plan = Plan {
                epochs: a.epochs.unwrap_or(200),
                batch: a.batch.unwrap_or(256),
                cutout_on_cifar: 0,
                out_prefix: "train-nb201",
                hyper,
                resolution: a.resolution,
            };
            run(&a, plan, |train| Nb201Config {
                arch,
                channels,
                cells_per_stage,
                classes: train.classes,
                in_channels: train.c,
            })
        }
        other => Err(Error::invalid(
            "--space",
            format!("'{other}' (expected darts, nb201 or mbconv)"),
        )),
    }
}

/// `--space mbconv`: the network of `--arch` (a string or b0..b7) at the multipliers.
fn train_mbconv(a: &TrainArgs) -> Result<()> {
    let cells = "an MBConv network has no cells: use --width-mult and --depth-mult";
    unused("mbconv", "--genotype", a.genotype.is_some(), "give --arch")?;
    unused("mbconv", "--channels", a.channels.is_some(), cells)?;
    unused("mbconv", "--layers", a.layers.is_some(), cells)?;
    let no_aux = "the MBConv network has no auxiliary head";
    unused("mbconv", "--auxiliary", a.auxiliary, no_aux)?;
    unused(
        "mbconv",
        "--auxiliary-weight",
        a.auxiliary_weight.is_some(),
        no_aux,
    )?;
    let scaled = a.scaled.as_deref().map(ScaledNetwork::read).transpose()?;
    let (arch, row) = match &scaled {
        Some(net) => (net.mbconv_arch()?, None),
        None => {
            let text = a.arch.as_deref().ok_or_else(|| {
                Error::invalid(
                    "--arch",
                    "is required with --space mbconv (b0..b7, a string such as \
                     e1k3l1se-e6k3l2se-e6k5l2se-e6k3l3se-e6k5l3se-e6k5l4se-e6k3l1se, or \
                     --scaled FILE of `nasrs scale apply`)",
                )
            })?;
            mbconv_arch(text)?
        }
    };
    let hyper = TrainHyper {
        lr_max: a.lr.unwrap_or(0.1),
        drop_path: a.drop_path.unwrap_or(0.2),
        ..TrainHyper::nb201()
    };
    let width_mult = a
        .width_mult
        .or(scaled.as_ref().map(|n| n.width_mult))
        .or(row.as_ref().map(|r| r.width))
        .unwrap_or(1.0);
    let depth_mult = a
        .depth_mult
        .or(scaled.as_ref().map(|n| n.depth_mult))
        .or(row.as_ref().map(|r| r.depth))
        .unwrap_or(1.0);
    let dropout = a.dropout.or(row.as_ref().map(|r| r.dropout)).unwrap_or(0.2);
    let config = |classes, in_channels| MbConvConfig {
        width_mult,
        depth_mult,
        dropout,
        bn_momentum: a.bn_momentum.unwrap_or(MbConvConfig::BN_MOMENTUM),
        ..MbConvConfig::new(arch, classes, in_channels)
    };
    // The sizes are checked before the data is read (the dataset fills in the rest).
    config(1, 1).validate()?;
    let plan = Plan {
        epochs: a.epochs.unwrap_or(50),
        batch: a.batch.unwrap_or(128),
        cutout_on_cifar: 0,
        out_prefix: "train-mbconv",
        hyper,
        resolution: scaled.as_ref().map(|n| n.resolution).or(a.resolution),
    };
    run(a, plan, |train| config(train.classes, train.c))
}

/// `--arch`: an EfficientNet name (B0's architecture and its row of the scaling table) or
/// an MBConv arch string.
fn mbconv_arch(text: &str) -> Result<(MbConvArch, Option<ScalingRow>)> {
    let named = text.len() == 2 && text.to_ascii_lowercase().starts_with('b');
    if named {
        let row = ScalingRow::named(text).map_err(|e| Error::invalid("--arch", e.to_string()))?;
        Ok((MbConvArch::b0(), Some(row)))
    } else {
        let arch = MbConvArch::parse(text).map_err(|e| Error::invalid("--arch", e.to_string()))?;
        Ok((arch, None))
    }
}

/// What a space decides of a run beyond its network.
struct Plan {
    epochs: usize,
    batch: usize,
    /// Cutout when `--cutout` is not given, on CIFAR-10 (elsewhere off).
    cutout_on_cifar: usize,
    /// The default run folder is `runs/<out_prefix>-<dataset>-s<seed>`.
    out_prefix: &'static str,
    hyper: TrainHyper,
    /// `--resolution` (or a scaled network's): the side the images are resized to.
    resolution: Option<usize>,
}

/// Loads the data, builds the network `model` makes for the training set, checks sizes and
/// memory, and runs (or resumes) the training run.
fn run<M: NetworkConfig>(
    a: &TrainArgs,
    plan: Plan,
    model: impl FnOnce(&Dataset) -> M,
) -> Result<()> {
    let kind = a.data.kind()?;
    let start = Start::from_flags(a.run.resume, a.run.force)?;
    if let Some(side) = plan.resolution {
        check_resolution(side)?;
    }
    let device = open_device(&a.dev.device)?;
    let (train, test) = a.data.load()?;
    let (train_limit, test_limit) = (
        (a.train_limit > 0).then_some(a.train_limit),
        (a.test_limit > 0).then_some(a.test_limit),
    );
    // Only the images used are resized (the run takes the same first ones).
    let (train, test) = match plan.resolution {
        Some(side) => (
            resize_dataset(&train.first(train_limit)?, side)?,
            resize_dataset(&test.first(test_limit)?, side)?,
        ),
        None => (train, test),
    };
    let cifar = kind == DatasetKind::Cifar10;
    let cutout = a
        .cutout
        .unwrap_or(if cifar { plan.cutout_on_cifar } else { 0 });
    let augment = Augment {
        crop_pad: cifar.then_some(4),
        flip: cifar,
        cutout: (cutout > 0).then_some(cutout),
    };
    let config = TrainRunConfig {
        dataset: kind.name().to_string(),
        model: model(&train),
        hyper: plan.hyper,
        epochs: plan.epochs,
        batch: plan.batch,
        seed: a.seed,
        augment,
        train_limit,
        test_limit,
        resolution: plan.resolution,
    };
    let out = a.run.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-{}-s{}",
            plan.out_prefix,
            kind.name(),
            a.seed
        ))
    });
    eprintln!(
        "nasrs train: {} ({} training / {} test images of {}) on {}, run folder {}",
        kind.name(),
        config.train_limit.unwrap_or(train.n).min(train.n),
        config.test_limit.unwrap_or(test.n).min(test.n),
        a.data.dir().display(),
        device.name(),
        out.display()
    );
    config.model.check_image_size(train.h, train.w)?;
    let samples = config.train_limit.unwrap_or(train.n).min(train.n);
    let what = match M::SPACE {
        "darts" => format!(
            "training {}{}",
            config.model.describe(),
            if config.model.auxiliary() {
                " with the auxiliary head"
            } else {
                ""
            }
        ),
        space => format!("training the {space} network {}", config.model.describe()),
    };
    check_memory(
        &format!(
            "{what}, batch {} of {}x{} images",
            config.batch, train.h, train.w
        ),
        &device,
        |budget| {
            let batch = config.batch.min(samples).max(1);
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
        let net = config.model.build(&be, config.seed)?;
        let n = net.num_weights();
        if M::SPACE == "darts" {
            eprintln!(
                "network: {} auxiliary={} {n} weights ({:.6}M, auxiliary head excluded)",
                config.model.describe(),
                config.model.auxiliary(),
                n as f64 / 1e6
            );
        } else {
            eprintln!(
                "network: {} {} {n} weights ({:.6}M)",
                M::SPACE,
                config.model.describe(),
                n as f64 / 1e6
            );
        }
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
