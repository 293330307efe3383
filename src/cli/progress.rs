//! The progress bar of searches and training runs: one bar per epoch (step, loss, accuracy,
//! ETA), then a one-line summary of the epoch.

use indicatif::{ProgressBar, ProgressStyle};
use nasrs::nas::darts::StepStats;
use nasrs::nas::search_run::{EpochMetrics, Progress};
use nasrs::nas::spos::run::SposEpoch;
use nasrs::nas::train_run::{TrainEpochMetrics, TrainStepStats};

/// A progress bar per epoch (step, loss, accuracy, ETA), for searches and training runs;
/// each epoch ends with a one-line summary.
#[derive(Default)]
pub(crate) struct EpochBar {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl EpochBar {
    fn start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epochs = epochs;
        let bar = ProgressBar::new(steps as u64);
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar = Some(bar);
    }
    fn step(&self, loss: f64, acc: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.3} acc {:.1}%", 100.0 * acc));
            b.inc(1);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress<StepStats, EpochMetrics> for EpochBar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start(epoch, epochs, steps);
    }
    fn step(&mut self, _step: usize, s: &StepStats, acc: f64) {
        EpochBar::step(self, s.loss, acc);
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.finish();
        eprintln!(
            "epoch {}/{}: lr {:.4} train loss {:.3} acc {:.1}% | valid loss {:.3} acc {:.1}% | {:.1}s",
            m.epoch + 1,
            self.epochs,
            m.lr,
            m.train_loss,
            100.0 * m.train_acc,
            m.valid_loss,
            100.0 * m.valid_acc,
            m.seconds
        );
    }
}

impl Progress<StepStats, SposEpoch> for EpochBar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start(epoch, epochs, steps);
    }
    fn step(&mut self, _step: usize, s: &StepStats, acc: f64) {
        EpochBar::step(self, s.loss, acc);
    }
    fn epoch_end(&mut self, m: &SposEpoch) {
        self.finish();
        eprintln!(
            "epoch {}/{}: lr {:.4} supernet train loss {:.3} acc {:.1}% (one path per batch) | {:.1}s",
            m.epoch + 1,
            self.epochs,
            m.lr,
            m.train_loss,
            100.0 * m.train_acc,
            m.seconds
        );
    }
}

impl Progress<TrainStepStats, TrainEpochMetrics> for EpochBar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start(epoch, epochs, steps);
    }
    fn step(&mut self, _step: usize, s: &TrainStepStats, acc: f64) {
        EpochBar::step(self, s.loss, acc);
    }
    fn epoch_end(&mut self, m: &TrainEpochMetrics) {
        self.finish();
        eprintln!(
            "epoch {}/{}: lr {:.4} drop-path {:.3} train loss {:.3} acc {:.1}% | test loss {:.3} acc {:.2}% | {:.1}s",
            m.epoch + 1,
            self.epochs,
            m.lr,
            m.drop_prob,
            m.train_loss,
            100.0 * m.train_acc,
            m.test_loss,
            100.0 * m.test_acc,
            m.seconds
        );
    }
}
