//! `nasrs model`: a network's parameters per module and the FLOPs of one forward, for the
//! search supernet (`--kind search`), a genotype's evaluation network (`--kind eval`) or an
//! NAS-Bench-201 cell's network (`--kind nb201 --arch ...`).
//! Built on the counting backend: nothing is allocated, any size the arithmetic allows can
//! be inspected.

use clap::Args;
use nasrs::backend::counting::Counting;
use nasrs::data::Batch;
use nasrs::nas::classifier::NetworkConfig;
use nasrs::nas::darts::{DartsHyper, DeviceBatch};
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig, EvalNetwork};
use nasrs::nas::evaluate::eval_logits;
use nasrs::nas::nb201_model::{Nb201Config, Nb201Network};
use nasrs::nas::sizing;
use nasrs::nas::space::nb201::Nb201Arch;
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::{Error, Result};

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// search (the DARTS supernet) | eval (a genotype's evaluation network) | nb201 (the
    /// NAS-Bench-201 network of an --arch cell)
    #[arg(long, default_value = "search")]
    kind: String,
    /// The cell of `--kind eval` (any form `nasrs train --genotype` takes).
    #[arg(long, default_value = "DARTS_V2")]
    genotype: String,
    /// The cell of `--kind nb201`: an NB201 arch string (`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`).
    #[arg(long)]
    arch: Option<String>,
    /// Initial channels C (default: 16 for search and nb201, 36 for eval, as in the papers).
    #[arg(long)]
    channels: Option<usize>,
    /// Cells L (default: 8 for search, 20 for eval); for nb201 cells per stage N (default 5).
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    /// Include the auxiliary head (`--kind eval`; it is left out of the paper's count).
    #[arg(long)]
    auxiliary: bool,
    /// Image side of the forward whose FLOPs are counted.
    #[arg(long, default_value_t = 32)]
    size: usize,
    #[arg(long)]
    json: bool,
}

/// Weights per top-level module (`stem`, `cells.i`, `classifier`, `auxiliary_head`), in
/// the order the network declares them.
fn per_module<'a>(
    shapes: impl Iterator<Item = (&'a str, &'a nasrs::Shape)>,
) -> Vec<(String, usize)> {
    let mut modules: Vec<(String, usize)> = Vec::new();
    for (name, shape) in shapes {
        let mut parts = name.split('.');
        let first = parts.next().unwrap_or(name);
        let module = match (first, parts.next()) {
            ("cells", Some(i)) => format!("cells.{i}"),
            _ => first.to_string(),
        };
        match modules.last_mut() {
            Some((m, n)) if *m == module => *n += shape.numel(),
            _ => modules.push((module, shape.numel())),
        }
    }
    modules
}

fn zero_batch(
    be: &Counting,
    c: usize,
    size: usize,
    classes: usize,
) -> Result<DeviceBatch<Counting>> {
    let batch = Batch {
        images: vec![0.0; c * size * size],
        labels: vec![0],
        n: 1,
        c,
        h: size,
        w: size,
    };
    DeviceBatch::from_batch(be, &batch, classes)
}

