//! `nasrs bench`: timed DARTS steps (`darts`), their counted cost model (`darts-model`),
//! training throughput (`train`) and the eval-mode forward of a trained network (`eval`).

use super::{in_pool, open_device, to_json};
use clap::Subcommand;
use nasrs::autograd::Precision;
use nasrs::bench::{bench_darts, bench_eval, bench_train, DartsBenchResult, TrainBenchConfig};
use nasrs::bench_model::{format_model, model_darts, DartsBenchConfig, DeviceRates};
use nasrs::nas::darts::DartsHyper;
use nasrs::nas::eval_model::resolve_genotype;
use nasrs::nas::sizing;
use nasrs::nas::train_run::TrainHyper;
use nasrs::nas::SearchConfig;
use nasrs::{Error, Result};

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
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
        /// A built-in (DARTS_V2, PC_DARTS, ...), a genotype file or an inline `Genotype(...)`.
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
    /// Median time of the eval-mode forward `nasrs eval` runs per batch (logits copied to
    /// the host), for a trained network on random images: the figure beside an exported
    /// model's ONNX Runtime latency.
    Eval {
        /// model.safetensors or checkpoint.safetensors of `nasrs train` (either space).
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// The genotype, for checkpoints without nasrs metadata (PyTorch state_dicts).
        #[arg(long)]
        genotype: Option<String>,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Image side.
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn bench(cmd: BenchCommand) -> Result<()> {
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
        eval @ BenchCommand::Eval { .. } => bench_eval_cmd(eval),
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

fn bench_eval_cmd(cmd: BenchCommand) -> Result<()> {
    let BenchCommand::Eval {
        checkpoint,
        genotype,
        device,
        batch,
        size,
        warmup,
        steps,
        threads,
        json,
    } = cmd
    else {
        return Err(Error::invalid("bench", "not an eval benchmark"));
    };
    if steps == 0 || batch == 0 {
        return Err(Error::invalid("--steps/--batch", "must be at least 1"));
    }
    let g = genotype.as_deref().map(resolve_genotype).transpose()?;
    let dev = open_device(&device)?;
    let r = with_backend!(dev, |be| in_pool(threads, || {
        use nasrs::nas::evaluate::{load_any_network, LoadedNetwork};
        match load_any_network(&be, &checkpoint, g)? {
            LoadedNetwork::Darts(mut net, _) => {
                bench_eval(&be, &mut *net, batch, size, warmup, steps)
            }
            LoadedNetwork::Nb201(mut net, _) => {
                bench_eval(&be, &mut *net, batch, size, warmup, steps)
            }
            LoadedNetwork::MbConv(mut net, _) => {
                bench_eval(&be, &mut *net, batch, size, warmup, steps)
            }
        }
    })?);
    if json {
        out!("{}", to_json(&r)?);
    } else {
        out!(
            "device: {}  {} ({})  batch {batch} of {size}x{size}",
            r.device,
            checkpoint.display(),
            r.network
        );
        out!("eval forward    {:>9.2} ms", 1e3 * r.forward_s);
        out!("throughput      {:>9.1} images/s", r.images_per_s);
    }
    Ok(())
}
