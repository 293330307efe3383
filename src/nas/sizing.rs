//! Whether a network fits, decided before any of it is built: the image size its reduction
//! cells (DARTS) or residual blocks (NB201) need, and the memory a step needs against what
//! the device has (DARTS, NB201 and MBConv networks).
//!
//! Memory is judged in two stages. First a lower bound in checked arithmetic (one output
//! per cell edge kept for backward, the 1x1 preprocessing weights): it needs no network, so
//! an absurd request (`--channels 18446744073709551615`, `--layers 1000000`) is refused in
//! microseconds, never by the allocator or the OOM killer. Then, for what passes, the exact
//! step on the counting backend (`backend::counting`: the real network and step, buffers
//! without storage), whose peak of live bytes is the estimate compared with the device.

use super::classifier::NetworkConfig;
use super::darts::{Darts, DartsHyper, DeviceBatch};
use super::eval_model::EvalConfig;
use super::evaluate::eval_logits;
use super::mbconv_model::plan::blocks;
use super::mbconv_model::MbConvConfig;
use super::nb201_model::Nb201Config;
use super::search_model::{SearchConfig, SearchNetwork};
use super::train_run::{TrainHyper, Trainer};
use crate::backend::counting::Counting;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// The reduction cells of a `layers`-cell DARTS network (search and evaluation alike):
/// L/3 and 2L/3, ascending, once each (they coincide for L < 3). Closed form, so a request
/// for 2^64 cells costs nothing to check.
pub fn reduction_cells(layers: usize) -> Vec<usize> {
    // 2L/3 without forming 2L (which overflows for L near 2^64).
    let mut r = vec![layers / 3, 2 * (layers / 3) + (layers % 3 * 2) / 3];
    r.dedup();
    r.retain(|&c| c < layers);
    r
}

/// Checks that `h x w` images pass every reduction of a `layers`-cell network: each halves
/// the feature map in a factorized reduce (two stride-2 1x1 convs, one shifted by a pixel),
/// which needs even sides of at least 2.
pub fn check_reductions(layers: usize, h: usize, w: usize) -> Result<()> {
    let reductions = reduction_cells(layers);
    let (mut fh, mut fw) = (h, w);
    for &cell in &reductions {
        if fh < 2 || fw < 2 || fh % 2 == 1 || fw % 2 == 1 {
            let side = 1usize << reductions.len();
            return Err(Error::invalid(
                "images",
                format!(
                    "{h}x{w} images do not fit {layers} cells: reduction cell {cell} halves a \
                     {fh}x{fw} feature map, which needs even sides of at least 2; use images \
                     whose sides are multiples of {side} (MNIST 28x28 and CIFAR 32x32 fit), \
                     or fewer --layers"
                ),
            ));
        }
        (fh, fw) = (fh / 2, fw / 2);
    }
    Ok(())
}

/// The lower bound (see the module doc), or None when it overflows 64 bits: f32 elements of
/// the stem output, then per cell one kept output per edge and the two 1x1 preprocessing
/// convs (at least `2 C^2` weights). Cells between reductions are alike, so the sum runs
/// over those runs of cells, not over the cells.
fn lower_bound(
    channels: usize,
    layers: usize,
    edges: usize,
    batch: usize,
    h: usize,
    w: usize,
) -> Option<u64> {
    let (edges, batch) = (edges as u64, batch as u64);
    let mut c = channels as u64;
    let (mut fh, mut fw) = (h as u64, w as u64);
    let mut elems = batch
        .checked_mul(3u64.checked_mul(c)?)?
        .checked_mul(fh.checked_mul(fw)?)?;
    // Runs of cells [start, end): a reduction opens a run with C doubled, the map halved.
    let mut starts = vec![0];
    starts.extend(reduction_cells(layers).into_iter().filter(|&r| r > 0));
    let reduces_first = reduction_cells(layers).first() == Some(&0);
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(layers);
        if k > 0 || reduces_first {
            c = c.checked_mul(2)?;
            (fh, fw) = (fh.div_ceil(2), fw.div_ceil(2));
        }
        let kept = edges
            .checked_mul(batch)?
            .checked_mul(c)?
            .checked_mul(fh.checked_mul(fw)?)?;
        let per_cell = kept.checked_add(2u64.checked_mul(c)?.checked_mul(c)?)?;
        elems = elems.checked_add(per_cell.checked_mul((end - start) as u64)?)?;
    }
    elems.checked_mul(4)
}

