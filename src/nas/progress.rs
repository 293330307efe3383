//! How a search or training run reports as it goes: one trait for both, over the run's
//! per-step and per-epoch records (the CLI draws a progress bar; tests stay silent).

pub trait Progress<Step, Epoch> {
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// After each step, with the accuracy so far in this epoch.
    fn step(&mut self, _step: usize, _stats: &Step, _correct_so_far: f64) {}
    fn epoch_end(&mut self, _metrics: &Epoch) {}
}

/// Reports nothing.
pub struct Silent;
impl<Step, Epoch> Progress<Step, Epoch> for Silent {}
