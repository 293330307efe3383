//! Training refuses what cannot work, naming it: the auxiliary head on an image size it does
//! not fit (before anything is written), unknown or malformed genotypes, and checkpoints of
//! another shape or genotype (a bare state_dict loads with the right genotype, its shape
//! inferred).

mod common;

use common::train::{aux_config, run_aux, tmp, train_config};
use nasrs::data::synthetic;
use nasrs::io::{load_safetensors, save_safetensors};
use nasrs::nas::eval_model::resolve_genotype;
use nasrs::nas::evaluate::load_network;
use nasrs::nas::run_dir::Start;
use nasrs::nas::train_run::{Silent, TrainRun, CHECKPOINT, MODEL};
use nasrs::nas::Genotype;
use nasrs::Cpu;

#[test]
fn auxiliary_head_on_the_wrong_image_size_is_refused_up_front() {
    let train = synthetic(16, 1, 28, 28, 3, 1).unwrap();
    let dir = tmp("aux28");
    let cfg = train_config(Genotype::builtin("DARTS_V2").unwrap(), 1, true, 1);
    let err = TrainRun::new(Cpu::new(), cfg, &dir)
        .unwrap()
        .run(&train, &train, Start::New, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--auxiliary") && err.contains("28x28"),
        "{err}"
    );
    assert!(!dir.join(CHECKPOINT).exists());
}

#[test]
fn bad_genotypes_and_checkpoints_name_the_culprit() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let err = resolve_genotype("DARTS_V9").unwrap_err().to_string();
    assert!(
        err.contains("--genotype") && err.contains("DARTS_V9"),
        "{err}"
    );
    let g = dir.join("genotype.json");
    std::fs::write(&g, "{\"normal\": 3}").unwrap();
    let err = resolve_genotype(g.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("genotype.json"), "{err}");
    // A node reading a state that does not exist yet.
    let mut bad = Genotype::builtin("DARTS_V2").unwrap();
    bad.normal[0].1 = 4;
    std::fs::write(&g, serde_json::to_string(&bad).unwrap()).unwrap();
    let err = resolve_genotype(g.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("genotype.json") && err.contains("state 4"),
        "{err}"
    );
    // A checkpoint of another shape.
    let be = Cpu::new();
    let run = tmp("shape");
    run_aux(&run, aux_config(1), false).unwrap();
    let (t, _) = load_safetensors(&run.join(MODEL)).unwrap();
    let p = dir.join("bare.safetensors");
    save_safetensors(&p, &t, Default::default()).unwrap();
    let err = load_network(&be, &p, None).err().unwrap().to_string();
    assert!(err.contains("--genotype"), "{err}");
    // Bare state_dict + the wrong genotype: names differ, the file is named.
    let err = load_network(&be, &p, Genotype::builtin("DARTS_V1"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bare.safetensors"), "{err}");
    // ... and with the right one it loads, shape inferred.
    let (net, m) = load_network(&be, &p, Genotype::builtin("DARTS_V2")).unwrap();
    assert!(m.model.auxiliary && m.model.channels == 2 && m.model.layers == 3);
    assert_eq!(net.bn_batches, 3);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&run);
}
