//! The `nasrs` command line: `search darts`, `model`, `bench darts`, `selftest`.
//! Every error ends the program with a one-line message (exit code 2 for usage and input
//! errors, 1 for failures during a run), never a panic.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nasrs::bench::{bench_darts, DartsBenchConfig, DartsBenchResult};
use nasrs::bench_model::{format_model, model_darts, DeviceRates};
use nasrs::data::{default_data_dir, load, DatasetKind};
use nasrs::device::{resolve, DeviceChoice, Resolved};
use nasrs::nas::darts::{DartsHyper, StepStats};
use nasrs::nas::search_run::{EpochMetrics, Progress, SearchRun, SearchRunConfig};
use nasrs::nas::{Primitive, SearchConfig, SearchNetwork};
use nasrs::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nasrs",
    version,
    about = "Neural architecture search (DARTS) on CPU and CUDA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an architecture search.
    #[command(subcommand)]
    Search(SearchCommand),
    /// Print a network's parameter count and per-module summary.
    Model(ModelArgs),
    /// Time search steps.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Check every kernel of a device against the CPU backend.
    Selftest {
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum SearchCommand {
    /// DARTS: differentiable search over a one-shot supernet.
    Darts(SearchArgs),
}

#[derive(Args)]
struct SearchArgs {
    /// Data folder (default: the bundled MNIST subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cifar10 | mnist | fashion-mnist | synthetic
    #[arg(long, default_value = "mnist")]
    dataset: String,
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
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Run folder (default: runs/search-<dataset>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the run folder's checkpoint.
    #[arg(long)]
    resume: bool,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 2000)]
    train_limit: usize,
    /// Weight learning rate (cosine-annealed to 0.001).
    #[arg(long, default_value_t = 0.025)]
    lr: f64,
    /// Architecture (alpha) learning rate.
    #[arg(long, default_value_t = 3e-4)]
    arch_lr: f64,
    /// Worker threads on the CPU (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct ModelArgs {
    /// search (the DARTS supernet)
    #[arg(long, default_value = "search")]
    kind: String,
    #[arg(long, default_value_t = 16)]
    channels: usize,
    #[arg(long, default_value_t = 8)]
    layers: usize,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Median time of a weight step, a first-order and a second-order DARTS iteration.
    Darts {
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 16)]
        channels: usize,
        #[arg(long, default_value_t = 8)]
        layers: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        in_channels: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long)]
        threads: Option<usize>,
        /// MiB copied to measure the device's copy bandwidth (0 = skip).
        #[arg(long, default_value_t = 256)]
        copy_mib: usize,
        #[arg(long)]
        json: bool,
    },
    /// FLOPs, bytes, op calls and peak live memory of each DARTS step, counted on the real
    /// network (no device needed), with the floors they imply at the given rates.
    DartsModel {
        #[arg(long, default_value_t = 16)]
        channels: usize,
        #[arg(long, default_value_t = 8)]
        layers: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        in_channels: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Memory bandwidth, TB/s (H200 HBM3e: ~4.3).
        #[arg(long, default_value_t = 4.3)]
        bandwidth_tbs: f64,
        /// f32 arithmetic rate, TFLOP/s (H200 without tensor cores: ~60).
        #[arg(long, default_value_t = 60.0)]
        tflops: f64,
        /// Cost of one kernel launch from the host, microseconds.
        #[arg(long, default_value_t = 2.5)]
        launch_us: f64,
        /// Ops listed in the per-op table.
        #[arg(long, default_value_t = 12)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
}

/// `println!` that tolerates a closed stdout (`nasrs ... | head`): a broken pipe ends the
/// output quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Runs `$body` with `$be` bound to the resolved backend, whatever the device.
macro_rules! with_backend {
    ($resolved:expr, |$be:ident| $body:expr) => {
        match $resolved {
            Resolved::Cpu($be) => $body,
            #[cfg(feature = "cuda")]
            Resolved::Cuda($be) => $body,
        }
    };
}

fn open_device(flag: &str) -> Result<Resolved> {
    let choice: DeviceChoice = flag.parse()?;
    let (dev, notice) = resolve(choice)?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    Ok(dev)
}

