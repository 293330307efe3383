//! Embeds the DARTS search network on the CPU: builds a small supernet, runs one
//! first-order and one second-order DARTS iteration on random data, and prints the losses,
//! the second-order step's parts, the alphas in PyTorch's view and the derived genotype.
//! Then saves the network's `state_dict` and loads it into a fresh network.
//!
//! ```sh
//! cargo run --release --example search_step
//! ```

use nasrs::data::Batch;
use nasrs::io::{load_safetensors, save_safetensors_with_i64};
use nasrs::nas::darts::{Darts, DartsHyper, DeviceBatch};
use nasrs::nas::{SearchConfig, SearchNetwork};
use nasrs::{Cpu, Rng};
use std::collections::HashMap;

/// A batch of `n` random 3x16x16 images with random labels below `classes`.
fn random_batch(rng: &mut Rng, n: usize, classes: usize) -> Batch {
    Batch {
        images: (0..n * 3 * 16 * 16).map(|_| rng.normal() as f32).collect(),
        labels: (0..n).map(|_| rng.below(classes) as u32).collect(),
        n,
        c: 3,
        h: 16,
        w: 16,
    }
}

fn main() -> nasrs::Result<()> {
    let be = Cpu::new();
    // The DARTS search space (4 nodes, all 8 ops) at a tiny size: C=4, 5 cells.
    let config = SearchConfig::default().channels(4).layers(5).classes(10);
    let net = SearchNetwork::new(&be, config, 0)?;
    println!(
        "search network: {} weights, {} BN buffers, alphas 2 x [{}, {}]",
        net.num_weights(),
        net.buffers.len(),
        net.config.edges(),
        net.config.ops.len()
    );
    let hyper = DartsHyper::default();
    let mut darts = Darts::new(be.clone(), net, hyper)?;
    let mut rng = Rng::new(1);
    // The weights' learning rate of epoch 0 of a 50-epoch search (the cosine schedule's
    // start, lr_max); the alphas always use hyper.arch_lr.
    let lr = darts.hyper.lr_at(0, 50);

    for order in [1u8, 2] {
        darts.hyper.order = order;
        let train = DeviceBatch::from_batch(&be, &random_batch(&mut rng, 8, 10), 10)?;
        let val = DeviceBatch::from_batch(&be, &random_batch(&mut rng, 8, 10), 10)?;
        let it = darts.iteration_report(&train, &val, lr)?;
        println!(
            "order {order}: weight-step loss {:.4}, architecture-step (validation) loss {:.4}",
            it.weights.loss, it.arch.stats.loss
        );
        if let Some(u) = &it.arch.unrolled {
            println!(
                "  unrolled step: xi {}, ||dw|| {:.4e}, R {:.4e}",
                it.arch.xi, u.dw_norm, u.r
            );
        }
        let g = darts.net.alpha_grad_table(&be, &it.arch.dalpha, false)?;
        let g = g.to_host(&be)?;
        println!(
            "  dalpha_normal {:?}, row 0: {:?}",
            [darts.net.config.edges(), darts.net.config.ops.len()],
            &g[..darts.net.config.ops.len()]
        );
    }
    let alphas = darts.net.alphas_normal(&be)?;
    println!(
        "alphas_normal {}: row 0 {:?}",
        alphas.shape,
        &alphas.to_host(&be)?[..darts.net.config.ops.len()]
    );
    let genotype = darts.net.genotype(&be)?;
    let cell = |ops: &[(nasrs::nas::Primitive, usize)]| {
        let ops: Vec<String> = ops
            .iter()
            .map(|(p, j)| format!("{}({j})", p.name()))
            .collect();
        ops.join(" ")
    };
    println!("genotype normal: {}", cell(&genotype.normal));
    println!("genotype reduce: {}", cell(&genotype.reduce));

    // The state_dict (weights, BN statistics, num_batches_tracked, alpha tables) through a
    // safetensors file into a fresh network.
    let path = std::env::temp_dir().join(format!(
        "nasrs-search-step-{}.safetensors",
        std::process::id()
    ));
    let (floats, ints) = darts.net.state_dict(&be)?;
    save_safetensors_with_i64(&path, &floats, &ints, HashMap::new())?;
    let (tensors, _) = load_safetensors(&path)?;
    let mut copy = SearchNetwork::new(&be, darts.net.config.clone(), 99)?;
    copy.load_state_dict(&be, &tensors, &[], &path)?;
    std::fs::remove_file(&path).ok();
    println!(
        "state_dict: {} tensors + {} num_batches_tracked (= {}); reloaded genotype equal: {}",
        floats.len(),
        ints.len(),
        copy.bn_batches,
        copy.genotype(&be)? == genotype
    );
    Ok(())
}
