//! The CIFAR-10 binary format: each record is one label byte then 3072 pixel bytes (the red,
//! green and blue 32x32 planes, row-major), which is NCHW already. Training data is
//! `data_batch_1.bin`..`data_batch_5.bin`, test data `test_batch.bin`, either directly in the
//! given directory or in the `cifar-10-batches-bin/` the official archive unpacks to.

use super::{Dataset, CIFAR10_MEAN, CIFAR10_STD};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub const CIFAR10_CLASSES: usize = 10;
pub const CIFAR10_CHANNELS: usize = 3;
pub const CIFAR10_SIDE: usize = 32;
/// Bytes per record: the label, then 3 x 32 x 32 pixels.
pub const CIFAR10_RECORD: usize = 1 + CIFAR10_CHANNELS * CIFAR10_SIDE * CIFAR10_SIDE;

pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";

/// Reads one batch file into (pixels, labels), checking the record size and every label.
pub fn read_cifar_batch(path: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.is_empty() {
        return Err(Error::bad_file(path, "empty file: no CIFAR-10 records"));
    }
    if raw.len() % CIFAR10_RECORD != 0 {
        return Err(Error::bad_file(
            path,
            format!(
                "{} bytes is not a whole number of {CIFAR10_RECORD}-byte CIFAR-10 records \
                 (truncated? {} records and {} bytes over)",
                raw.len(),
                raw.len() / CIFAR10_RECORD,
                raw.len() % CIFAR10_RECORD
            ),
        ));
    }
    let n = raw.len() / CIFAR10_RECORD;
    let mut images = Vec::with_capacity(n * (CIFAR10_RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in raw.chunks_exact(CIFAR10_RECORD).enumerate() {
        if rec[0] as usize >= CIFAR10_CLASSES {
            return Err(Error::bad_file(
                path,
                format!(
                    "record {i} has label {}, not below the {CIFAR10_CLASSES} classes",
                    rec[0]
                ),
            ));
        }
        labels.push(rec[0] as u32);
        images.extend_from_slice(&rec[1..]);
    }
    Ok((images, labels))
}

/// Reads and concatenates several batch files into one dataset.
pub fn load_cifar_files(name: &str, paths: &[PathBuf]) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let (im, lb) = read_cifar_batch(p)?;
        images.extend(im);
        labels.extend(lb);
    }
    Dataset::new(
        name,
        images,
        labels,
        (CIFAR10_CHANNELS, CIFAR10_SIDE, CIFAR10_SIDE),
        CIFAR10_CLASSES,
        CIFAR10_MEAN.to_vec(),
        CIFAR10_STD.to_vec(),
    )
}

/// Loads the CIFAR-10 (train, test) pair. Every one of the six files must be present.
pub fn load_cifar10(dir: &Path) -> Result<(Dataset, Dataset)> {
    let sub = dir.join("cifar-10-batches-bin");
    let base = if !dir.join(CIFAR10_TRAIN_FILES[0]).exists()
        && sub.join(CIFAR10_TRAIN_FILES[0]).exists()
    {
        sub
    } else {
        dir.to_path_buf()
    };
    let train_paths: Vec<PathBuf> = CIFAR10_TRAIN_FILES.iter().map(|f| base.join(f)).collect();
    let train = load_cifar_files("cifar10/train", &train_paths)?;
    let test = load_cifar_files("cifar10/test", &[base.join(CIFAR10_TEST_FILE)])?;
    Ok((train, test))
}