pub(crate) fn model(a: ModelArgs) -> Result<()> {
    let host = nasrs::host::available_memory();
    let be = Counting::new();
    let (kind, channels, layers, modules, total, extra, snap) = match a.kind.as_str() {
        "search" => {
            let (c, l) = (a.channels.unwrap_or(16), a.layers.unwrap_or(8));
            let config = SearchConfig::darts(c, l, a.classes, a.in_channels);
            // Sizes checked (overflow, and what counting itself costs the host) first.
            sizing::search_step_bytes(&config, &DartsHyper::default(), 1, a.size, a.size, Some(0))?;
            let counting = sizing::counting_host_bytes(&config)
                .ok_or_else(|| Error::invalid("--layers", format!("{l} cells overflow")))?;
            sizing::check_fits(
                &format!("counting C={c} L={l}"),
                counting,
                host,
                "this machine",
            )?;
            let mut net = SearchNetwork::new(&be, config, 0)?;
            let mut tape = nasrs::autograd::Tape::new(be.clone());
            tape.set_grad_enabled(false);
            let x = zero_batch(&be, a.in_channels, a.size, a.classes)?;
            be.reset()?;
            let xv = tape.constant(x.images.clone());
            net.run(&mut tape, xv, nasrs::nas::Mode::EVAL, None)?;
            let snap = be.snapshot()?;
            let extra = serde_json::json!({"arch_parameters": net.arch.numel()});
            let modules = per_module(net.weights.shapes());
            ("search", c, l, modules, net.num_weights(), extra, snap)
        }
        "eval" => {
            let (c, l) = (a.channels.unwrap_or(36), a.layers.unwrap_or(20));
            let config = EvalConfig {
                genotype: resolve_genotype(&a.genotype)?,
                channels: c,
                layers: l,
                classes: a.classes,
                in_channels: a.in_channels,
                auxiliary: a.auxiliary,
            };
            config.check_image_size(a.size, a.size)?;
            sizing::eval_bytes(&config, 1, a.size, a.size, Some(0))?;
            let mut net = EvalNetwork::new(&be, config, 0)?;
            let x = zero_batch(&be, a.in_channels, a.size, a.classes)?;
            be.reset()?;
            eval_logits(&be, &mut net, &x.images)?;
            let snap = be.snapshot()?;
            let all: usize = net.weights.shapes().map(|(_, s)| s.numel()).sum();
            let extra = serde_json::json!({
                "genotype": a.genotype,
                "weights_with_auxiliary": all,
                "auxiliary": a.auxiliary,
            });
            let modules = per_module(net.weights.shapes());
            ("eval", c, l, modules, net.num_weights(), extra, snap)
        }
        "nb201" => {
            let text = a.arch.as_deref().ok_or_else(|| {
                Error::invalid(
                    "--arch",
                    "is required with --kind nb201 (an NB201 arch string)",
                )
            })?;
            let arch =
                Nb201Arch::parse(text).map_err(|e| Error::invalid("--arch", e.to_string()))?;
            let config = Nb201Config {
                arch,
                channels: a.channels.unwrap_or(Nb201Config::CHANNELS),
                cells_per_stage: a.layers.unwrap_or(Nb201Config::CELLS_PER_STAGE),
                classes: a.classes,
                in_channels: a.in_channels,
            };
            let (c, n) = (config.channels, config.cells_per_stage);
            // Sizes checked (overflow, and the weights counting draws on the host) first.
            let bound = config.memory_lower_bound(1, a.size, a.size)?;
            sizing::check_fits(
                &format!("counting the NB201 network C={c} N={n}"),
                bound,
                host,
                "this machine",
            )?;
            let mut net = Nb201Network::new(&be, config, 0)?;
            let x = zero_batch(&be, a.in_channels, a.size, a.classes)?;
            be.reset()?;
            eval_logits(&be, &mut net, &x.images)?;
            let snap = be.snapshot()?;
            let extra = serde_json::json!({ "arch": arch.to_arch_string() });
            let modules = per_module(net.weights.shapes());
            ("nb201", c, n, modules, net.num_weights(), extra, snap)
        }
        other => {
            return Err(Error::invalid(
                "--kind",
                format!("'{other}' (expected search, eval or nb201)"),
            ))
        }
    };
    // FLOPs per module: the counting backend's scopes, which the networks name after their
    // modules (`DeviceOps::annotate`); the auxiliary head runs only in training, so it has none.
    let flops = snap.total.flops;
    let flops_of = |m: &str| {
        snap.scopes
            .iter()
            .find(|(s, _)| s == m)
            .map_or(0, |(_, c)| c.flops)
    };
    if a.json {
        let mods: Vec<serde_json::Value> = modules
            .iter()
            .map(|(m, n)| serde_json::json!({"module": m, "weights": n, "forward_flops": flops_of(m)}))
            .collect();
        let mut v = serde_json::json!({
            "kind": kind, "channels": channels, "layers": layers, "classes": a.classes,
            "in_channels": a.in_channels, "weights": total, "modules": mods,
            "forward_flops": flops, "forward_image_size": a.size,
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        out!("{}", super::to_json(&v)?);
        return Ok(());
    }
    out!("{:<16} {:>10} {:>12}", "module", "weights", "MFLOPs");
    for (m, n) in &modules {
        out!("{m:<16} {n:>10} {:>12.3}", flops_of(m) as f64 / 1e6);
    }
    let note = match kind {
        "search" => format!("architecture parameters: {}", extra["arch_parameters"]),
        "nb201" => format!(
            "{}, C={channels} N={layers}; BN running statistics not counted, as in NB201",
            extra["arch"].as_str().unwrap_or("")
        ),
        _ => format!(
            "auxiliary head excluded, as in the paper; with it: {}",
            extra["weights_with_auxiliary"]
        ),
    };
    out!("{:<16} {total:>10}  ({note})", "total");
    out!(
        "forward FLOPs    {:>10.3} G  (one {}x{} image, eval mode; 2 per multiply-add)",
        flops as f64 / 1e9,
        a.size,
        a.size
    );
    Ok(())
}
