//! `nasrs bench darts-model`: the cost model of the DARTS search steps, counted by running
//! the real search code (`nas::darts::Darts`) on the counting backend
//! (`backend::counting::Counting`) at the benchmark's size: FLOPs, bytes moved (op-level
//! and tensor-level, f32), op calls, host round trips and peak live bytes for a weight step,
//! a first-order and a second-order iteration, with the floors they imply at given device
//! rates: `max(bytes / bandwidth, FLOPs / rate)`, and `op calls * launch cost` for an
//! op-by-op (uncaptured) schedule.

use crate::autograd::Precision;
use crate::backend::counting::{CountSnapshot, Counting};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::nas::darts::{Darts, DartsHyper};
use crate::nas::{SearchConfig, SearchNetwork};
use crate::rng::Rng;
use serde::Serialize;

/// The DARTS step a benchmark times (`bench`) and this model counts: the supernet's size,
/// the batch, and how the timing runs.
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
    /// Size of the buffer the copy bandwidth is measured with (0 = not measured).
    pub copy_mib: usize,
    /// Capture the steps in graphs and time their replays, where the device has graphs.
    pub graphs: bool,
    /// How saved activations are stored (`--activations`).
    pub activations: Precision,
}

/// A batch of standard-normal images and uniform labels, on the host.
pub(crate) fn random_batch(rng: &mut Rng, c: &DartsBenchConfig) -> Batch {
    let n = c.batch * c.in_channels * c.size * c.size;
    Batch {
        images: (0..n).map(|_| rng.normal() as f32).collect(),
        labels: (0..c.batch).map(|_| rng.below(c.classes) as u32).collect(),
        n: c.batch,
        c: c.in_channels,
        h: c.size,
        w: c.size,
    }
}

/// Device rates the floors are computed at (defaults: an H200, f32 without tensor cores).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DeviceRates {
    /// Memory bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: f64,
    /// Arithmetic rate, FLOPs per second.
    pub flops_per_s: f64,
    /// Cost of one kernel launch issued from the host, seconds.
    pub launch_s: f64,
}

impl DeviceRates {
    /// An H200: ~4.3 TB/s HBM3e, ~60 TFLOP/s f32 on the CUDA cores, ~2.5 us per launch from
    /// the host (the `nasrs bench darts-model` defaults; flags override them).
    pub const H200: DeviceRates = DeviceRates {
        bandwidth_bytes_per_s: 4.3e12,
        flops_per_s: 60e12,
        launch_s: 2.5e-6,
    };

    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--bandwidth-tbs", self.bandwidth_bytes_per_s),
            ("--tflops", self.flops_per_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(flag, format!("{v} must be positive")));
            }
        }
        if !(self.launch_s.is_finite() && self.launch_s >= 0.0) {
            return Err(Error::invalid(
                "--launch-us",
                format!("{} must be zero or positive", self.launch_s * 1e6),
            ));
        }
        Ok(())
    }
}

/// The floors one phase's counts imply at the given rates, seconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Floors {
    /// Tensor-level bytes over the bandwidth (each tensor read once, written once).
    pub memory_s: f64,
    /// Op-level bytes over the bandwidth (every op reads its inputs, writes its outputs).
    pub op_memory_s: f64,
    pub compute_s: f64,
    /// `max(memory_s, compute_s)`: the floor the "within 2x" target refers to.
    pub floor_s: f64,
    /// Op calls times the launch cost: what an uncaptured op-by-op schedule cannot go below.
    pub launch_s: f64,
}

