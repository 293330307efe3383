//! What a DARTS step reads and writes besides the network: a batch on the device
//! ([`DeviceBatch`], staged in place for captured steps), a forward's statistics
//! ([`StepStats`]) and the fixed device buffers a step leaves them in ([`StepOutputs`]).

use crate::backend::{norm_scalars, Backend, Element};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

/// One batch on the device: images [n, c, h, w] and their labels.
pub struct DeviceBatch<B: Backend> {
    pub images: Tensor<B>,
    pub labels: Arc<B::Labels>,
    pub classes: usize,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads a host batch (normalised f32 images, labels below `classes`) to the device.
    pub fn from_batch(backend: &B, batch: &Batch, classes: usize) -> Result<Self> {
        Ok(DeviceBatch {
            images: Tensor::from_host(backend, &host_images::<B>(batch), batch.dims().shape())?,
            labels: Arc::new(backend.upload_labels(&batch.labels, classes)?),
            classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.images.shape.dims().first().copied().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `batch` into this batch's buffers, which keep their device addresses (what a
    /// captured step reads). `Ok(false)`, with nothing copied, when the shapes differ.
    pub fn stage(&mut self, backend: &B, batch: &Batch) -> Result<bool> {
        if self.images.shape != batch.dims().shape() {
            return Ok(false);
        }
        backend.upload_into(
            self.images.buf_mut("staged images")?,
            &host_images::<B>(batch),
        )?;
        let labels = Arc::get_mut(&mut self.labels).ok_or_else(|| {
            Error::invalid(
                "staged labels",
                "still shared (a tape holding them was not cleared)",
            )
        })?;
        backend.upload_labels_into(labels, &batch.labels, self.classes)?;
        Ok(true)
    }
}

fn host_images<B: Backend>(batch: &Batch) -> Vec<B::Elem> {
    batch
        .images
        .iter()
        .map(|&v| B::Elem::from_f64(v as f64))
        .collect()
}

/// Loss and number of correct predictions of one forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    pub correct: usize,
    pub count: usize,
}

/// Where a step leaves its statistics on the device: the loss, the number of correct
/// predictions and, for steps that compute one, the [`norm_scalars`] of a gradient. Allocated
/// once, so a captured step writes them at fixed addresses; read after the step with one
/// round trip per value.
pub struct StepOutputs<B: Backend> {
    loss: B::Storage,
    correct: B::Storage,
    norm: Option<B::Storage>,
    /// What the norm is of, for the error when it is not finite.
    norm_of: &'static str,
    /// Whether the last step wrote the norm (a first-order architecture step has none).
    norm_recorded: bool,
    count: usize,
}

impl<B: Backend> StepOutputs<B> {
    pub(super) fn new(be: &B, norm_of: Option<&'static str>) -> Result<Self> {
        Ok(StepOutputs {
            loss: be.zeros(1)?,
            correct: be.zeros(1)?,
            norm: match norm_of {
                Some(_) => Some(be.zeros(norm_scalars::LEN)?),
                None => None,
            },
            norm_of: norm_of.unwrap_or(""),
            norm_recorded: false,
            count: 0,
        })
    }

    /// Queues the copies of a forward pass's loss and correct count.
    pub(super) fn record(
        &mut self,
        be: &B,
        loss: &Tensor<B>,
        correct: &Tensor<B>,
        count: usize,
    ) -> Result<()> {
        be.copy_into(&mut self.loss, &loss.buf)?;
        be.copy_into(&mut self.correct, &correct.buf)?;
        self.count = count;
        self.norm_recorded = false;
        Ok(())
    }

    /// Queues the copy of a gradient's norm scalars.
    pub(super) fn record_norm(&mut self, be: &B, norms: &B::Storage) -> Result<()> {
        self.norm_recorded = true;
        match &mut self.norm {
            Some(n) => be.copy_into(n, norms),
            None => Err(Error::invalid(
                "step outputs",
                "this step keeps no gradient norm",
            )),
        }
    }

    /// The statistics on the host; a NaN or infinite loss or gradient norm is an error.
    pub(super) fn read(&self, be: &B, what: &str) -> Result<StepStats> {
        let loss = be.download(&self.loss)?[0].to_f64();
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("{what} loss is {loss}")));
        }
        if let Some(n) = self.norm.as_ref().filter(|_| self.norm_recorded) {
            let norm = be.download(n)?[norm_scalars::NORM].to_f64();
            if !norm.is_finite() {
                return Err(Error::NonFinite(format!("{} is {norm}", self.norm_of)));
            }
        }
        let correct = be.download(&self.correct)?[0].to_f64();
        Ok(StepStats {
            loss,
            correct: correct.round() as usize,
            count: self.count,
        })
    }
}
