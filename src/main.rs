//! The `nasrs` command line: `search darts`, `train`, `eval`, `model`, `bench darts`,
//! `bench train`, `selftest`.
//! Every error ends the program with a one-line message (exit code 2 for usage and input
//! errors, 1 for failures during a run), never a panic.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nasrs::autograd::Precision;
use nasrs::bench::{
    bench_darts, bench_train, DartsBenchConfig, DartsBenchResult, TrainBenchConfig,
};
use nasrs::bench_model::{format_model, model_darts, DeviceRates};
use nasrs::data::{default_data_dir, load, DatasetKind};
use nasrs::device::{resolve, DeviceChoice, Resolved};
use nasrs::nas::darts::{DartsHyper, DeviceBatch, StepStats};
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig};
use nasrs::nas::run_dir::Start;
use nasrs::nas::search_run::{EpochMetrics, Progress, SearchRun, SearchRunConfig};
use nasrs::nas::sizing;
use nasrs::nas::train_run::{
    evaluate, load_network, TrainEpochMetrics, TrainHyper, TrainRun, TrainRunConfig,
    TrainStepStats, MODEL,
};
use nasrs::nas::{Primitive, SearchConfig, SearchNetwork};
use nasrs::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc keeps freed activation buffers for reuse, where glibc returns big blocks to the
/// OS and every new one costs a page fault per 4 KiB (measured: most of `mixed_op_bwd`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Train a searched architecture (the DARTS evaluation network) from scratch.
    Train(TrainArgs),
    /// Evaluate a trained network: test accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Print a network's parameter count and per-module summary.
    Model(ModelArgs),
    /// Time search and training steps.
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
    /// auto | cpu | cuda | cuda:N | cuda-sim
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
    /// Start over in a run folder that holds an earlier run (its files are replaced once
    /// the new run's first epoch is saved).
    #[arg(long)]
    force: bool,
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
    /// Worker threads on the CPU (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    /// DARTS_V1 | DARTS_V2 | a genotype.json written by `nasrs search`.
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
    /// auto | cpu | cuda | cuda:N | cuda-sim
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run folder (default: runs/train-<dataset>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the run folder's checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start over in a run folder that holds an earlier run (its files are replaced once
    /// the new run's first epoch is saved).
    #[arg(long)]
    force: bool,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    /// Use only the first N test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Worker threads on the CPU (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    /// model.safetensors, checkpoint.safetensors, or a PyTorch DARTS state_dict in safetensors.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data folder (default: the bundled MNIST subset).
    #[arg(long)]
    data: Option<PathBuf>,
    /// cifar10 | mnist | fashion-mnist | synthetic (default: the one the checkpoint names).
    #[arg(long)]
    dataset: Option<String>,
    /// The genotype, for checkpoints without nasrs metadata (PyTorch state_dicts).
    #[arg(long)]
    genotype: Option<String>,
    #[arg(long, default_value_t = 96)]
    batch: usize,
    /// auto | cpu | cuda | cuda:N | cuda-sim
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also write the first --logits-count test images and their logits to this safetensors
    /// file (for tools/check_eval_checkpoint.py).
    #[arg(long)]
    logits: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    logits_count: usize,
    /// Replace an existing --logits file.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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
        /// Time the steps launched op by op instead of as CUDA-graph replays (GPU only;
        /// the CPU has no graphs and always runs op by op).
        #[arg(long)]
        no_graphs: bool,
        /// Storage of the activations kept for backward: f32 | bf16.
        #[arg(long, default_value = "f32")]
        activations: String,
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
        /// Storage of the activations kept for backward: f32 | bf16.
        #[arg(long, default_value = "f32")]
        activations: String,
        #[arg(long)]
        json: bool,
    },
    /// Images per second of training the evaluation network (forward with the auxiliary
    /// head, backward, SGD step).
    Train {
        /// DARTS_V1 | DARTS_V2 | a genotype.json.
        #[arg(long, default_value = "DARTS_V2")]
        genotype: String,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 16)]
        channels: usize,
        #[arg(long, default_value_t = 8)]
        layers: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Image side (the auxiliary head needs 32).
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Leave the auxiliary head out.
        #[arg(long)]
        no_auxiliary: bool,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long)]
        threads: Option<usize>,
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
            #[cfg(any(feature = "cuda", feature = "cuda-sim"))]
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