impl Floors {
    pub fn new(c: &CountSnapshot, r: &DeviceRates) -> Self {
        let memory_s = c.tensor_bytes() as f64 / r.bandwidth_bytes_per_s;
        let compute_s = c.total.flops as f64 / r.flops_per_s;
        Floors {
            memory_s,
            op_memory_s: c.total.bytes() as f64 / r.bandwidth_bytes_per_s,
            compute_s,
            floor_s: memory_s.max(compute_s),
            launch_s: c.total.calls as f64 * r.launch_s,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseModel {
    /// `weight_step`, `first_order_iteration`, `second_order_iteration` (the bench's names).
    pub name: String,
    pub counts: CountSnapshot,
    pub floors: Floors,
}

#[derive(Clone, Debug, Serialize)]
pub struct DartsModel {
    pub config: DartsBenchConfig,
    pub weights: usize,
    pub arch_parameters: usize,
    /// Bytes alive before any step: weights, BN buffers, alphas, optimizer state, batches.
    pub resident_bytes: u64,
    pub rates: DeviceRates,
    pub phases: Vec<PhaseModel>,
}

impl DartsModel {
    pub fn phase(&self, name: &str) -> Option<&PhaseModel> {
        self.phases.iter().find(|p| p.name == name)
    }
}

/// Counts each step once on the counting backend (`c.warmup` and `c.steps` are not used).
pub fn model_darts(c: &DartsBenchConfig, rates: DeviceRates) -> Result<DartsModel> {
    rates.validate()?;
    let be = Counting::new();
    let model = SearchConfig::darts(c.channels, c.layers, c.classes, c.in_channels);
    let mut rng = Rng::new(c.seed);
    let train = random_batch(&mut rng, c);
    let val = random_batch(&mut rng, c);
    let net = SearchNetwork::new(&be, model, c.seed)?;
    let (weights, arch_parameters) = (net.num_weights(), net.arch.numel());
    let hyper = DartsHyper {
        activations: c.activations,
        ..DartsHyper::default()
    };
    let mut darts = Darts::new(be.clone(), net, hyper)?;
    darts.use_graphs = c.graphs;
    darts.stage(&train, &val)?;
    let resident_bytes = be.live_bytes()?;
    let lr = 0.025;
    let mut phases = Vec::new();
    for (name, order) in [
        ("weight_step", 0u8),
        ("first_order_iteration", 1),
        ("second_order_iteration", 2),
    ] {
        if order > 0 {
            darts.hyper.order = order;
        }
        be.reset()?;
        if order == 0 {
            darts.weight_step_staged(lr)?;
        } else {
            darts.iteration_staged(lr)?;
        }
        let counts = be.snapshot()?;
        phases.push(PhaseModel {
            name: name.into(),
            floors: Floors::new(&counts, &rates),
            counts,
        });
    }
    Ok(DartsModel {
        config: c.clone(),
        weights,
        arch_parameters,
        resident_bytes,
        rates,
        phases,
    })
}

const MIB: f64 = (1u64 << 20) as f64;

fn us(s: f64) -> String {
    format!("{:.1}", s * 1e6)
}

/// The human-readable report: one row per phase, then the `top` ops of the first-order
/// iteration by bytes moved (what fusion would attack first).
pub fn format_model(m: &DartsModel, top: usize) -> String {
    let c = &m.config;
    let r = &m.rates;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "DARTS step model (counted on the real step, f32 arithmetic, {} saved activations): C={} L={} batch {} {}x{}x{}, {} classes, {} weights, {} alphas",
        c.activations, c.channels, c.layers, c.batch, c.in_channels, c.size, c.size, c.classes, m.weights, m.arch_parameters
    ));
    line(format!(
        "rates: {:.2} TB/s, {:.1} TFLOP/s, {:.2} us per launch; resident before a step {:.1} MiB",
        r.bandwidth_bytes_per_s / 1e12,
        r.flops_per_s / 1e12,
        r.launch_s * 1e6,
        m.resident_bytes as f64 / MIB
    ));
    line(format!(
        "{:<24} {:>8} {:>10} {:>10} {:>7} {:>5} {:>9} | {:>9} {:>9} {:>9} {:>9} {:>10}",
        "phase",
        "GFLOP",
        "tensor MB",
        "op MB",
        "ops",
        "syncs",
        "peak MiB",
        "mem us",
        "flop us",
        "floor us",
        "op-mem us",
        "launch us"
    ));
    for p in &m.phases {
        let k = &p.counts;
        let f = &p.floors;
        line(format!(
            "{:<24} {:>8.2} {:>10.1} {:>10.1} {:>7} {:>5} {:>9.1} | {:>9} {:>9} {:>9} {:>9} {:>10}",
            p.name,
            k.total.flops as f64 / 1e9,
            k.tensor_bytes() as f64 / 1e6,
            k.total.bytes() as f64 / 1e6,
            k.total.calls,
            k.host_syncs,
            k.peak_live_bytes as f64 / MIB,
            us(f.memory_s),
            us(f.compute_s),
            us(f.floor_s),
            us(f.op_memory_s),
            us(f.launch_s),
        ));
    }
    if let Some(p) = m.phase("first_order_iteration") {
        let mut ops: Vec<_> = p.counts.ops.iter().collect();
        ops.sort_by(|a, b| b.1.bytes().cmp(&a.1.bytes()).then(a.0.cmp(b.0)));
        let total = p.counts.total.bytes().max(1) as f64;
        line(format!(
            "first-order iteration by op (op-level bytes; top {}):",
            top.min(ops.len())
        ));
        line(format!(
            "  {:<28} {:>7} {:>10} {:>10} {:>6}",
            "op", "calls", "GFLOP", "MB", "bytes%"
        ));
        for (name, k) in ops.into_iter().take(top) {
            line(format!(
                "  {:<28} {:>7} {:>10.3} {:>10.1} {:>5.1}%",
                name,
                k.calls,
                k.flops as f64 / 1e9,
                k.bytes() as f64 / 1e6,
                100.0 * k.bytes() as f64 / total
            ));
        }
    }
    out
}