fn exceeds(what: &str) -> Error {
    Error::invalid(
        what,
        "the network's size overflows 64-bit arithmetic (more than 16 EiB); use fewer \
         --channels, --layers, --nodes or a smaller --batch",
    )
}

fn zero_batch(batch: usize, c: usize, h: usize, w: usize) -> Result<Batch> {
    let n = batch
        .checked_mul(c)
        .and_then(|v| v.checked_mul(h)?.checked_mul(w))
        .ok_or_else(|| exceeds("--batch"))?;
    Ok(Batch {
        images: vec![0.0; n],
        labels: vec![0; batch],
        n: batch,
        c,
        h,
        w,
    })
}

/// Host bytes the counting backend's bookkeeping takes per op instance of the supernet
/// (cells x edges x ops): measured 240 MiB for the 22,400 of C=4 L=200 counted over three
/// phases (`nasrs bench darts-model`, 2026-12-01), about 11 KiB each; rounded up.
const COUNTED_BYTES_PER_OP: u64 = 16 << 10;

/// What counting a step of `cfg` costs the host, or None when that overflows: a network too
/// deep to count (`--layers 1000000`) is refused before the count, not by the OOM killer.
pub fn counting_host_bytes(cfg: &SearchConfig) -> Option<u64> {
    (cfg.layers as u64)
        .checked_mul(cfg.edges() as u64)?
        .checked_mul(cfg.ops.len() as u64)?
        .checked_mul(COUNTED_BYTES_PER_OP)
}

/// Peak bytes of one DARTS iteration (architecture step of `hyper.order`, then the weight
/// step), weights, both optimizers and the staged batches included, on `batch` images of
/// `h x w`; refused early, without building the network, when even the lower bound passes
/// `budget` bytes (the caller's device memory).
pub fn search_step_bytes(
    cfg: &SearchConfig,
    hyper: &DartsHyper,
    batch: usize,
    h: usize,
    w: usize,
    budget: Option<u64>,
) -> Result<u64> {
    cfg.validate()?;
    check_reductions(cfg.layers, h, w)?;
    let edges = cfg
        .edges()
        .checked_mul(2)
        .ok_or_else(|| exceeds("--nodes"))?; // two batches
    let bound =
        lower_bound(cfg.channels, cfg.layers, edges, batch, h, w).ok_or_else(|| exceeds("size"))?;
    if budget.is_some_and(|b| bound > b) {
        return Ok(bound);
    }
    let be = Counting::new();
    let net = SearchNetwork::new(&be, cfg.clone(), 0)?;
    let mut darts = Darts::new(be.clone(), net, hyper.clone())?;
    let data = zero_batch(batch, cfg.in_channels, h, w)?;
    darts.stage(&data, &data)?;
    be.reset()?;
    darts.iteration_staged(hyper.lr_max)?;
    Ok(be.snapshot()?.peak_live_bytes)
}

/// The lower bound of an evaluation network on `batch` images (one kept output per op of
/// the genotype's cells).
pub(crate) fn eval_bound(cfg: &EvalConfig, batch: usize, h: usize, w: usize) -> Result<u64> {
    cfg.validate()?;
    check_reductions(cfg.layers, h, w)?;
    let edges = cfg.genotype.normal.len().max(cfg.genotype.reduce.len());
    lower_bound(cfg.channels, cfg.layers, edges, batch, h, w).ok_or_else(|| exceeds("size"))
}

