//! A path's score with inherited weights: its batch-norm statistics recalibrated on training
//! batches (the statistics the supernet kept are averages over every path it trained, wrong
//! for any one of them), then its accuracy on validation batches. The supernet's own
//! statistics are restored afterwards, so scoring leaves the supernet as it was.

use super::Supernet;
use crate::autograd::Tape;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nas::darts::DeviceBatch;
use crate::nas::modules::BN_MOMENTUM;
use crate::nas::space::SearchSpace;
use crate::nas::Mode;

/// Sets the running statistics of `path`'s batch norms to their average over `batches`
/// (PyTorch's `momentum=None` cumulative average after `reset_running_stats`): the batch
/// statistics are read back from a running buffer zeroed before each forward (after one
/// update from zero it holds `momentum * batch statistic`). Buffers off the path end at zero.
pub fn recalibrate_bn<B: Backend, N: Supernet<B>>(
    be: &B,
    net: &mut N,
    path: &<N::Space as SearchSpace>::Arch,
    batches: &[DeviceBatch<B>],
) -> Result<()> {
    if batches.is_empty() {
        return Err(Error::invalid(
            "--recalibration-batches",
            "BN recalibration needs at least one batch",
        ));
    }
    let ids: Vec<_> = net.buffers().ids().collect();
    let mut sums = net.buffers().zeros_like(be)?;
    for batch in batches {
        for &id in &ids {
            be.scale_assign(net.buffers_mut().get_mut(id).buf_mut("running stats")?, 0.0)?;
        }
        let mut tape = Tape::new(be.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.images.clone());
        let update = Mode {
            update_running: true,
            ..Mode::TRAIN_NO_UPDATE
        };
        net.run_path(&mut tape, x, update, path)?;
        drop(tape);
        for &id in &ids {
            let r = net.buffers().get(id).buf.clone();
            be.axpy(
                sums.get_mut(id).buf_mut("recalibration sum")?,
                1.0 / BN_MOMENTUM,
                &r,
            )?;
        }
    }
    let n = batches.len() as f64;
    for &id in &ids {
        let s = sums.get(id).buf.clone();
        let dst = net.buffers_mut().get_mut(id).buf_mut("running stats")?;
        be.copy_into(dst, &s)?;
        be.scale_assign(dst, 1.0 / n)?;
    }
    Ok(())
}

/// Top-1 accuracy of `path` on `batches`, in eval mode (running statistics).
pub fn path_accuracy<B: Backend, N: Supernet<B>>(
    be: &B,
    net: &mut N,
    path: &<N::Space as SearchSpace>::Arch,
    batches: &[DeviceBatch<B>],
) -> Result<f64> {
    let (mut correct, mut count) = (0usize, 0usize);
    for batch in batches {
        let mut tape = Tape::new(be.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.images.clone());
        let logits = net.run_path(&mut tape, x, Mode::EVAL, path)?;
        let c = tape.count_correct(logits, &batch.labels)?;
        correct += c.to_f64(be)?[0].round() as usize;
        count += batch.len();
    }
    if count == 0 {
        return Err(Error::invalid("validation split", "no samples to score on"));
    }
    Ok(correct as f64 / count as f64)
}

/// The score of `path`: accuracy on `val` after recalibrating on `recal` (none: the supernet's
/// own statistics), the supernet's statistics restored afterwards.
pub fn score_path<B: Backend, N: Supernet<B>>(
    be: &B,
    net: &mut N,
    path: &<N::Space as SearchSpace>::Arch,
    recal: &[DeviceBatch<B>],
    val: &[DeviceBatch<B>],
) -> Result<f64> {
    if recal.is_empty() {
        return path_accuracy(be, net, path, val);
    }
    let saved = net.buffers().deep_copy(be)?;
    let result =
        recalibrate_bn(be, net, path, recal).and_then(|()| path_accuracy(be, net, path, val));
    *net.buffers_mut() = saved;
    result
}
