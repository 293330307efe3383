//! `nasrs latency`: latency lookup tables for hardware-aware search (`nasrs::nas::latency`).
//! `build` times every piece the MBConv space produces at one scale on a device into a JSON
//! table (written atomically, never over an existing file without `--force`); `check`
//! times random architectures as whole networks and reports the table's prediction error
//! per network, its mean and its worst; `predict` answers from a table alone (given
//! architectures, or the spread over random ones: where a search's target can sit).

use super::{in_pool, open_device, to_json};
use clap::{Args, Subcommand};
use nasrs::nas::latency::{build_table, check, CheckReport, LatencyTable, Protocol, Scale};
use nasrs::nas::space::mbconv::{MbConvArch, MbConvSpace};
use nasrs::nas::space::SearchSpace;
use nasrs::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum LatencyCommand {
    /// Time every block configuration the space can produce at its input shapes (each
    /// stage's first and repeated block for every kernel x expansion x SE), the stem and
    /// the head, alone, in eval mode: warm-up, then the median (and mean, p10, p90) of
    /// repeated runs, into a JSON table for one network scale on one device.
    Build(BuildArgs),
    /// Predict random architectures' latency from a table and time them as whole networks
    /// (same protocol): per network predicted vs measured ms and relative error, then the
    /// mean and worst relative error.
    Check(CheckArgs),
    /// Predict latency from a table without timing anything: the given architectures' (one
    /// line each), or the spread over random architectures of the space (to choose a
    /// search's --latency-target).
    Predict(PredictArgs),
}

#[derive(Args)]
pub struct PredictArgs {
    /// A table of `nasrs latency build`.
    #[arg(long)]
    table: PathBuf,
    /// Architectures to predict (the MBConv string form, or b0); none: random ones.
    /// Repeatable.
    #[arg(long)]
    arch: Vec<String>,
    /// Random architectures drawn without --arch.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Seed of the architectures drawn.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `latency predict` over random architectures: quantiles of the predicted milliseconds.
#[derive(serde::Serialize)]
struct Spread {
    samples: usize,
    min_ms: f64,
    p10_ms: f64,
    p25_ms: f64,
    median_ms: f64,
    p75_ms: f64,
    p90_ms: f64,
    max_ms: f64,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The search space (only `mbconv` has tables).
    #[arg(long, default_value = "mbconv")]
    space: String,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Images per forward.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Image side.
    #[arg(long, default_value_t = 224)]
    size: usize,
    #[arg(long, default_value_t = 1.0)]
    width_mult: f64,
    #[arg(long, default_value_t = 1.0)]
    depth_mult: f64,
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Untimed runs per piece before the timed ones.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs per piece.
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// MiB copied on the device before each timed run to evict the caches (0: none).
    #[arg(long, default_value_t = 0)]
    flush_mib: usize,
    /// CPU threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the pieces' weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The table file to write.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    /// A table of `nasrs latency build`.
    #[arg(long)]
    table: PathBuf,
    /// Random architectures to time whole.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Seed of the architectures drawn (and of the networks' weights).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The device: the table's own device is required.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
    /// The scale to predict and time at (default: the table's; another one is refused with
    /// the first signature the table lacks).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    size: Option<usize>,
    #[arg(long)]
    width_mult: Option<f64>,
    #[arg(long)]
    depth_mult: Option<f64>,
    /// Runs per network (default: the table's).
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long)]
    repeats: Option<usize>,
    /// Print the report as JSON instead of the text table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
}

pub fn latency(cmd: LatencyCommand) -> Result<()> {
    match cmd {
        LatencyCommand::Build(a) => build(a),
        LatencyCommand::Check(a) => check_table(a),
        LatencyCommand::Predict(a) => predict(a),
    }
}

fn predict(a: PredictArgs) -> Result<()> {
    let table = LatencyTable::load(&a.table)?;
    let at = |arch: &MbConvArch| {
        table
            .predict(arch)
            .map(|p| p.total_ms)
            .map_err(|e| Error::bad_file(&a.table, e.to_string()))
    };
    if !a.arch.is_empty() {
        for text in &a.arch {
            let arch = MbConvArch::parse(text)?;
            out!(
                "{:.4} {}",
                at(&arch)?,
                MbConvSpace::default().to_string(&arch)
            );
        }
        return Ok(());
    }
    if a.samples == 0 {
        return Err(Error::invalid("--samples", "must be at least 1"));
    }
    let space = MbConvSpace::default();
    let mut rng = nasrs::Rng::new(a.seed);
    let mut ms = (0..a.samples)
        .map(|_| at(&space.sample(&mut rng)))
        .collect::<Result<Vec<f64>>>()?;
    ms.sort_by(f64::total_cmp);
    // The nearest-rank quantile.
    let q = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let spread = Spread {
        samples: ms.len(),
        min_ms: ms[0],
        p10_ms: q(0.1),
        p25_ms: q(0.25),
        median_ms: q(0.5),
        p75_ms: q(0.75),
        p90_ms: q(0.9),
        max_ms: ms[ms.len() - 1],
    };
    out!("{}", to_json(&spread)?);
    Ok(())
}