/// Runs `f` on a worker of a rayon pool of `threads` threads (default: one per core). The CPU
/// backend's ops then split work from inside the pool, instead of each op handing its work
/// to the pool and putting the calling thread to sleep (a futex round trip per op).
fn in_pool<T: Send>(threads: Option<usize>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::invalid("--threads", "must be at least 1"));
        }
        builder = builder.num_threads(n);
    }
    let pool = builder
        .build()
        .map_err(|e| Error::invalid("--threads", e.to_string()))?;
    pool.install(f)
}

/// A progress bar per epoch: step, loss, accuracy, ETA.
struct Bar {
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epoch = epoch;
        self.epochs = epochs;
        let bar = ProgressBar::new(steps as u64);
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar = Some(bar);
    }
    fn step(&mut self, _step: usize, s: &StepStats, acc: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {:.3} acc {:.1}%", s.loss, 100.0 * acc));
            b.inc(1);
        }
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!(
            "epoch {}/{}: lr {:.4} train loss {:.3} acc {:.1}% | valid loss {:.3} acc {:.1}% | {:.1}s",
            m.epoch + 1,
            self.epochs,
            m.lr,
            m.train_loss,
            100.0 * m.train_acc,
            m.valid_loss,
            100.0 * m.valid_acc,
            m.seconds
        );
    }
}

fn search(a: SearchArgs) -> Result<()> {
    let threads = a.threads;
    in_pool(threads, || search_in_pool(a))
}

fn search_in_pool(a: SearchArgs) -> Result<()> {
    let kind: DatasetKind = a.dataset.parse()?;
    let dir = a.data.clone().unwrap_or_else(default_data_dir);
    let ops = match &a.ops {
        Some(s) => Primitive::parse_list(s)?,
        None => Primitive::ALL.to_vec(),
    };
    let device = open_device(&a.device)?;
    let (train, _test) = load(kind, &dir)?;
    let mut model = SearchConfig::darts(a.channels, a.layers, train.classes, train.c);
    model.steps = a.nodes;
    model.multiplier = a.nodes;
    model.ops = ops;
    let hyper = DartsHyper {
        order: a.order,
        lr_max: a.lr,
        arch_lr: a.arch_lr,
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
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/search-{}-s{}", kind.name(), a.seed)));
    eprintln!(
        "nasrs search darts: {} ({} training images of {}) on {}, run folder {}",
        kind.name(),
        config.train_limit.unwrap_or(train.n).min(train.n),
        dir.display(),
        device.name(),
        out.display()
    );
    let genotype = with_backend!(device, |be| {
        let net_weights = SearchNetwork::new(&be, config.model.clone(), config.seed)?.num_weights();
        eprintln!(
            "supernet: C={} L={} {} ops, {} weights, order {}",
            a.channels,
            a.layers,
            config.model.ops.len(),
            net_weights,
            a.order
        );
        let run = SearchRun::new(be, config, &out)?;
        run.run(
            &train,
            a.resume,
            &mut Bar {
                bar: None,
                epoch: 0,
                epochs: 0,
            },
        )?
    });
    out!("{}", genotype.to_json());
    eprintln!(
        "genotype written to {}",
        out.join("genotype.json").display()
    );
    Ok(())
}

fn model(a: ModelArgs) -> Result<()> {
    if a.kind != "search" {
        return Err(Error::invalid(
            "--kind",
            format!("'{}' (expected search)", a.kind),
        ));
    }
    let be: nasrs::Cpu = nasrs::Cpu::new();
    let net = SearchNetwork::new(
        &be,
        SearchConfig::darts(a.channels, a.layers, a.classes, a.in_channels),
        0,
    )?;
    // Per top-level module: stem, cells.i, classifier.
    let mut modules: Vec<(String, usize)> = Vec::new();
    for (name, shape) in net.weights.shapes() {
        let parts: Vec<&str> = name.split('.').collect();
        let module = if parts[0] == "cells" {
            format!("cells.{}", parts.get(1).unwrap_or(&"?"))
        } else {
            parts[0].to_string()
        };
        match modules.last_mut() {
            Some((m, n)) if *m == module => *n += shape.numel(),
            _ => modules.push((module, shape.numel())),
        }
    }
    let total = net.num_weights();
    if a.json {
        let mods: Vec<serde_json::Value> = modules.iter().map(|(m, n)| serde_json::json!({"module": m, "weights": n, "reduction": m.strip_prefix("cells.").and_then(|i| i.parse().ok()).map(|i| net.config.is_reduction(i))})).collect();
        let v = serde_json::json!({"kind": "search", "channels": a.channels, "layers": a.layers, "classes": a.classes, "in_channels": a.in_channels, "weights": total, "arch_parameters": net.arch.numel(), "modules": mods});
        out!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| Error::invalid("json", e.to_string()))?
        );
    } else {
        for (m, n) in &modules {
            out!("{m:<14} {n:>10}");
        }
        out!(
            "{:<14} {total:>10}  (architecture parameters: {})",
            "total",
            net.arch.numel()
        );
    }
    Ok(())
}

