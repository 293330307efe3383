//! Checks of the buffer and label ops (`DeviceOps`).

use super::{check_labels, same_len};
use crate::backend::DeviceOps;
use crate::error::{Error, Result};

pub fn copy_into<B: DeviceOps>(b: &B, dst: &B::Storage, src: &B::Storage) -> Result<()> {
    same_len(b, "copy_into", dst, src)
}

pub fn upload_into<B: DeviceOps>(b: &B, dst: &B::Storage, host: &[B::Elem]) -> Result<()> {
    let len = b.len(dst);
    if host.len() != len {
        return Err(Error::shape(
            "upload_into",
            format!("{} elements into a buffer of {len}", host.len()),
        ));
    }
    Ok(())
}

/// Labels are checked against the class count once, on upload (every later op trusts them).
pub fn upload_labels(labels: &[u32], classes: usize) -> Result<()> {
    check_labels(labels, labels.len(), classes)
}

pub fn upload_labels_into<B: DeviceOps>(
    b: &B,
    dst: &B::Labels,
    labels: &[u32],
    classes: usize,
) -> Result<()> {
    check_labels(labels, b.labels_len(dst), classes)
}