fn build(a: BuildArgs) -> Result<()> {
    if a.space != "mbconv" {
        return Err(Error::invalid(
            "--space",
            format!(
                "'{}': latency tables exist for the mbconv space only",
                a.space
            ),
        ));
    }
    let scale = Scale {
        batch: a.batch,
        size: a.size,
        width_mult: a.width_mult,
        depth_mult: a.depth_mult,
        in_channels: a.in_channels,
        classes: a.classes,
    };
    scale.validate()?;
    let proto = Protocol {
        warmup: a.warmup,
        repeats: a.repeats,
        flush_mib: a.flush_mib,
    };
    proto.validate()?;
    nasrs::io::check_output(&a.out, "--out", &[], a.force)?;
    let dev = open_device(&a.device)?;
    let table = with_backend!(dev, |be| in_pool(a.threads, || {
        eprintln!("latency build: {}", scale.describe());
        build_table(&be, &scale, proto, a.seed, |done, total, key| {
            if done == total || done % 50 == 0 {
                eprintln!("  {done}/{total} {key}");
            }
        })
    })?);
    table.save(&a.out)?;
    let b0 = table.predict(&MbConvArch::b0())?;
    out!(
        "{}: {} blocks + stem + head on {} ({}), {} in {:.1} s",
        a.out.display(),
        table.blocks.len(),
        table.device,
        table.build,
        table.scale.describe(),
        table.build_seconds
    );
    out!(
        "  stem {:.3} ms, head {:.3} ms; B0's architecture predicted {:.3} ms",
        table.stem.timing.median_ms,
        table.head.timing.median_ms,
        b0.total_ms
    );
    Ok(())
}

fn check_table(a: CheckArgs) -> Result<()> {
    if let Some(out) = &a.out {
        nasrs::io::check_output(out, "--out", &[&a.table], a.force)?;
    }
    let table = LatencyTable::load(&a.table)?;
    let scale = Scale {
        batch: a.batch.unwrap_or(table.scale.batch),
        size: a.size.unwrap_or(table.scale.size),
        width_mult: a.width_mult.unwrap_or(table.scale.width_mult),
        depth_mult: a.depth_mult.unwrap_or(table.scale.depth_mult),
        ..table.scale.clone()
    };
    scale.validate()?;
    let proto = Protocol {
        warmup: a.warmup.unwrap_or(table.warmup),
        repeats: a.repeats.unwrap_or(table.repeats),
        flush_mib: 0,
    };
    proto.validate()?;
    let dev = open_device(&a.device)?;
    let json = a.json;
    let report = with_backend!(dev, |be| in_pool(a.threads, || {
        let mut first = true;
        check(&be, &table, &scale, a.samples, proto, a.seed, |row| {
            if !json && std::mem::take(&mut first) {
                out!(
                    "{:>9} {:>9} {:>8}  arch",
                    "predicted",
                    "measured",
                    "rel.err"
                );
            }
            if !json {
                out!(
                    "{:>9.3} {:>9.3} {:>+7.1}%  {}",
                    row.predicted_ms,
                    row.measured.median_ms,
                    100.0 * row.relative_error,
                    row.arch
                );
            }
        })
    })?);
    if let Some(out) = &a.out {
        nasrs::io::atomic_write_json(out, &report)?;
    }
    if json {
        out!("{}", to_json(&report)?);
    } else {
        summary(&report, &a.table);
    }
    Ok(())
}

fn summary(r: &CheckReport, table: &Path) {
    out!(
        "latency predictor ({}) on {}, {}: {} networks, mean |relative error| {:.1}%, worst \
         {:.1}%, bias {:+.1}%",
        table.display(),
        r.device,
        r.scale.describe(),
        r.rows.len(),
        100.0 * r.mean_abs_relative_error,
        100.0 * r.worst_abs_relative_error,
        100.0 * r.mean_relative_error
    );
}
