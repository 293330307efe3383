//! Datasets: the in-memory `Dataset` (raw u8 pixels, NCHW, plus the per-channel
//! normalisation constants that go with it), the `DatasetKind` a user names on the command
//! line, and `load`, which reads a train/test pair from a directory.
//!
//! Readers live one format per file: `idx` (MNIST, Fashion-MNIST), `cifar` (CIFAR-10
//! binary), `synthetic` (a generated, learnable task for tests). Turning samples into
//! normalised, augmented f32 batches is `loader`'s job; the augmentations are in `augment`,
//! resizing to another resolution (once, at load time) in `resize`.

pub mod augment;
pub mod cifar;
pub mod idx;
pub mod loader;
pub mod resize;
pub mod synthetic;

pub use augment::Augment;
pub use loader::{split_indices, Batch, BatchIterator, BatchIteratorState, SequentialBatches};
pub use resize::{check_resolution, resize_dataset};
pub use synthetic::synthetic;

use crate::error::{Error, Result};
use crate::shape::Nchw;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Per-channel mean of CIFAR-10's training images (the constants of the DARTS code).
pub const CIFAR10_MEAN: [f32; 3] = [0.491_399_68, 0.482_158_27, 0.446_531_24];
/// Per-channel standard deviation of CIFAR-10's training images (DARTS code).
pub const CIFAR10_STD: [f32; 3] = [0.247_032_33, 0.243_485_05, 0.261_587_68];
/// Mean of MNIST's training pixels (the usual PyTorch constant).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of MNIST's training pixels.
pub const MNIST_STD: f32 = 0.3081;
/// Mean of Fashion-MNIST's training pixels.
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Standard deviation of Fashion-MNIST's training pixels.
pub const FASHION_MNIST_STD: f32 = 0.3530;

/// A labelled image set held as raw bytes (4x smaller than f32; batches are normalised on
/// the fly). Pixel `(i, ch, y, x)` is `images[((i * c + ch) * h + y) * w + x]`, in 0..=255.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// What the set is, for logs and errors ("mnist/train").
    pub name: String,
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub classes: usize,
    /// Per-channel mean of pixel / 255, subtracted when a batch is built.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of pixel / 255, divided out when a batch is built.
    pub std: Vec<f32>,
}

