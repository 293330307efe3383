//! From a `Dataset` to the f32 batches a network eats: `Batch`, the persistent shuffled
//! `BatchIterator` a search or training loop draws from (its whole state serialisable, so a
//! resumed run sees exactly the data order an uninterrupted one would), the plain
//! `SequentialBatches` for evaluation, and `split_indices` for DARTS' train/val split.

use super::augment::{normaliser, render, Augment};
use super::{check_indices, Dataset};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::Nchw;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Normalised images (NCHW, `n * c * h * w` values) and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Batch {
    pub fn dims(&self) -> Nchw {
        Nchw {
            n: self.n,
            c: self.c,
            h: self.h,
            w: self.w,
        }
    }
}

/// Builds the batch of samples `indices` of `ds`, normalised with the dataset's constants and
/// augmented with draws from `rng` (one draw set per sample, in index order; none are drawn
/// when `augment` is empty).
pub fn make_batch(
    ds: &Dataset,
    indices: &[usize],
    augment: &Augment,
    rng: &mut Rng,
) -> Result<Batch> {
    check_indices(ds, indices)?;
    let draws: Vec<_> = indices
        .iter()
        .map(|_| augment.draw(ds.h, ds.w, rng))
        .collect();
    let luts = normaliser(ds);
    let sample = ds.sample_len();
    let mut images = vec![0f32; indices.len() * sample];
    // The draws are fixed above, so rendering in parallel cannot change the result.
    images
        .par_chunks_mut(sample.max(1))
        .zip(indices.par_iter().zip(draws.par_iter()))
        .for_each(|(out, (&i, d))| render(ds, i, &luts, augment, d, out));
    Ok(Batch {
        images,
        labels: indices.iter().map(|&i| ds.labels[i]).collect(),
        n: indices.len(),
        c: ds.c,
        h: ds.h,
        w: ds.w,
    })
}

/// Splits `0..n` into its first `floor(fraction * n)` indices and the rest, as DARTS'
/// `train_search.py` splits the CIFAR-10 training set (fraction 0.5) into the weights' train
/// half and the architecture's validation half. The halves are shuffled by their iterators.
pub fn split_indices(n: usize, fraction: f64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::invalid(
            "train fraction",
            format!("{fraction} is not in [0, 1]"),
        ));
    }
    let split = ((fraction * n as f64).floor() as usize).min(n);
    Ok(((0..split).collect(), (split..n).collect()))
}

/// Everything a `BatchIterator` is: save it in a checkpoint, `BatchIterator::from_state` it
/// back, and the next batches are the ones the saved iterator would have produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchIteratorState {
    /// The current epoch's permutation of the sample indices.
    pub order: Vec<usize>,
    /// How many of `order` this epoch's batches have used.
    pub pos: usize,
    /// The epoch the most recent batch came from (0 for the first).
    pub epoch: u64,
    /// Draws the permutation of each new epoch.
    pub rng: Rng,
    /// Draws the augmentation choices (a separate stream so that enabling augmentation does
    /// not change the data order).
    pub aug_rng: Rng,
    pub augment: Augment,
}

/// An endless, shuffled stream of full batches over a fixed list of sample indices.
///
/// Batches take consecutive indices from the current permutation. When fewer than `batch`
/// indices remain, they are dropped (`drop_last`; DARTS' PyTorch queues keep the short last
/// batch, but equal batches keep batch-norm statistics and the paired train/val steps of the
/// architecture update comparable, and cost at most `batch - 1` samples an epoch), a new
/// permutation is drawn from the iterator's own `Rng` and the epoch count goes up. Each epoch
/// has a fresh order, so the dropped tail is different samples each time.
#[derive(Clone, Debug)]
pub struct BatchIterator {
    s: BatchIteratorState,
}

