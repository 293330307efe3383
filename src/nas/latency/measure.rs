//! Timing on a device: one piece of the network (stem, block, head) or a whole network, in
//! eval mode (the inference forward `nasrs eval` runs, no gradients recorded), on random
//! inputs of the piece's shape: `warmup` untimed runs, then `repeats` timed with the
//! backend's timer (`Backend::time_region`: the host clock on the CPU, CUDA events on a
//! GPU), optionally after a copy of `flush_mib` MiB that evicts the caches (a piece timed
//! alone again and again runs with its weights and input in cache; inside a network its
//! weights are cold). Building a table times every piece the space produces at one scale; checking one
//! times random architectures whole and compares with the table's prediction.

use super::signature::{space_pieces, Piece, PieceSpec, Scale};
use super::table::{build_description, KeyedTiming, LatencyTable, Timing, FORMAT, VERSION};
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::nas::evaluate::eval_logits;
use crate::nas::mbconv_model::part::MbConvPart;
use crate::nas::mbconv_model::MbConvNetwork;
use crate::nas::space::mbconv::{MbConvArch, MbConvSpace};
use crate::nas::space::SearchSpace;
use crate::rng::Rng;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::Serialize;
use std::collections::BTreeMap;

/// Untimed and timed runs per measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Protocol {
    pub warmup: usize,
    pub repeats: usize,
    /// MiB copied on the device before each timed run (outside the timing) to evict the
    /// caches, so that a piece runs with cold weights as it does inside a network; 0: none.
    pub flush_mib: usize,
}

impl Protocol {
    pub fn validate(&self) -> Result<()> {
        if self.repeats == 0 {
            return Err(Error::invalid("--repeats", "must be at least 1"));
        }
        if self.flush_mib > 4096 {
            return Err(Error::invalid("--flush-mib", "is over 4096"));
        }
        Ok(())
    }
}

/// Times `f` under `proto`.
fn time<B: Backend>(
    backend: &B,
    proto: Protocol,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..proto.warmup {
        f()?;
    }
    backend.synchronize()?;
    let flush_len = proto.flush_mib * (1 << 20) / std::mem::size_of::<B::Elem>();
    let mut flush = if flush_len > 0 {
        Some((backend.zeros(flush_len)?, backend.zeros(flush_len)?))
    } else {
        None
    };
    let mut samples = Vec::with_capacity(proto.repeats);
    for _ in 0..proto.repeats {
        if let Some((src, dst)) = &mut flush {
            backend.copy_into(dst, src)?;
        }
        samples.push(backend.time_region(&mut f)?);
    }
    Timing::from_seconds(&samples).ok_or_else(|| Error::invalid("--repeats", "must be at least 1"))
}

/// `batch` images of shape `input`, standard normal, drawn from `seed`.
fn random_input<B: Backend>(
    backend: &B,
    batch: usize,
    input: [usize; 3],
    seed: u64,
) -> Result<Tensor<B>> {
    let shape = Shape::new(&[batch, input[0], input[1], input[2]]);
    let mut rng = Rng::fork(seed, "latency input");
    let host: Vec<B::Elem> = (0..shape.numel())
        .map(|_| B::Elem::from_f64(rng.normal()))
        .collect();
    Tensor::from_host(backend, &host, shape)
}

/// Times one piece alone at `scale`. The head's logits are copied to the host, as the
/// whole network's are (`eval_logits`).
pub fn measure_piece<B: Backend>(
    backend: &B,
    scale: &Scale,
    piece: &Piece,
    proto: Protocol,
    seed: u64,
) -> Result<Timing> {
    let config = scale.config(MbConvArch::b0());
    let mut part = match piece.spec {
        PieceSpec::Stem { channels } => MbConvPart::stem(backend, &config, channels, seed)?,
        PieceSpec::Block(plan) => MbConvPart::block(backend, &config, plan, seed)?,
        PieceSpec::Head { last, channels } => {
            MbConvPart::head(backend, &config, last, channels, seed)?
        }
    };
    let x = random_input(backend, scale.batch, piece.input, seed)?;
    let head = matches!(piece.spec, PieceSpec::Head { .. });
    time(backend, proto, || {
        let y = part.forward_eval(backend, &x)?;
        if head {
            y.to_f64(backend)?;
        }
        Ok(())
    })
}

/// Times `arch`'s whole network at `scale` (`eval_logits`, as `nasrs eval` runs a batch).
pub fn measure_network<B: Backend>(
    backend: &B,
    scale: &Scale,
    arch: &MbConvArch,
    proto: Protocol,
    seed: u64,
) -> Result<Timing> {
    let cfg = scale.config(*arch);
    let mut net = MbConvNetwork::new(backend, cfg.clone(), seed)?;
    let x = random_input(
        backend,
        scale.batch,
        [cfg.in_channels, scale.size, scale.size],
        seed,
    )?;
    time(backend, proto, || {
        eval_logits(backend, &mut net, &x).map(|_| ())
    })
}