impl Dataset {
    /// Builds a dataset, checking that every length agrees and every label is a class.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u32>,
        (c, h, w): (usize, usize, usize),
        classes: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self> {
        let name = name.into();
        let what = || format!("dataset {name}");
        let n = labels.len();
        let sample = c
            .checked_mul(h)
            .and_then(|ch| ch.checked_mul(w))
            .ok_or_else(|| Error::invalid(what(), format!("image shape {c}x{h}x{w} overflows")))?;
        if sample == 0 {
            return Err(Error::invalid(
                what(),
                format!("empty image shape {c}x{h}x{w}"),
            ));
        }
        if n.checked_mul(sample) != Some(images.len()) {
            return Err(Error::invalid(
                what(),
                format!(
                    "{} pixel bytes for {n} labels of {c}x{h}x{w} images (expected {n} x {sample})",
                    images.len(),
                ),
            ));
        }
        if classes == 0 {
            return Err(Error::invalid(what(), "zero classes"));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            return Err(Error::invalid(
                what(),
                format!("label {l} of sample {i} is not below the {classes} classes"),
            ));
        }
        if mean.len() != c || std.len() != c {
            return Err(Error::invalid(
                what(),
                format!(
                    "{} means and {} stds for {c} channels",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid(
                what(),
                format!("standard deviation {s} is not positive"),
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::invalid(what(), format!("mean {m} is not finite")));
        }
        Ok(Dataset {
            name,
            images,
            labels,
            n,
            c,
            h,
            w,
            classes,
            mean,
            std,
        })
    }

    /// Bytes per sample (`c * h * w`).
    pub fn sample_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The raw pixels of sample `i` (`i < n`; callers index with validated indices).
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.sample_len();
        &self.images[i * s..(i + 1) * s]
    }

    /// The NCHW dimensions of the whole set.
    pub fn dims(&self) -> Nchw {
        Nchw {
            n: self.n,
            c: self.c,
            h: self.h,
            w: self.w,
        }
    }

    /// A new dataset of the given samples, in that order, keeping the normalisation.
    /// The first `limit` samples (quick runs), or all of them when `limit` is None or larger.
    pub fn first(&self, limit: Option<usize>) -> Result<Dataset> {
        match limit {
            Some(n) if n < self.n => self.subset(&(0..n).collect::<Vec<_>>()),
            _ => Ok(self.clone()),
        }
    }

    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        check_indices(self, indices)?;
        let mut images = Vec::with_capacity(indices.len() * self.sample_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Dataset::new(
            self.name.clone(),
            images,
            labels,
            (self.c, self.h, self.w),
            self.classes,
            self.mean.clone(),
            self.std.clone(),
        )
    }

    /// Per-channel mean and (population) standard deviation of pixel / 255 over the whole
    /// set. A constant channel gets std 1 so normalising never divides by zero.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        channel_stats(&self.images, self.n, self.c, self.h * self.w)
    }

    /// How many samples carry each label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// Mean and std per channel of `images` ([n, c, plane] bytes) scaled to [0, 1].
pub(crate) fn channel_stats(
    images: &[u8],
    n: usize,
    c: usize,
    plane: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut mean = Vec::with_capacity(c);
    let mut std = Vec::with_capacity(c);
    for ch in 0..c {
        // Byte histograms keep the sums exact regardless of the set's size.
        let mut hist = [0u64; 256];
        for i in 0..n {
            let start = (i * c + ch) * plane;
            for &p in &images[start..start + plane] {
                hist[p as usize] += 1;
            }
        }
        let count: u64 = hist.iter().sum();
        if count == 0 {
            mean.push(0.0);
            std.push(1.0);
            continue;
        }
        let m = hist
            .iter()
            .enumerate()
            .map(|(v, &k)| v as f64 / 255.0 * k as f64)
            .sum::<f64>()
            / count as f64;
        let var = hist
            .iter()
            .enumerate()
            .map(|(v, &k)| (v as f64 / 255.0 - m).powi(2) * k as f64)
            .sum::<f64>()
            / count as f64;
        let s = var.sqrt();
        mean.push(m as f32);
        std.push(if s > 1e-6 { s as f32 } else { 1.0 });
    }
    (mean, std)
}

/// Checks that every index addresses a sample of `ds`, naming the first that does not.
pub(crate) fn check_indices(ds: &Dataset, indices: &[usize]) -> Result<()> {
    match indices.iter().find(|&&i| i >= ds.n) {
        Some(&i) => Err(Error::invalid(
            format!("sample index for dataset {}", ds.name),
            format!("{i} is out of range for its {} samples", ds.n),
        )),
        None => Ok(()),
    }
}

/// The datasets nasrs can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// CIFAR-10 binary version: `data_batch_1.bin`..`data_batch_5.bin`, `test_batch.bin`.
    Cifar10,
    /// MNIST in IDX format (`train-images-idx3-ubyte[.gz]` etc.).
    Mnist,
    /// Fashion-MNIST: MNIST's file layout, its own normalisation constants.
    FashionMnist,
    /// A generated task (see `synthetic`); needs no files.
    Synthetic,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::Cifar10,
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Synthetic,
    ];

    /// The name `FromStr` accepts.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Synthetic => "synthetic",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
                Error::invalid(
                    "dataset",
                    format!("{s:?} is not one of {}", names.join(", ")),
                )
            })
    }
}

/// Sizes of the train and test sets `load` generates for `DatasetKind::Synthetic`: CIFAR's
/// image shape, small enough to search on a laptop CPU in minutes.
pub const SYNTHETIC_TRAIN: usize = 2048;
pub const SYNTHETIC_TEST: usize = 512;

/// Loads the (train, test) pair of `kind` from `dir`. `Synthetic` ignores `dir` and generates
/// 3x32x32, 10-class sets (train seed 0, test seed 1: the same task, different samples).
pub fn load(kind: DatasetKind, dir: &Path) -> Result<(Dataset, Dataset)> {
    match kind {
        DatasetKind::Cifar10 => cifar::load_cifar10(dir),
        DatasetKind::Mnist => idx::load_mnist_dir(dir, "mnist", MNIST_MEAN, MNIST_STD),
        DatasetKind::FashionMnist => {
            idx::load_mnist_dir(dir, "fashion-mnist", FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        }
        DatasetKind::Synthetic => Ok((
            synthetic(SYNTHETIC_TRAIN, 3, 32, 32, 10, 0)?,
            synthetic(SYNTHETIC_TEST, 3, 32, 32, 10, 1)?,
        )),
    }
}

/// The bundled MNIST subset: `./data/mnist-10k` when run from a checkout, else the copy in
/// the crate's source tree. Returned even if missing; `load` then names the absent file.
pub fn default_data_dir() -> PathBuf {
    let local = Path::new("data").join("mnist-10k");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("mnist-10k")
}
