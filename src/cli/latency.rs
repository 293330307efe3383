//! `nasrs latency`: latency lookup tables for hardware-aware search (`nasrs::nas::latency`).
//! `build` times every piece the MBConv space produces at one scale on a device into a JSON
//! table (written atomically, never over an existing file without `--force`); `check`
//! times random architectures as whole networks and reports the table's prediction error
//! per network, its mean and its worst.

use super::{in_pool, open_device, to_json};
use clap::{Args, Subcommand};
use nasrs::nas::latency::{build_table, check, CheckReport, LatencyTable, Protocol, Scale};
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
    }
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
    let b0 = table.predict(&nasrs::nas::space::mbconv::MbConvArch::b0())?;
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