/// Checks that `h x w` images pass the NB201 network's two residual blocks: each halves the
/// feature map twice over, by a stride-2 3x3 conv and beside it a 2x2 average pool, whose
/// outputs agree only on even sides; so both sides must be multiples of 4.
pub fn check_nb201_image_size(h: usize, w: usize) -> Result<()> {
    let (mut fh, mut fw) = (h, w);
    for block in 0..2 {
        if fh < 2 || fw < 2 || fh % 2 == 1 || fw % 2 == 1 {
            return Err(Error::invalid(
                "images",
                format!(
                    "{h}x{w} images do not fit the NB201 network: residual block {block} \
                     halves a {fh}x{fw} feature map (a stride-2 conv beside a 2x2 pool), which \
                     needs even sides; use images whose sides are multiples of 4 (MNIST 28x28 \
                     and CIFAR 32x32 fit)"
                ),
            ));
        }
        (fh, fw) = (fh / 2, fw / 2);
    }
    Ok(())
}

/// The lower bound of the NB201 network on `batch` images: the stem output, one kept output
/// per cell (its node 3) and per residual block, and the residual blocks' weights (two 3x3
/// convs and the 1x1 shortcut), in f32.
pub(crate) fn nb201_bound(cfg: &Nb201Config, batch: usize, h: usize, w: usize) -> Result<u64> {
    cfg.validate()?;
    check_nb201_image_size(h, w)?;
    let bound = || -> Option<u64> {
        let (batch, n) = (batch as u64, cfg.cells_per_stage as u64);
        let (mut c, mut plane) = (cfg.channels as u64, (h as u64).checked_mul(w as u64)?);
        let mut elems = batch.checked_mul(c)?.checked_mul(plane)?;
        for stage in 0..3 {
            let mut outputs = n;
            if stage > 0 {
                let c_out = c.checked_mul(2)?;
                let weights = c.checked_mul(c_out)?.checked_mul(9 + 1)?;
                let weights = weights.checked_add(c_out.checked_mul(c_out)?.checked_mul(9)?)?;
                elems = elems.checked_add(weights)?;
                (c, plane, outputs) = (c_out, plane / 4, n.checked_add(1)?);
            }
            let per = batch.checked_mul(c)?.checked_mul(plane)?;
            elems = elems.checked_add(per.checked_mul(outputs)?)?;
        }
        elems.checked_mul(4)
    };
    bound().ok_or_else(|| exceeds("size"))
}

/// The lower bound of the MBConv network on `batch` images: the stem output and each
/// block's expanded and output activations (kept for backward), and the weights (the
/// counted parameters), in f32.
pub(crate) fn mbconv_bound(cfg: &MbConvConfig, batch: usize, h: usize, w: usize) -> Result<u64> {
    cfg.validate()?;
    cfg.check_image_size(h, w)?;
    let (plan, stem, head) = blocks(&cfg.arch, cfg.width_mult, cfg.depth_mult)?;
    let bound = || -> Option<u64> {
        let batch = batch as u64;
        let (mut fh, mut fw) = ((h as u64).div_ceil(2), (w as u64).div_ceil(2));
        let mut elems = batch.checked_mul(stem as u64)?.checked_mul(fh * fw)?;
        for b in &plan {
            if b.stride == 2 {
                (fh, fw) = (fh.div_ceil(2), fw.div_ceil(2));
            }
            let (e, o) = (b.expanded as u64, b.out_channels as u64);
            let acts = batch.checked_mul(e.checked_add(o)?)?.checked_mul(fh * fw)?;
            let k = b.kernel as u64;
            let weights = e.checked_mul(b.in_channels as u64 + k * k + o)?;
            elems = elems.checked_add(acts)?.checked_add(weights)?;
        }
        let head_acts = batch.checked_mul(head as u64)?.checked_mul(fh * fw)?;
        elems.checked_add(head_acts)?.checked_mul(4)
    };
    bound().ok_or_else(|| exceeds("size"))
}

