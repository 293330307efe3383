//! Trains the DARTS_V2 cell from scratch for one short epoch on the bundled MNIST subset with
//! `TrainRun`, in a temporary run folder, and prints the epoch's metrics and the files the run
//! wrote (`model.safetensors` is the PyTorch `state_dict`).
//!
//! ```sh
//! cargo run --release --example train_genotype
//! ```

use nasrs::data::{default_data_dir, load, Augment, DatasetKind};
use nasrs::nas::eval_model::{resolve_genotype, EvalConfig};
use nasrs::nas::evaluate::load_network;
use nasrs::nas::run_dir::Start;
use nasrs::nas::train_run::{Silent, TrainHyper, TrainRun, TrainRunConfig, MODEL};
use nasrs::Cpu;

fn main() -> nasrs::Result<()> {
    let be = Cpu::new();
    let (train, test) = load(DatasetKind::Mnist, &default_data_dir())?;
    let config = TrainRunConfig {
        dataset: "mnist".into(),
        model: EvalConfig {
            genotype: resolve_genotype("DARTS_V2")?,
            channels: 4,
            layers: 3,
            classes: train.classes,
            in_channels: train.c,
            auxiliary: false,
        },
        hyper: TrainHyper::default(),
        epochs: 1,
        batch: 32,
        seed: 0,
        augment: Augment::none(),
        train_limit: Some(512),
        test_limit: Some(256),
        resolution: None,
    };
    let out = std::env::temp_dir().join(format!("nasrs-train-genotype-{}", std::process::id()));
    let run = TrainRun::new(be.clone(), config, &out)?;
    // `Start::New` refuses a folder holding an earlier run; `Resume` continues it,
    // `Replace` starts over (the command line's `--resume` / `--force`).
    let metrics = run.run(&train, &test, Start::New, &mut Silent)?;
    for m in &metrics {
        println!(
            "epoch {}: lr {:.4}, train loss {:.4} (acc {:.1}%), test loss {:.4} (acc {:.1}%), {:.1} s",
            m.epoch,
            m.lr,
            m.train_loss,
            100.0 * m.train_acc,
            m.test_loss,
            100.0 * m.test_acc,
            m.seconds
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .map_err(|e| nasrs::Error::io(&out, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    println!("{}: {}", out.display(), files.join(", "));
    let (net, meta) = load_network(&be, &out.join(MODEL), None)?;
    println!(
        "{MODEL} loads back: {} weights, genotype {}",
        net.num_weights(),
        if meta.model.genotype == run.config.model.genotype {
            "DARTS_V2"
        } else {
            "changed?"
        }
    );
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}
