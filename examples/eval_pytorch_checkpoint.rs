//! Loads a DARTS evaluation network from a safetensors `state_dict` (a PyTorch DARTS
//! checkpoint converted with `safetensors.torch.save_file(model.state_dict(), PATH)`, or a
//! nasrs `model.safetensors`) and evaluates it on the bundled MNIST test set (eval-mode BN).
//!
//! ```sh
//! cargo run --release --example eval_pytorch_checkpoint              # standalone
//! cargo run --release --example eval_pytorch_checkpoint -- PATH [GENOTYPE] [LIMIT]
//! ```
//!
//! Without a path it first writes one: a freshly built DARTS_V2 network (C=4, 3 cells, for
//! 1x28x28 images and 10 classes), saved as PyTorch would, the bare `state_dict` with no nasrs
//! metadata, so its shape is read off the weights and the genotype comes from the command
//! line (`DARTS_V2` unless given: a name, or a genotype JSON file). The network must take
//! MNIST's 1 input channel. `LIMIT` evaluates the first N test images only (default 1000).

use nasrs::data::{default_data_dir, load, DatasetKind};
use nasrs::io::save_safetensors_with_i64;
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig, EvalNetwork};
use nasrs::nas::evaluate::{evaluate, load_network};
use nasrs::{Cpu, Error};
use std::collections::HashMap;
use std::path::PathBuf;

fn main() -> nasrs::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let be = Cpu::new();
    let genotype = resolve_genotype(args.get(1).map_or("DARTS_V2", String::as_str))?;
    let limit: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .map_err(|_| Error::invalid("LIMIT", format!("{s:?} is not a number")))?,
        None => 1000,
    };
    let (path, written) = match args.first() {
        Some(p) => (PathBuf::from(p), false),
        None => {
            let path = std::env::temp_dir()
                .join(format!("nasrs-darts-v2-{}.safetensors", std::process::id()));
            let config = EvalConfig {
                genotype: genotype.clone(),
                channels: 4,
                layers: 3,
                classes: 10,
                in_channels: 1,
                auxiliary: false,
            };
            let net = EvalNetwork::new(&be, config, 0)?;
            // PyTorch's state_dict: f32 weights and BN statistics, i64 num_batches_tracked.
            let (floats, ints) = net.state_dict(&be)?;
            save_safetensors_with_i64(&path, &floats, &ints, HashMap::new())?;
            println!("wrote a fresh DARTS_V2 state_dict to {}", path.display());
            (path, true)
        }
    };

    let (mut net, meta) = load_network(&be, &path, Some(genotype))?;
    if written {
        std::fs::remove_file(&path).ok();
    }
    let m = &meta.model;
    println!(
        "loaded {}: C={}, {} cells, {} classes, {} input channels, auxiliary head {}, {} weights",
        path.display(),
        m.channels,
        m.layers,
        m.classes,
        m.in_channels,
        m.auxiliary,
        net.num_weights()
    );

    let (_, test) = load(DatasetKind::Mnist, &default_data_dir())?;
    if test.c != m.in_channels {
        return Err(Error::invalid(
            "checkpoint",
            format!(
                "the network takes {} input channels and MNIST has {}; evaluate it on its own \
                 data with `nasrs eval --checkpoint {} --dataset ...`",
                m.in_channels,
                test.c,
                path.display()
            ),
        ));
    }
    let test = test.first(Some(limit))?;
    let report = evaluate(&be, &mut net, &test, 100)?;
    println!(
        "{}: {} images, loss {:.4}, accuracy {:.2}% (an untrained network guesses: ~10%)",
        test.name,
        report.count,
        report.loss,
        100.0 * report.accuracy
    );
    Ok(())
}