impl BatchIterator {
    /// An iterator over `indices` (sample numbers of the dataset later passed to
    /// `next_batch`), shuffled by `rng` for the first epoch.
    pub fn new(indices: Vec<usize>, mut rng: Rng, augment: Augment) -> Result<Self> {
        if indices.is_empty() {
            return Err(Error::invalid(
                "batch iterator",
                "no sample indices to draw from",
            ));
        }
        let aug_rng = Rng::fork(rng.next_u64(), "augment");
        let mut order = indices;
        rng.shuffle(&mut order);
        Ok(BatchIterator {
            s: BatchIteratorState {
                order,
                pos: 0,
                epoch: 0,
                rng,
                aug_rng,
                augment,
            },
        })
    }

    /// The next `batch` samples of `ds`, normalised and augmented.
    pub fn next_batch(&mut self, ds: &Dataset, batch: usize) -> Result<Batch> {
        let len = self.s.order.len();
        if batch == 0 || batch > len {
            return Err(Error::invalid(
                "batch size",
                format!(
                    "{batch} for an iterator over {len} samples (batches are always full, so it \
                     must be between 1 and {len})"
                ),
            ));
        }
        if self.s.pos + batch > len {
            self.s.rng.shuffle(&mut self.s.order);
            self.s.pos = 0;
            self.s.epoch += 1;
        }
        let idx = &self.s.order[self.s.pos..self.s.pos + batch];
        // Checked before anything moves, so a wrong dataset leaves the iterator as it was.
        check_indices(ds, idx)?;
        let b = make_batch(ds, idx, &self.s.augment, &mut self.s.aug_rng)?;
        self.s.pos += batch;
        Ok(b)
    }

    /// The epoch of the most recent batch, counting from 0.
    pub fn epoch(&self) -> u64 {
        self.s.epoch
    }
    /// Full batches per epoch (the partial tail is dropped).
    pub fn steps_per_epoch(&self, batch: usize) -> usize {
        self.s.order.len().checked_div(batch).unwrap_or(0)
    }
    /// How many samples the iterator draws from.
    pub fn len(&self) -> usize {
        self.s.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.s.order.is_empty()
    }
    pub fn augment(&self) -> &Augment {
        &self.s.augment
    }

    pub fn state(&self) -> BatchIteratorState {
        self.s.clone()
    }
    pub fn from_state(state: BatchIteratorState) -> Result<Self> {
        if state.order.is_empty() || state.pos > state.order.len() {
            return Err(Error::invalid(
                "batch iterator state",
                format!(
                    "position {} in an order of {} samples",
                    state.pos,
                    state.order.len()
                ),
            ));
        }
        Ok(BatchIterator { s: state })
    }
}

/// Batches of consecutive samples in a fixed order, without augmentation, the last one
/// partial: every sample exactly once, for evaluation.
pub struct SequentialBatches<'a> {
    ds: &'a Dataset,
    indices: Vec<usize>,
    batch: usize,
    pos: usize,
}

impl<'a> SequentialBatches<'a> {
    /// All samples of `ds`, in order.
    pub fn new(ds: &'a Dataset, batch: usize) -> Result<Self> {
        Self::over(ds, (0..ds.n).collect(), batch)
    }
    /// The given samples of `ds`, in the given order.
    pub fn over(ds: &'a Dataset, indices: Vec<usize>, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("batch size", "0: must be at least 1"));
        }
        check_indices(ds, &indices)?;
        Ok(SequentialBatches {
            ds,
            indices,
            batch,
            pos: 0,
        })
    }
    /// Batches in one pass, counting the partial last one.
    pub fn num_batches(&self) -> usize {
        self.indices.len().div_ceil(self.batch)
    }
}

impl Iterator for SequentialBatches<'_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.indices.len() {
            return None;
        }
        let end = (self.pos + self.batch).min(self.indices.len());
        let idx = &self.indices[self.pos..end];
        self.pos = end;
        // Indices were checked in the constructor and no augmentation draws, so this
        // cannot fail; an unused generator keeps `make_batch` the single code path.
        make_batch(self.ds, idx, &Augment::none(), &mut Rng::new(0)).ok()
    }
}
