//! What a tape keeps of a value for backward: one shared handle per node (`Saved`), kept in
//! f32 or, once the network releases it under `Precision::Bf16`, rounded to bf16 and widened
//! back into a transient f32 buffer when a backward reads it.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// How a tape keeps the activations it saves for backward once the network releases them
/// (`--activations f32|bf16`): f32 (never released, the default) or bf16 storage with f32
/// arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::invalid(
                "--activations",
                format!("'{s}' (expected f32 or bf16)"),
            )),
        }
    }
}

enum SavedState<B: Backend> {
    F32(Arc<B::Storage>),
    Bf16(B::Half),
}

/// A node's value as backward closures keep it: one handle per node, shared by every closure
/// that saved it, so releasing it to bf16 converts it once and frees the f32 buffer.
pub(super) struct Saved<B: Backend>(Rc<RefCell<SavedState<B>>>);

impl<B: Backend> Clone for Saved<B> {
    fn clone(&self) -> Self {
        Saved(self.0.clone())
    }
}

impl<B: Backend> Saved<B> {
    pub(super) fn new(t: &Tensor<B>) -> Self {
        Saved(Rc::new(RefCell::new(SavedState::F32(t.buf.clone()))))
    }

    /// The value in f32: the kept buffer, or a transient widening of the bf16 copy.
    pub(super) fn read(&self, be: &B) -> Result<Arc<B::Storage>> {
        let state = self
            .0
            .try_borrow()
            .map_err(|_| Error::invalid("saved activation", "read while being released"))?;
        match &*state {
            SavedState::F32(buf) => Ok(buf.clone()),
            SavedState::Bf16(half) => Ok(Arc::new(be.from_bf16(half)?)),
        }
    }

    /// Whether a backward closure holds this handle (the node's own reference aside).
    pub(super) fn in_use(&self) -> bool {
        Rc::strong_count(&self.0) > 1
    }

    /// Replaces the f32 buffer by its bf16 rounding. `Ok(Some(elements))` when converted and
    /// the f32 buffer freed; `Ok(None)` when something else still holds that buffer (then
    /// converting would free nothing, so it stays f32).
    pub(super) fn compress(&self, be: &B) -> Result<Option<usize>> {
        let mut state = self
            .0
            .try_borrow_mut()
            .map_err(|_| Error::invalid("saved activation", "released while being read"))?;
        let SavedState::F32(buf) = &*state else {
            return Ok(None);
        };
        if Arc::strong_count(buf) != 1 {
            return Ok(None);
        }
        let half = be.to_bf16(buf)?;
        let len = be.half_len(&half);
        *state = SavedState::Bf16(half);
        Ok(Some(len))
    }
}

/// What [`Tape::release_activations`](super::Tape::release_activations) did so far on this
/// tape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseStats {
    /// Saved values rounded to bf16 (their f32 buffers freed), and their elements.
    pub compressed: usize,
    pub compressed_elements: usize,
    /// Values no backward needs, dropped.
    pub dropped: usize,
    /// Saved values kept as they are (f32 activations).
    pub kept: usize,
    /// Saved values left in f32 because something besides the tape held their buffer.
    pub shared: usize,
    /// Saved values left in f32 because a backward needs them exactly (max-pool inputs).
    pub exact: usize,
}