/// Peak bytes of one training step of a classifier network (forward with the auxiliary
/// head if any, backward, SGD), weights and momentum included; the lower bound alone when it
/// already passes `budget`.
pub fn train_step_bytes<M: NetworkConfig>(
    cfg: &M,
    hyper: &TrainHyper,
    batch: usize,
    h: usize,
    w: usize,
    budget: Option<u64>,
) -> Result<u64> {
    let bound = cfg.memory_lower_bound(batch, h, w)?;
    if budget.is_some_and(|b| bound > b) {
        return Ok(bound);
    }
    let be = Counting::new();
    let net = cfg.build(&be, 0)?;
    let mut trainer = Trainer::new(be.clone(), net, hyper.clone())?;
    let data = DeviceBatch::from_batch(
        &be,
        &zero_batch(batch, cfg.in_channels(), h, w)?,
        cfg.classes(),
    )?;
    be.reset()?;
    trainer.step(&data, hyper.lr_max, hyper.drop_path, &mut Rng::new(0))?;
    Ok(be.snapshot()?.peak_live_bytes)
}

/// Peak bytes of evaluating a classifier network on one batch (eval mode, no gradients);
/// the lower bound alone when it already passes `budget`.
pub fn eval_bytes<M: NetworkConfig>(
    cfg: &M,
    batch: usize,
    h: usize,
    w: usize,
    budget: Option<u64>,
) -> Result<u64> {
    let bound = cfg.memory_lower_bound(batch, h, w)?;
    if budget.is_some_and(|b| bound > b) {
        return Ok(bound);
    }
    let be = Counting::new();
    let mut net = cfg.build(&be, 0)?;
    let data = DeviceBatch::from_batch(
        &be,
        &zero_batch(batch, cfg.in_channels(), h, w)?,
        cfg.classes(),
    )?;
    be.reset()?;
    eval_logits(&be, &mut net, &data.images)?;
    Ok(be.snapshot()?.peak_live_bytes)
}

/// What a device holds beyond the counted tensors, as a factor on the counted peak. On the
/// CPU the allocator's free lists, the ops' scratch and what a run holds besides the step
/// (data, binary): measured peak RSS of a one-epoch search over the counted peak of a
/// first-order DARTS iteration (C=4, batch 32, 28x28, 2026-12-02, after the tape began
/// dropping values no backward reads) was 1.55 at 5 cells, 1.35 at 20 and 1.31 at 50. On
/// CUDA the pool's fragmentation and cuBLAS's workspace: not measured on a GPU yet, so the
/// CPU's larger figure stands in.
pub const MEMORY_OVERHEAD: f64 = 1.6;

/// Refuses `need` counted bytes (times [`MEMORY_OVERHEAD`]) on `device` when they pass what
/// it has: one line with the requested configuration (`request`), the estimate and the
/// device's memory.
pub fn check_fits(request: &str, need: u64, available: Option<u64>, device: &str) -> Result<()> {
    let need = (need as f64 * MEMORY_OVERHEAD) as u64;
    match available {
        Some(have) if need > have => Err(Error::invalid(
            "size",
            format!(
                "{request} needs about {} (estimated), but {device} has {} available; use \
                 fewer --channels or --layers or a smaller --batch",
                human_bytes(need),
                human_bytes(have)
            ),
        )),
        _ => Ok(()),
    }
}