/// A progress bar per epoch (step, loss, accuracy, ETA), for searches and training runs;
/// each epoch ends with a one-line summary.
#[derive(Default)]
struct EpochBar {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl EpochBar {
    fn start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epochs = epochs;
        let bar = ProgressBar::new(steps as u64);
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar = Some(bar);
    }
    fn step(&self, loss: f64, acc: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.3} acc {:.1}%", 100.0 * acc));
            b.inc(1);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress<StepStats, EpochMetrics> for EpochBar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start(epoch, epochs, steps);
    }
    fn step(&mut self, _step: usize, s: &StepStats, acc: f64) {
        EpochBar::step(self, s.loss, acc);
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.finish();
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

/// Says what `--resume` will do with the run folder `out` (`RunDir::open` refuses what it
/// cannot do).
fn resume_notice(start: Start, out: &std::path::Path) {
    if start == Start::Resume {
        let checkpoint = out.join(nasrs::nas::search_run::CHECKPOINT);
        if checkpoint.exists() {
            eprintln!("resuming from {}", checkpoint.display());
        } else {
            eprintln!(
                "note: --resume: no checkpoint in {}, starting a new run",
                out.display()
            );
        }
    }
}

/// Refuses a run whose estimated peak memory (`need`) passes what `device` has.
fn check_memory(
    request: &str,
    device: &Resolved,
    need: impl FnOnce(Option<u64>) -> Result<u64>,
) -> Result<()> {
    let available = device.available_memory()?;
    let need = need(available)?;
    sizing::check_fits(request, need, available, &device.name())
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
    let start = Start::from_flags(a.resume, a.force)?;
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
        activations: a.activations.parse()?,
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
    let config = SearchConfig::darts(a.channels, a.layers, a.classes, a.in_channels);
    // The weights are built on the CPU: refuse a network that could not take one image.
    let available = nasrs::host::available_memory();
    let need = sizing::search_step_bytes(&config, &DartsHyper::default(), 1, 32, 32, available)?;
    sizing::check_fits(
        &format!(
            "a search network C={} L={} on one 32x32 image",
            a.channels, a.layers
        ),
        need,
        available,
        "this machine",
    )?;
    let be: nasrs::Cpu = nasrs::Cpu::new();
    let net = SearchNetwork::new(&be, config, 0)?;
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
            no_graphs,
            activations,
            json,
        } => {
            if steps == 0 || batch == 0 {
                return Err(Error::invalid("--steps/--batch", "must be at least 1"));
            }
            let activations: Precision = activations.parse()?;
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
                graphs: !no_graphs,
                activations,
            };
            check_bench_darts(&cfg, dev.available_memory()?, &dev.name())?;
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
            activations,
            json,
        } => {
            let activations: Precision = activations.parse()?;
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
                graphs: true,
                activations,
            };
            let rates = DeviceRates {
                bandwidth_bytes_per_s: bandwidth_tbs * 1e12,
                flops_per_s: tflops * 1e12,
                launch_s: launch_us * 1e-6,
            };
            // Counted, not run: only the host's memory for the network's bookkeeping matters,
            // but a network that overflows or could not exist anywhere is refused first.
            check_bench_darts(&cfg, None, "")?;
            let m = model_darts(&cfg, rates)?;
            if json {
                out!("{}", to_json(&m)?);
            } else {
                out!("{}", format_model(&m, top).trim_end());
            }
            Ok(())
        }
        train @ BenchCommand::Train { .. } => bench_train_cmd(train),
    }
}

/// Refuses a DARTS benchmark whose step would not fit `available` bytes (None: counted, not
/// run: only sizes that overflow or whose counting would exhaust the host).
fn check_bench_darts(cfg: &DartsBenchConfig, available: Option<u64>, device: &str) -> Result<()> {
    let model = SearchConfig::darts(cfg.channels, cfg.layers, cfg.classes, cfg.in_channels);
    let hyper = DartsHyper {
        activations: cfg.activations,
        ..DartsHyper::default()
    };
    let host = nasrs::host::available_memory();
    let counting = sizing::counting_host_bytes(&model)
        .ok_or_else(|| Error::invalid("--layers", format!("{} cells overflow", cfg.layers)))?;
    sizing::check_fits(
        &format!("counting a step of C={} L={}", cfg.channels, cfg.layers),
        counting,
        host,
        "this machine",
    )?;
    let need = sizing::search_step_bytes(&model, &hyper, cfg.batch, cfg.size, cfg.size, available)?;
    sizing::check_fits(
        &format!(
            "a DARTS step C={} L={} batch {} of {}x{} images",
            cfg.channels, cfg.layers, cfg.batch, cfg.size, cfg.size
        ),
        need,
        available,
        device,
    )
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
        "device: {}  C={} L={} batch {} {}x{}  weights {}  {} activations  (timer: {}, {})",
        r.device,
        c.channels,
        c.layers,
        c.batch,
        c.size,
        c.size,
        r.weights,
        c.activations,
        r.timer,
        if r.graphs_used {
            "steps replayed as graphs"
        } else {
            "steps launched op by op"
        }
    );
    if let Some(e) = &r.graph_error {
        out!("graph capture failed, steps ran op by op: {e}");
    }
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
impl Progress<TrainStepStats, TrainEpochMetrics> for EpochBar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start(epoch, epochs, steps);
    }
    fn step(&mut self, _step: usize, s: &TrainStepStats, acc: f64) {
        EpochBar::step(self, s.loss, acc);
    }
    fn epoch_end(&mut self, m: &TrainEpochMetrics) {
        self.finish();
        eprintln!(
            "epoch {}/{}: lr {:.4} drop-path {:.3} train loss {:.3} acc {:.1}% | test loss {:.3} acc {:.2}% | {:.1}s",
            m.epoch + 1,
            self.epochs,
            m.lr,
            m.drop_prob,
            m.train_loss,
            100.0 * m.train_acc,
            m.test_loss,
            100.0 * m.test_acc,
            m.seconds
        );
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let threads = a.threads;
    in_pool(threads, || train_in_pool(a))
}

