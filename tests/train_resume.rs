//! Training resumes exactly: with the auxiliary head, drop-path and augmentation on, a run
//! resumed after an epoch (or killed mid-run) gives the uninterrupted run's metrics,
//! checkpoint and model bit for bit on the CPU; resuming with other options is refused; a
//! NaN stops the run and keeps the last checkpoint.
//!
//! On every device (`test_device!`): a training run with the auxiliary head, drop-path and
//! augmentation, stopped after an epoch and resumed, gives the uninterrupted run's metrics,
//! checkpoint and model (bit for bit on the CPU and the simulation, 1e-4 on a GPU), and the
//! final model evaluates to the last epoch's test metrics on the device.

mod common;

use common::train::{aux_config, cifar_like, metrics, run_aux, tmp};
use common::{assert_reproduced, device_kind, safetensors_outputs, tmp_dir, Outputs};
use nasrs::io::{load_safetensors, save_safetensors};
use nasrs::nas::evaluate::{evaluate, load_network};
use nasrs::nas::run_dir::Start;
use nasrs::nas::train_run::{
    Progress, Silent, TrainEpochMetrics, TrainRun, TrainStepStats, CHECKPOINT, MODEL,
};
use nasrs::{Backend, Cpu, Error};
use std::path::Path;

#[test]
fn resume_is_bitwise_identical_with_auxiliary_drop_path_and_augmentation() {
    let full = tmp("full");
    let m_full = run_aux(&full, aux_config(3), false).unwrap();
    assert!(m_full.iter().all(|m| m.train_aux_loss.is_some()));
    let split = tmp("split");
    run_aux(&split, aux_config(1), false).unwrap();
    run_aux(&split, aux_config(3), true).unwrap();
    // Killed at the start of epoch 2 (the checkpoint of epoch 1 written, drop-path already
    // drawing masks), then resumed with the same options.
    let killed = tmp("killed");
    struct Kill;
    impl Progress<TrainStepStats, TrainEpochMetrics> for Kill {
        fn epoch_start(&mut self, epoch: usize, _: usize, _: usize) {
            assert!(epoch < 2, "killed");
        }
    }
    let (train, test) = cifar_like();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        TrainRun::new(Cpu::new(), aux_config(3), &killed)
            .unwrap()
            .run(&train, &test, Start::New, &mut Kill)
    }));
    assert!(r.is_err(), "the run was not killed");
    assert_eq!(metrics(&killed).len(), 2);
    run_aux(&killed, aux_config(3), true).unwrap();
    for dir in [&split, &killed] {
        assert_eq!(metrics(&full), metrics(dir), "metrics differ after resume");
        for f in [CHECKPOINT, MODEL] {
            let (a, ma) = load_safetensors(&full.join(f)).unwrap();
            let (b, mb) = load_safetensors(&dir.join(f)).unwrap();
            assert_eq!(a, b, "{f} differs after resume");
            assert!(
                std::fs::read(full.join(f)).unwrap() == std::fs::read(dir.join(f)).unwrap(),
                "{f}: bytes differ after resume"
            );
            assert_eq!(ma.get("nasrs.model"), mb.get("nasrs.model"));
        }
    }
    // num_batches_tracked: 3 epochs of 24 / 8 = 3 steps.
    let (t, _) = load_safetensors(&full.join(MODEL)).unwrap();
    assert_eq!(
        t["auxiliary_head.features.6.num_batches_tracked"].data,
        vec![9.0]
    );
    assert_eq!(t["stem.1.num_batches_tracked"].data, vec![9.0]);
    // Drop-path draws from its own stream: another seed gives another run.
    let other = tmp("other");
    let mut cfg = aux_config(1);
    cfg.seed = 6;
    let m_other = run_aux(&other, cfg, false).unwrap();
    assert_ne!(m_other[0].train_loss, m_full[0].train_loss);
    for d in [&full, &split, &killed, &other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn resume_with_different_options_is_refused() {
    let dir = tmp("mismatch");
    run_aux(&dir, aux_config(1), false).unwrap();
    let mut other = aux_config(2);
    other.hyper.drop_path = 0.3;
    let err = run_aux(&dir, other, true).unwrap_err().to_string();
    assert!(
        err.contains("--resume") && err.contains(CHECKPOINT),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tmp("nan");
    run_aux(&dir, aux_config(1), false).unwrap();
    let path = dir.join(CHECKPOINT);
    let (mut t, meta) = load_safetensors(&path).unwrap();
    // Finite, but it overflows the logits (a NaN in the file would be refused at load).
    t.get_mut("classifier.weight").unwrap().data[0] = f32::MAX;
    // The I64 counters are read back as f32 and written as such here; nasrs reads either.
    save_safetensors(&path, &t, meta).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = run_aux(&dir, aux_config(2), true).unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("epoch 1") && msg.contains("last good checkpoint"),
        "{msg}"
    );
    assert_eq!(
        before,
        std::fs::read(&path).unwrap(),
        "checkpoint was touched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Losses and accuracies of every epoch, named by epoch.
fn train_metric_outputs(metrics: &[TrainEpochMetrics]) -> Outputs {
    let mut out = Outputs::default();
    for m in metrics {
        let e = m.epoch;
        for (name, v) in [
            ("lr", m.lr),
            ("drop_prob", m.drop_prob),
            ("train_loss", m.train_loss),
            ("train_aux_loss", m.train_aux_loss.unwrap_or(f64::NAN)),
            ("train_acc", m.train_acc),
            ("test_loss", m.test_loss),
            ("test_acc", m.test_acc),
        ] {
            out.scalar(format!("{e}.{name}"), v);
        }
    }
    out
}

/// DARTS_V2 (C=2, 3 cells, auxiliary head, drop-path, CIFAR augmentation with cutout) on 24
/// 32x32 images, batch 8, for two epochs: uninterrupted, and stopped after the first then
/// resumed, on `be`.
fn train_resume_reproduces_the_run<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let (train, test) = cifar_like();
    let run = |dir: &Path, epochs: usize, resume: bool| {
        TrainRun::new(be.clone(), aux_config(epochs), dir)?.run(
            &train,
            &test,
            Start::from_flags(resume, false)?,
            &mut Silent,
        )
    };
    let kind = format!("{:?}", device_kind(be));
    let (full, split) = (
        tmp_dir("train-e2e", &format!("{kind}-full")),
        tmp_dir("train-e2e", &format!("{kind}-split")),
    );
    let history = run(&full, 2, false)?;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|m| m.train_aux_loss.is_some()));
    run(&split, 1, false)?;
    run(&split, 2, true)?;
    assert_reproduced(
        be,
        "metrics after resume",
        &train_metric_outputs(&metrics(&split)),
        &train_metric_outputs(&metrics(&full)),
    );
    for f in [CHECKPOINT, MODEL] {
        let (a, b) = (
            safetensors_outputs(&full.join(f)),
            safetensors_outputs(&split.join(f)),
        );
        assert_reproduced(be, &format!("{f} after resume"), &b, &a);
    }
    // The final model, loaded on the device, evaluates to the last epoch's test metrics.
    let (mut net, _) = load_network(be, &full.join(MODEL), None)?;
    let report = evaluate(be, &mut net, &test, 8)?;
    let last = history.last().expect("two epochs");
    assert_eq!(report.accuracy, last.test_acc);
    assert!((report.loss - last.test_loss).abs() <= 1e-6 * last.test_loss.abs());
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&split);
    Ok(())
}

test_device!(
    train_resume_is_identical_on_the_device,
    train_resume_reproduces_the_run
);
