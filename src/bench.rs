//! `nasrs bench darts`: times the DARTS search steps on random data at a given size, the way
//! the PyTorch reference (`bench/torch_reference.py`) times them: warm-up, then the median
//! of many steps, for a weight step, a first-order iteration and a second-order iteration,
//! plus peak memory (resident set on the CPU).

use crate::backend::{Backend, Element};
use crate::error::Result;
use crate::nas::darts::{Darts, DartsHyper, DeviceBatch};
use crate::nas::{SearchConfig, SearchNetwork};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct DartsBenchConfig {
    pub channels: usize,
    pub layers: usize,
    pub batch: usize,
    pub size: usize,
    pub in_channels: usize,
    pub classes: usize,
    pub warmup: usize,
    pub steps: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DartsBenchResult {
    pub device: String,
    pub config: DartsBenchConfig,
    pub weights: usize,
    /// Median seconds per step, and all samples.
    pub weight_step_s: f64,
    pub first_order_iteration_s: f64,
    pub second_order_iteration_s: f64,
    pub samples: Vec<(String, Vec<f64>)>,
    /// Peak resident memory of the process (CPU), bytes; None where unknown.
    pub peak_rss_bytes: Option<u64>,
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

/// Peak resident set size from /proc/self/status (VmHWM), Linux only.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn random_batch<B: Backend>(be: &B, rng: &mut Rng, c: &DartsBenchConfig) -> Result<DeviceBatch<B>> {
    let n = c.batch * c.in_channels * c.size * c.size;
    let x: Vec<B::Elem> = (0..n).map(|_| B::Elem::from_f64(rng.normal())).collect();
    let labels = (0..c.batch).map(|_| rng.below(c.classes) as u32).collect();
    Ok(DeviceBatch {
        images: Tensor::from_host(be, &x, [c.batch, c.in_channels, c.size, c.size])?,
        labels,
    })
}

fn time_steps(
    backend: &impl Backend,
    warmup: usize,
    steps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    backend.synchronize()?;
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        f()?;
        backend.synchronize()?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

pub fn bench_darts<B: Backend>(backend: B, c: DartsBenchConfig) -> Result<DartsBenchResult> {
    let model = SearchConfig::darts(c.channels, c.layers, c.classes, c.in_channels);
    let mut rng = Rng::new(c.seed);
    let train = random_batch(&backend, &mut rng, &c)?;
    let val = random_batch(&backend, &mut rng, &c)?;
    let lr = 0.025;
    let net = SearchNetwork::new(&backend, model.clone(), c.seed)?;
    let weights = net.num_weights();
    let mut darts = Darts::new(backend.clone(), net, DartsHyper::default())?;
    let weight = time_steps(&backend, c.warmup, c.steps, || {
        darts.weight_step(&train, lr).map(|_| ())
    })?;
    let first = time_steps(&backend, c.warmup, c.steps, || {
        darts.iteration(&train, &val, lr).map(|_| ())
    })?;
    darts.hyper.order = 2;
    let second = time_steps(&backend, c.warmup.min(1), c.steps, || {
        darts.iteration(&train, &val, lr).map(|_| ())
    })?;
    Ok(DartsBenchResult {
        device: backend.device_name(),
        weights,
        weight_step_s: median(&weight),
        first_order_iteration_s: median(&first),
        second_order_iteration_s: median(&second),
        samples: vec![
            ("weight_step".into(), weight),
            ("first_order_iteration".into(), first),
            ("second_order_iteration".into(), second),
        ],
        peak_rss_bytes: peak_rss_bytes(),
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
        &backend,
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
        },
    )?;
    let net = EvalNetwork::new(&backend, model, c.seed)?;
    let weights = net.num_weights();
    let hyper = TrainHyper {
        drop_path: c.drop_path,
        ..TrainHyper::default()
    };
    let mut trainer = Trainer::new(backend.clone(), net, hyper)?;
    let mut drop_rng = Rng::fork(c.seed, "drop path");
    let samples = time_steps(&backend, c.warmup, c.steps, || {
        trainer
            .step(&batch, 0.025, c.drop_path, &mut drop_rng)
            .map(|_| ())
    })?;
    let step_s = median(&samples);
    Ok(TrainBenchResult {
        device: backend.device_name(),
        weights,
        step_s,
        images_per_s: c.batch as f64 / step_s,
        samples,
        peak_rss_bytes: peak_rss_bytes(),
        config: c,
    })
}