fn train_in_pool(a: TrainArgs) -> Result<()> {
    let kind: DatasetKind = a.dataset.parse()?;
    let dir = a.data.clone().unwrap_or_else(default_data_dir);
    let genotype = resolve_genotype(&a.genotype)?;
    let start = Start::from_flags(a.resume, a.force)?;
    let device = open_device(&a.device)?;
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

fn eval(a: EvalArgs) -> Result<()> {
    let threads = a.threads;
    in_pool(threads, || eval_in_pool(a))
}

fn eval_in_pool(a: EvalArgs) -> Result<()> {
    let genotype = a.genotype.as_deref().map(resolve_genotype).transpose()?;
    if a.batch == 0 {
        return Err(Error::invalid("--batch", "must be at least 1"));
    }
    if let Some(path) = &a.logits {
        // Every file the command reads: the checkpoint, a genotype file, the data files.
        let data_dir = a.data.clone().unwrap_or_else(default_data_dir);
        let mut inputs = vec![a.checkpoint.clone()];
        inputs.extend(a.genotype.as_ref().map(PathBuf::from));
        if let Ok(entries) = std::fs::read_dir(&data_dir) {
            inputs.extend(entries.flatten().map(|e| e.path()));
        }
        let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
        nasrs::io::check_output(path, "--logits", &inputs, a.force)?;
    }
    let device = open_device(&a.device)?;
    let available = device.available_memory()?;
    let device_name = device.name();
    with_backend!(device, |be| {
        let (mut net, meta) = load_network(&be, &a.checkpoint, genotype)?;
        let dataset = match (&a.dataset, &meta.dataset) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => {
                return Err(Error::invalid(
                    "--dataset",
                    format!(
                        "{} does not say which dataset it was trained on; pass --dataset",
                        a.checkpoint.display()
                    ),
                ))
            }
        };
        let kind: DatasetKind = dataset.parse()?;
        let dir = a.data.clone().unwrap_or_else(default_data_dir);
        let (_train, test) = load(kind, &dir)?;
        if test.c != net.config.in_channels {
            return Err(Error::invalid(
                "--dataset",
                format!(
                    "{} has {} channels, the network expects {}",
                    kind.name(),
                    test.c,
                    net.config.in_channels
                ),
            ));
        }
        net.config.check_image_size(test.h, test.w)?;
        let batch = a.batch.min(test.n).max(1);
        let need = sizing::eval_bytes(&net.config, batch, test.h, test.w, available)?;
        sizing::check_fits(
            &format!(
                "evaluating {} (C={} L={}), batch {batch} of {}x{} images",
                a.checkpoint.display(),
                net.config.channels,
                net.config.layers,
                test.h,
                test.w
            ),
            need,
            available,
            &device_name,
        )?;
        let report = evaluate(&be, &mut net, &test, a.batch).map_err(|e| match e {
            Error::NonFinite(what) => {
                Error::NonFinite(format!("{}: {what}", a.checkpoint.display()))
            }
            e => e,
        })?;
        if let Some(path) = &a.logits {
            let n = a.logits_count.clamp(1, test.n);
            let idx: Vec<usize> = (0..n).collect();
            let batch = nasrs::data::SequentialBatches::over(&test, idx, n)?
                .next()
                .ok_or_else(|| Error::invalid("--logits-count", "no test images"))?;
            let db = DeviceBatch::from_batch(&be, &batch, net.config.classes)?;
            let logits = nasrs::nas::train_run::eval_logits(&be, &mut net, &db.images)?;
            let k = net.config.classes;
            let tensors = std::collections::BTreeMap::from([
                (
                    "images".to_string(),
                    nasrs::io::HostTensor {
                        shape: batch.dims().shape().dims().to_vec(),
                        data: batch.images.clone(),
                    },
                ),
                (
                    "logits".to_string(),
                    nasrs::io::HostTensor {
                        shape: vec![n, k],
                        data: logits.iter().map(|&v| v as f32).collect(),
                    },
                ),
            ]);
            nasrs::io::save_safetensors(path, &tensors, Default::default())?;
            eprintln!(
                "{n} test images and their logits written to {}",
                path.display()
            );
        }
        if a.json {
            let v = serde_json::json!({
                "checkpoint": a.checkpoint.display().to_string(),
                "dataset": kind.name(),
                "model": net.config,
                "test": report,
                "per_class_accuracy": report.per_class(),
            });
            out!(
                "{}",
                serde_json::to_string_pretty(&v)
                    .map_err(|e| Error::invalid("json", e.to_string()))?
            );
            return Ok(());
        }
        out!(
            "{}: {} test images of {}, eval-mode batch norm",
            a.checkpoint.display(),
            report.count,
            kind.name()
        );
        out!(
            "test accuracy {:.2}%  loss {:.4}",
            100.0 * report.accuracy,
            report.loss
        );
        out!("per-class accuracy:");
        for (c, acc) in report.per_class().iter().enumerate() {
            let total: usize = report.confusion[c].iter().sum();
            match acc {
                Some(acc) => out!("  class {c:>3}: {:>6.2}%  ({total} images)", 100.0 * acc),
                None => out!("  class {c:>3}:      -  (no images)"),
            }
        }
        out!("confusion matrix (rows: true class, columns: predicted):");
        let k = report.confusion.len();
        let mut header = String::from("      ");
        for c in 0..k {
            header += &format!("{c:>6}");
        }
        out!("{header}");
        for (c, row) in report.confusion.iter().enumerate() {
            let cells: String = row.iter().map(|v| format!("{v:>6}")).collect();
            out!("{c:>6}{cells}");
        }
        Ok(())
    })
}

