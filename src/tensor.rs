//! `Tensor<B>`: a shared, immutable device buffer plus its shape. Cloning a tensor shares the
//! buffer (an `Arc`), which is how the tape saves activations for backward without copies.

use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::shape::{Nchw, Shape};
use std::sync::Arc;

pub struct Tensor<B: Backend> {
    pub buf: Arc<B::Storage>,
    pub shape: Shape,
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor {
            buf: self.buf.clone(),
            shape: self.shape.clone(),
        }
    }
}

impl<B: Backend> Tensor<B> {
    pub fn new(buf: B::Storage, shape: impl Into<Shape>) -> Self {
        Tensor {
            buf: Arc::new(buf),
            shape: shape.into(),
        }
    }

    pub fn zeros(backend: &B, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        Ok(Tensor::new(backend.zeros(shape.numel())?, shape))
    }

    /// Uploads host data; the length must match the shape.
    pub fn from_host(backend: &B, data: &[B::Elem], shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "from_host",
                format!("{} values for shape {shape}", data.len()),
            ));
        }
        Ok(Tensor::new(backend.upload(data)?, shape))
    }

    /// Uploads host `f64` data converted to the backend's element type.
    pub fn from_f64(backend: &B, data: &[f64], shape: impl Into<Shape>) -> Result<Self> {
        let v: Vec<B::Elem> = data.iter().map(|&x| B::Elem::from_f64(x)).collect();
        Self::from_host(backend, &v, shape)
    }

    pub fn to_host(&self, backend: &B) -> Result<Vec<B::Elem>> {
        backend.download(&self.buf)
    }

    pub fn to_f64(&self, backend: &B) -> Result<Vec<f64>> {
        Ok(self
            .to_host(backend)?
            .into_iter()
            .map(|x| x.to_f64())
            .collect())
    }

    pub fn to_f32(&self, backend: &B) -> Result<Vec<f32>> {
        Ok(self
            .to_host(backend)?
            .into_iter()
            .map(|x| x.to_f64() as f32)
            .collect())
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn nchw(&self, op: &'static str) -> Result<Nchw> {
        self.shape.nchw(op)
    }

    /// Mutable access to the buffer for in-place updates (optimizers, running statistics).
    /// Fails if the buffer is still shared, e.g. by a tape that has not been cleared.
    pub fn buf_mut(&mut self, what: &str) -> Result<&mut B::Storage> {
        Arc::get_mut(&mut self.buf).ok_or_else(|| {
            Error::invalid(
                what.to_string(),
                "buffer is still shared (a tape holding it was not cleared)",
            )
        })
    }

    /// Same buffer, new shape of equal size.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{} to {shape}", self.shape),
            ));
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            shape,
        })
    }
}