/// `1.5 GiB`, `320.0 MiB`, `12 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    if v < 1024.0 {
        return format!("{b} B");
    }
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn reduction_cells_are_the_networks() {
        for layers in 1..60 {
            let slow: Vec<usize> = (0..layers)
                .filter(|&i| i == layers / 3 || i == 2 * layers / 3)
                .collect();
            assert_eq!(reduction_cells(layers), slow, "L={layers}");
        }
        assert_eq!(reduction_cells(usize::MAX).len(), 2);
    }

    #[test]
    fn reductions_need_even_sides() {
        assert!(check_reductions(5, 28, 28).is_ok());
        assert!(check_reductions(5, 32, 32).is_ok());
        for (h, w) in [(1, 1), (3, 3), (6, 6), (28, 27)] {
            let e = check_reductions(5, h, w).unwrap_err().to_string();
            assert!(e.contains(&format!("{h}x{w} images")), "{e}");
        }
    }

    #[test]
    fn nb201_needs_sides_divisible_by_4() {
        for (h, w) in [(32, 32), (28, 28), (8, 4), (4, 4)] {
            assert!(check_nb201_image_size(h, w).is_ok(), "{h}x{w}");
        }
        for (h, w) in [(30, 30), (2, 2), (0, 4), (6, 8), (32, 1)] {
            let e = check_nb201_image_size(h, w).unwrap_err().to_string();
            assert!(e.contains(&format!("{h}x{w} images")), "{e}");
        }
    }

    #[test]
    fn nb201_estimate_is_at_least_the_bound_and_absurd_sizes_are_refused() {
        use crate::nas::space::nb201::{Nb201Arch, Nb201Op};
        let cfg = Nb201Config {
            channels: 4,
            cells_per_stage: 1,
            ..Nb201Config::new(Nb201Arch([Nb201Op::NorConv3x3; 6]), 10, 1)
        };
        let hyper = TrainHyper::nb201();
        let need = train_step_bytes(&cfg, &hyper, 8, 28, 28, None).unwrap();
        let bound = nb201_bound(&cfg, 8, 28, 28).unwrap();
        assert!(need >= bound && bound > 0, "{need} {bound}");
        assert!(eval_bytes(&cfg, 8, 28, 28, None).unwrap() < need);
        for (c, n) in [(usize::MAX, 5), (1 << 40, 5), (16, usize::MAX / 2)] {
            let cfg = Nb201Config {
                channels: c,
                cells_per_stage: n,
                ..cfg.clone()
            };
            match train_step_bytes(&cfg, &hyper, 32, 32, 32, Some(1 << 40)) {
                Ok(need) => assert!(need > 1 << 40, "C={c} N={n}: {need}"),
                Err(e) => assert!(e.to_string().contains("overflow"), "{e}"),
            }
        }
    }

    #[test]
    fn the_estimate_is_at_least_the_bound_and_grows_with_the_batch() {
        let cfg = SearchConfig::darts(4, 5, 10, 1);
        let hyper = DartsHyper::default();
        let small = search_step_bytes(&cfg, &hyper, 8, 28, 28, None).unwrap();
        let big = search_step_bytes(&cfg, &hyper, 32, 28, 28, None).unwrap();
        let bound = lower_bound(4, 5, 2 * cfg.edges(), 32, 28, 28);
        assert!(
            big > small && bound.is_some_and(|b| big >= b),
            "{small} {big} {bound:?}"
        );
    }

    #[test]
    fn absurd_sizes_are_refused_without_building() {
        let hyper = DartsHyper::default();
        for (c, l, nodes) in [
            (usize::MAX, 5, 4),
            (1 << 32, 5, 4),
            (4, 1_000_000, 4),
            (4, 5, 100_000),
        ] {
            let mut cfg = SearchConfig::darts(c, l, 10, 1);
            cfg.steps = nodes;
            cfg.multiplier = nodes;
            let r = search_step_bytes(&cfg, &hyper, 32, 28, 28, Some(1 << 40));
            match r {
                Ok(need) => assert!(need > 1 << 40, "C={c} L={l} nodes {nodes}: {need}"),
                Err(e) => assert!(e.to_string().contains("overflows"), "{e}"),
            }
        }
    }
}