fn bench_train_cmd(cmd: BenchCommand) -> Result<()> {
    let BenchCommand::Train {
        genotype,
        device,
        channels,
        layers,
        batch,
        size,
        classes,
        no_auxiliary,
        warmup,
        steps,
        threads,
        json,
    } = cmd
    else {
        return Err(Error::invalid("bench", "not a training benchmark"));
    };
    if steps == 0 || batch < 2 {
        return Err(Error::invalid(
            "--steps/--batch",
            "steps must be at least 1 and the batch at least 2 (batch norm)",
        ));
    }
    let g = resolve_genotype(&genotype)?;
    let dev = open_device(&device)?;
    let cfg = TrainBenchConfig {
        genotype,
        channels,
        layers,
        batch,
        size,
        in_channels: 3,
        classes,
        auxiliary: !no_auxiliary,
        drop_path: 0.2,
        warmup,
        steps,
        seed: 0,
    };
    let model = nasrs::nas::eval_model::EvalConfig {
        genotype: g.clone(),
        channels,
        layers,
        classes,
        in_channels: 3,
        auxiliary: !no_auxiliary,
    };
    model.check_image_size(size, size)?;
    let available = dev.available_memory()?;
    let hyper = TrainHyper::default();
    let need = sizing::train_step_bytes(&model, &hyper, batch, size, size, available)?;
    sizing::check_fits(
        &format!("training C={channels} L={layers}, batch {batch} of {size}x{size} images"),
        need,
        available,
        &dev.name(),
    )?;
    let r = with_backend!(dev, |be| in_pool(threads, || bench_train(be, g, cfg))?);
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| Error::invalid("json", e.to_string()))?
        );
    } else {
        out!(
            "device: {}  {} C={channels} L={layers} batch {batch} {size}x{size} auxiliary={}  weights {}",
            r.device,
            r.config.genotype,
            r.config.auxiliary,
            r.weights
        );
        out!("training step   {:>9.1} ms", 1e3 * r.step_s);
        out!("throughput      {:>9.1} images/s", r.images_per_s);
        if let Some(p) = r.peak_rss_bytes {
            out!("peak memory (RSS) {:>7.1} MiB", p as f64 / (1 << 20) as f64);
        }
    }
    Ok(())
}

fn selftest(device: &str, seed: u64) -> Result<()> {
    let dev = open_device(device)?;
    eprintln!("selftest on {} against the CPU backend", dev.name());
    let rows = with_backend!(dev, |be| nasrs::selftest::run_parity(&be, seed)?);
    nasrs::selftest::print_table(&rows);
    nasrs::selftest::all_passed(&rows)
}

// mimalloc's `mi_option_set`; option 15 is `mi_option_purge_delay` in its v2 and v3 headers.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() -> ExitCode {
    // Keep freed memory instead of handing it back to the OS after 10 ms: every step frees
    // and re-allocates gigabytes of activations, and fresh pages cost a fault and a zeroing
    // each (measured: 28% of a C=16 L=8 batch-64 CPU step in the kernel's clear_page).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Search(SearchCommand::Darts(a)) => search(a),
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
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