fn bench(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Darts {
            device,
            channels,
            layers,
            batch,
            size,
            in_channels,
            classes,
            warmup,
            steps,
            threads,
            copy_mib,
            json,
        } => {
            if steps == 0 || batch == 0 {
                return Err(Error::invalid("--steps/--batch", "must be at least 1"));
            }
            let dev = open_device(&device)?;
            let cfg = DartsBenchConfig {
                channels,
                layers,
                batch,
                size,
                in_channels,
                classes,
                warmup,
                steps,
                seed: 0,
                copy_mib,
            };
            let r = with_backend!(dev, |be| in_pool(threads, || bench_darts(be, cfg))?);
            print_bench(&r, json)
        }
        BenchCommand::DartsModel {
            channels,
            layers,
            batch,
            size,
            in_channels,
            classes,
            bandwidth_tbs,
            tflops,
            launch_us,
            top,
            json,
        } => {
            if batch == 0 {
                return Err(Error::invalid("--batch", "must be at least 1"));
            }
            let cfg = DartsBenchConfig {
                channels,
                layers,
                batch,
                size,
                in_channels,
                classes,
                warmup: 0,
                steps: 1,
                seed: 0,
                copy_mib: 0,
            };
            let rates = DeviceRates {
                bandwidth_bytes_per_s: bandwidth_tbs * 1e12,
                flops_per_s: tflops * 1e12,
                launch_s: launch_us * 1e-6,
            };
            let m = model_darts(&cfg, rates)?;
            if json {
                out!("{}", to_json(&m)?);
            } else {
                out!("{}", format_model(&m, top).trim_end());
            }
            Ok(())
        }
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))
}

fn print_bench(r: &DartsBenchResult, json: bool) -> Result<()> {
    if json {
        out!("{}", to_json(r)?);
        return Ok(());
    }
    let c = &r.config;
    out!(
        "device: {}  C={} L={} batch {} {}x{}  weights {}  (timer: {})",
        r.device,
        c.channels,
        c.layers,
        c.batch,
        c.size,
        c.size,
        r.weights,
        r.timer
    );
    for p in &r.phases {
        let peak = p
            .peak_memory
            .map(|m| format!("  peak {:.1} MiB ({})", m.bytes as f64 / MIB, m.kind))
            .unwrap_or_default();
        let ratio = p
            .floor_ratio
            .map(|x| format!("  {x:.1}x floor"))
            .unwrap_or_default();
        out!(
            "{:<24} {:>9.2} ms  (min {:.2}, max {:.2}){peak}{ratio}",
            p.name,
            1e3 * p.median_s,
            1e3 * p.min_s,
            1e3 * p.max_s
        );
    }
    if let Some(bw) = r.copy_bandwidth_bytes_per_s {
        out!(
            "copy bandwidth           {:>9.1} GB/s ({} MiB buffers; floors use it)",
            bw / 1e9,
            c.copy_mib
        );
    }
    if let Some(p) = r.peak_rss_bytes {
        out!("peak memory (RSS)        {:>9.1} MiB", p as f64 / MIB);
    }
    Ok(())
}

const MIB: f64 = (1u64 << 20) as f64;

fn selftest(device: &str, seed: u64) -> Result<()> {
    let dev = open_device(device)?;
    eprintln!("selftest on {} against the CPU backend", dev.name());
    let rows = with_backend!(dev, |be| nasrs::selftest::run_parity(&be, seed)?);
    nasrs::selftest::print_table(&rows);
    nasrs::selftest::all_passed(&rows)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Search(SearchCommand::Darts(a)) => search(a),
        Command::Model(a) => model(a),
        Command::Bench(b) => bench(b),
        Command::Selftest { device, seed } => selftest(&device, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::Invalid { .. }
                | Error::Shape { .. }
                | Error::Io { .. }
                | Error::BadFile { .. }
                | Error::Device(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