/// Times every piece the space produces at `scale` into a table; `progress(done, total,
/// key)` is called after each piece.
pub fn build_table<B: Backend>(
    backend: &B,
    scale: &Scale,
    proto: Protocol,
    seed: u64,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<LatencyTable> {
    scale.validate()?;
    proto.validate()?;
    let start = std::time::Instant::now();
    let pieces = space_pieces(scale)?;
    let (mut stem, mut head, mut blocks) = (None, None, BTreeMap::new());
    for (i, piece) in pieces.iter().enumerate() {
        let timing = measure_piece(backend, scale, piece, proto, seed)?;
        let keyed = KeyedTiming {
            key: piece.key.clone(),
            timing: timing.clone(),
        };
        match piece.spec {
            PieceSpec::Stem { .. } => stem = Some(keyed),
            PieceSpec::Head { .. } => head = Some(keyed),
            PieceSpec::Block(_) => {
                blocks.insert(piece.key.clone(), timing);
            }
        }
        progress(i + 1, pieces.len(), &piece.key);
    }
    let (Some(stem), Some(head)) = (stem, head) else {
        return Err(Error::invalid(
            "latency table",
            "the space produced no stem or head",
        ));
    };
    Ok(LatencyTable {
        format: FORMAT.to_string(),
        version: VERSION,
        space: "mbconv".to_string(),
        device: backend.device_name(),
        timer: backend.timer_kind().to_string(),
        build: build_description(),
        scale: scale.clone(),
        warmup: proto.warmup,
        repeats: proto.repeats,
        flush_mib: proto.flush_mib,
        build_seconds: start.elapsed().as_secs_f64(),
        stem,
        head,
        blocks,
    })
}

/// One architecture of a check: predicted and measured milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct CheckRow {
    pub arch: String,
    pub blocks: usize,
    pub predicted_ms: f64,
    pub measured: Timing,
    /// (predicted - measured median) / measured median.
    pub relative_error: f64,
}

/// The predictor's error over random architectures.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub device: String,
    pub build: String,
    pub scale: Scale,
    pub warmup: usize,
    pub repeats: usize,
    pub seed: u64,
    pub rows: Vec<CheckRow>,
    /// Mean and largest |relative error|, and the mean signed one (its bias).
    pub mean_abs_relative_error: f64,
    pub worst_abs_relative_error: f64,
    pub mean_relative_error: f64,
}

/// Draws `samples` architectures of the space from `seed`, times each network whole and
/// compares with `table`'s prediction at `scale`; `progress` sees each row.
pub fn check<B: Backend>(
    backend: &B,
    table: &LatencyTable,
    scale: &Scale,
    samples: usize,
    proto: Protocol,
    seed: u64,
    mut progress: impl FnMut(&CheckRow),
) -> Result<CheckReport> {
    scale.validate()?;
    proto.validate()?;
    if samples == 0 {
        return Err(Error::invalid("--samples", "must be at least 1"));
    }
    if backend.device_name() != table.device {
        return Err(Error::invalid(
            "--device",
            format!(
                "this is {}, but the latency table was measured on {} (match --device and \
                 --threads)",
                backend.device_name(),
                table.device
            ),
        ));
    }
    let space = MbConvSpace::default();
    let mut rng = Rng::fork(seed, "latency check");
    let archs: Vec<MbConvArch> = (0..samples).map(|_| space.sample(&mut rng)).collect();
    // Every prediction first: a table of another scale is refused before anything is timed.
    let predictions = archs
        .iter()
        .map(|a| table.predict_at(a, scale))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::with_capacity(samples);
    for (arch, predicted) in archs.iter().zip(predictions) {
        let measured = measure_network(backend, scale, arch, proto, seed)?;
        let row = CheckRow {
            arch: arch.to_arch_string(),
            blocks: predicted.blocks,
            predicted_ms: predicted.total_ms,
            relative_error: (predicted.total_ms - measured.median_ms) / measured.median_ms,
            measured,
        };
        progress(&row);
        rows.push(row);
    }
    let n = rows.len() as f64;
    let abs = rows.iter().map(|r| r.relative_error.abs());
    Ok(CheckReport {
        device: backend.device_name(),
        build: build_description(),
        scale: scale.clone(),
        warmup: proto.warmup,
        repeats: proto.repeats,
        seed,
        mean_abs_relative_error: abs.clone().sum::<f64>() / n,
        worst_abs_relative_error: abs.fold(0.0, f64::max),
        mean_relative_error: rows.iter().map(|r| r.relative_error).sum::<f64>() / n,
        rows,
    })
}
