//! `nasrs bench darts`: times the DARTS search steps on random data at a given size, the way
//! the PyTorch reference (`bench/torch_reference.py`) times them: warm-up, then the median
//! of many steps, for a weight step, a first-order iteration and a second-order iteration,
//! plus peak memory per phase. The backend times and measures (`Backend::time_region`,
//! `Backend::peak_memory`): CUDA events and the stream-ordered pool's high-water mark on a
//! GPU, the host clock and the resident set on the CPU. The result carries the counted
//! cost model of the same steps (`bench_model`) and each phase's ratio to its floor at the
//! measured copy bandwidth.

use crate::autograd::Precision;
use crate::backend::{Backend, PeakMemory};
use crate::bench_model::{model_darts, random_batch, DartsBenchConfig, DartsModel, DeviceRates};
use crate::error::Result;
use crate::nas::darts::{Darts, DartsHyper, DeviceBatch};
use crate::nas::{SearchConfig, SearchNetwork};
use crate::rng::Rng;
use serde::Serialize;

/// One timed phase: median, spread and samples in seconds, and the device's peak memory
/// over the phase (warm-up included), where the device can measure it.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub samples: Vec<f64>,
    pub peak_memory: Option<PeakMemory>,
    /// Median over the counted floor (`bench_model`, at the measured copy bandwidth).
    pub floor_ratio: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DartsBenchResult {
    pub device: String,
    /// Whether the timed steps were graph replays (false on devices without graphs, or
    /// with `graphs: false`).
    pub graphs_used: bool,
    /// Why capturing the steps in graphs failed, if it did (they then ran op by op).
    pub graph_error: Option<String>,
    /// How steps were timed (`wall_clock`, `cuda_events`).
    pub timer: &'static str,
    pub config: DartsBenchConfig,
    pub weights: usize,
    /// Median seconds per step, and all samples.
    pub weight_step_s: f64,
    pub first_order_iteration_s: f64,
    pub second_order_iteration_s: f64,
    pub samples: Vec<(String, Vec<f64>)>,
    pub phases: Vec<PhaseResult>,
    /// Peak resident memory of the process (CPU), bytes; None where unknown.
    pub peak_rss_bytes: Option<u64>,
    /// Device-to-device copy bandwidth (bytes read + written per second) of a
    /// `copy_mib` MiB buffer, median of 10 copies; None when `copy_mib` is 0.
    pub copy_bandwidth_bytes_per_s: Option<f64>,
    /// The counted cost model of the same steps, with floors at the measured bandwidth.
    pub model: DartsModel,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Runs `f` `warmup` times, then times it `steps` times with the backend's timer, with the
/// peak-memory mark reset before the warm-up.
fn time_phase<B: Backend>(
    backend: &B,
    name: &str,
    warmup: usize,
    steps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<PhaseResult> {
    backend.synchronize()?;
    backend.reset_peak_memory()?;
    for _ in 0..warmup {
        f()?;
    }
    backend.synchronize()?;
    let mut samples = Vec::with_capacity(steps);
    for _ in 0..steps {
        samples.push(backend.time_region(&mut f)?);
    }
    let min_s = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max_s = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(PhaseResult {
        name: name.to_string(),
        median_s: median(&samples),
        min_s,
        max_s,
        samples,
        peak_memory: backend.peak_memory()?,
        floor_ratio: None,
    })
}

/// Copy bandwidth of `mib` MiB buffers in bytes per second, counting the read and the write.
pub fn copy_bandwidth<B: Backend>(backend: &B, mib: usize) -> Result<f64> {
    let len = mib * (1 << 20) / std::mem::size_of::<B::Elem>();
    let src = backend.zeros(len)?;
    let mut dst = backend.zeros(len)?;
    for _ in 0..2 {
        backend.copy_into(&mut dst, &src)?;
    }
    let mut t = Vec::with_capacity(10);
    for _ in 0..10 {
        t.push(backend.time_region(&mut || backend.copy_into(&mut dst, &src))?);
    }
    let bytes = 2.0 * (len * std::mem::size_of::<B::Elem>()) as f64;
    Ok(bytes / median(&t))
}

pub fn bench_darts<B: Backend>(backend: B, c: DartsBenchConfig) -> Result<DartsBenchResult> {
    let model = SearchConfig::darts(c.channels, c.layers, c.classes, c.in_channels);
    let mut rng = Rng::new(c.seed);
    let train = random_batch(&mut rng, &c);
    let val = random_batch(&mut rng, &c);
    let lr = 0.025;
    let net = SearchNetwork::new(&backend, model.clone(), c.seed)?;
    let weights = net.num_weights();
    let hyper = DartsHyper {
        activations: c.activations,
        ..DartsHyper::default()
    };
    let mut darts = Darts::new(backend.clone(), net, hyper)?;
    darts.use_graphs = c.graphs;
    // Staged once: the timed steps are what a search step does once its batch is on the
    // device (the PyTorch reference times the same).
    darts.stage(&train, &val)?;
    let weight = time_phase(&backend, "weight_step", c.warmup, c.steps, || {
        darts.weight_step_staged(lr).map(|_| ())
    })?;
    let first = time_phase(&backend, "first_order_iteration", c.warmup, c.steps, || {
        darts.iteration_staged(lr).map(|_| ())
    })?;
    darts.hyper.order = 2;
    // At least one warm-up: the first call captures the graphs.
    let second = time_phase(
        &backend,
        "second_order_iteration",
        c.warmup.clamp(1, 2),
        c.steps,
        || darts.iteration_staged(lr).map(|_| ()),
    )?;
    let graphs_used = darts.graphs_in_use();
    let graph_error = darts.graph_error().map(str::to_string);
    // Read before the bandwidth buffers exist: the resident-set mark never goes down.
    let peak_rss = crate::host::peak_rss_bytes();
    drop(darts);
    let copy_bw = if c.copy_mib > 0 {
        Some(copy_bandwidth(&backend, c.copy_mib)?)
    } else {
        None
    };
    let mut rates = DeviceRates::H200;
    if let Some(bw) = copy_bw {
        rates.bandwidth_bytes_per_s = bw;
    }
    let cost = model_darts(&c, rates)?;
    let mut phases = vec![weight, first, second];
    // A ratio only against this device's own measured bandwidth, never the nominal H200's.
    if copy_bw.is_some() {
        for p in &mut phases {
            p.floor_ratio = cost.phase(&p.name).map(|m| p.median_s / m.floors.floor_s);
        }
    }
    Ok(DartsBenchResult {
        device: backend.device_name(),
        graphs_used,
        graph_error,
        timer: backend.timer_kind(),
        weights,
        weight_step_s: phases[0].median_s,
        first_order_iteration_s: phases[1].median_s,
        second_order_iteration_s: phases[2].median_s,
        samples: phases
            .iter()
            .map(|p| (p.name.clone(), p.samples.clone()))
            .collect(),
        phases,
        peak_rss_bytes: peak_rss,
        copy_bandwidth_bytes_per_s: copy_bw,
        model: cost,
        config: c,
    })
}

/// `nasrs bench train`: one training step of the evaluation network (forward with the
/// auxiliary head, backward, gradient clipping, SGD), as `bench/torch_train_reference.py`
/// times it in PyTorch.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchConfig {
    pub genotype: String,
    pub channels: usize,
    pub layers: usize,
    pub batch: usize,
    pub size: usize,
    pub in_channels: usize,
    pub classes: usize,
    pub auxiliary: bool,
    pub drop_path: f64,
    pub warmup: usize,
    pub steps: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchResult {
    pub device: String,
    pub config: TrainBenchConfig,
    /// As the DARTS paper counts them (auxiliary head excluded).
    pub weights: usize,
    /// Median seconds per training step, and every sample.
    pub step_s: f64,
    pub images_per_s: f64,
    pub samples: Vec<f64>,
    pub peak_rss_bytes: Option<u64>,
}

pub fn bench_train<B: Backend>(
    backend: B,
    genotype: crate::nas::Genotype,
    c: TrainBenchConfig,
) -> Result<TrainBenchResult> {
    use crate::nas::eval_model::{EvalConfig, EvalNetwork};
    use crate::nas::train_run::{TrainHyper, Trainer};
    let model = EvalConfig {
        genotype,
        channels: c.channels,
        layers: c.layers,
        classes: c.classes,
        in_channels: c.in_channels,
        auxiliary: c.auxiliary,
    };
    model.check_image_size(c.size, c.size)?;
    let mut rng = Rng::new(c.seed);
    let batch = random_batch(
        &mut rng,
        &DartsBenchConfig {
            channels: c.channels,
            layers: c.layers,
            batch: c.batch,
            size: c.size,
            in_channels: c.in_channels,
            classes: c.classes,
            warmup: c.warmup,
            steps: c.steps,
            seed: c.seed,
            copy_mib: 0,
            graphs: false,
            activations: Precision::F32,
        },
    );
    let batch = DeviceBatch::from_batch(&backend, &batch, c.classes)?;
    let net = EvalNetwork::new(&backend, model, c.seed)?;
    let weights = net.num_weights();
    let hyper = TrainHyper {
        drop_path: c.drop_path,
        ..TrainHyper::default()
    };
    let mut trainer = Trainer::new(backend.clone(), net, hyper)?;
    let mut drop_rng = Rng::fork(c.seed, "drop path");
    let samples = time_phase(&backend, "train_step", c.warmup, c.steps, || {
        trainer
            .step(&batch, 0.025, c.drop_path, &mut drop_rng)
            .map(|_| ())
    })?
    .samples;
    let step_s = median(&samples);
    Ok(TrainBenchResult {
        device: backend.device_name(),
        weights,
        step_s,
        images_per_s: c.batch as f64 / step_s,
        samples,
        peak_rss_bytes: crate::host::peak_rss_bytes(),
        config: c,
    })
}

/// `nasrs bench eval`: the eval-mode forward of a trained network (what `nasrs eval` runs per
/// batch: `evaluate::eval_logits`, logits copied back to the host), on random images.
#[derive(Clone, Debug, Serialize)]
pub struct EvalBenchResult {
    pub device: String,
    /// The network's sizes (`C=36 L=20`).
    pub network: String,
    pub batch: usize,
    pub size: usize,
    /// Median seconds per forward, and every sample.
    pub forward_s: f64,
    pub images_per_s: f64,
    pub samples: Vec<f64>,
    pub peak_rss_bytes: Option<u64>,
}

/// Times `net`'s eval-mode forward on `batch` random `size x size` images: `warmup`
/// untimed forwards, then the median of `steps`.
pub fn bench_eval<B: Backend, N: crate::nas::classifier::Classifier<B>>(
    backend: &B,
    net: &mut N,
    batch: usize,
    size: usize,
    warmup: usize,
    steps: usize,
) -> Result<EvalBenchResult> {
    use crate::nas::classifier::NetworkConfig;
    let cfg = net.config().clone();
    cfg.check_image_size(size, size)?;
    let shape = crate::shape::Shape::new(&[batch, cfg.in_channels(), size, size]);
    let mut rng = Rng::new(0);
    let host: Vec<B::Elem> = (0..shape.numel())
        .map(|_| crate::backend::Element::from_f64(rng.normal()))
        .collect();
    let images = crate::tensor::Tensor::from_host(backend, &host, shape)?;
    let samples = time_phase(backend, "eval_forward", warmup, steps, || {
        crate::nas::evaluate::eval_logits(backend, net, &images).map(|_| ())
    })?
    .samples;
    let forward_s = median(&samples);
    Ok(EvalBenchResult {
        device: backend.device_name(),
        network: cfg.describe(),
        batch,
        size,
        forward_s,
        images_per_s: batch as f64 / forward_s,
        samples,
        peak_rss_bytes: crate::host::peak_rss_bytes(),
    })
}
