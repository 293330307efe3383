//! A strategy's whole state as JSON, for the training search's journal (`train_search.rs`):
//! what [`Strategy::snapshot`](super::Strategy::snapshot) writes and
//! [`Strategy::restore`](super::Strategy::restore) reads back. The strategies' own state
//! types live beside them; this file holds what they share: parameter stores (an LSTM
//! controller's weights and its Adam moments) as named host tensors, and the error a
//! snapshot that does not fit the strategy gives.
//!
//! Numbers round-trip exactly: f64 (scores, logits) in their shortest exact decimal form,
//! read back with serde_json's `float_roundtrip`; integers (the RNG's words) as integers; a
//! tensor's f32 elements as their little-endian bytes in base64 (a controller's weights and
//! two Adam moments are tens of thousands of numbers per line: about a quarter of the size
//! of decimals, and bit-exact by construction).

use crate::autograd::ParamStore;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::HostTensor;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One tensor of a parameter store, on the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTensor {
    pub shape: Vec<usize>,
    /// The elements, row-major, as little-endian f32 bytes in standard base64.
    pub f32le: String,
}

impl SavedTensor {
    pub fn new(shape: Vec<usize>, data: &[f32]) -> Self {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        SavedTensor {
            shape,
            f32le: BASE64.encode(bytes),
        }
    }

    /// The elements; `name` is the tensor's, for the error of a damaged one.
    pub fn data(&self, name: &str) -> Result<Vec<f32>> {
        let bytes = BASE64
            .decode(&self.f32le)
            .map_err(|e| mismatch(format!("tensor {name}: {e}")))?;
        let numel: usize = self.shape.iter().product();
        if bytes.len() != 4 * numel {
            return Err(mismatch(format!(
                "tensor {name} holds {} bytes for shape {:?}",
                bytes.len(),
                self.shape
            )));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// A parameter store's tensors by name.
pub type SavedStore = BTreeMap<String, SavedTensor>;

/// The error of a snapshot that does not fit the strategy reading it.
pub fn mismatch(what: impl std::fmt::Display) -> Error {
    Error::invalid("strategy state", what.to_string())
}

/// Reads a strategy's state type out of its JSON snapshot.
pub fn parse<T: serde::de::DeserializeOwned>(state: &serde_json::Value, name: &str) -> Result<T> {
    T::deserialize(state).map_err(|e| mismatch(format!("not a {name} state: {e}")))
}

/// Writes a strategy's state type as JSON.
pub fn to_value<T: Serialize>(state: &T) -> Result<serde_json::Value> {
    serde_json::to_value(state).map_err(|e| mismatch(format!("cannot be written: {e}")))
}

/// Every tensor of `store`, copied to the host.
pub fn save_store<B: Backend>(backend: &B, store: &ParamStore<B>) -> Result<SavedStore> {
    let mut host = BTreeMap::new();
    store.export(backend, "", &mut host)?;
    Ok(host
        .into_iter()
        .map(|(name, t)| (name, SavedTensor::new(t.shape, &t.data)))
        .collect())
}

/// Sets every tensor of `store` from `saved`: the same names and shapes, none missing and
/// none extra (a snapshot of another controller is refused, naming the tensor).
pub fn restore_store<B: Backend>(
    backend: &B,
    store: &mut ParamStore<B>,
    saved: &SavedStore,
    what: &str,
) -> Result<()> {
    if saved.len() != store.len() {
        return Err(mismatch(format!(
            "{what} has {} tensors where this controller has {}",
            saved.len(),
            store.len()
        )));
    }
    let ids: Vec<_> = store.ids().collect();
    for id in ids {
        let name = store.name(id).to_string();
        let t = saved
            .get(&name)
            .ok_or_else(|| mismatch(format!("{what} lacks tensor {name}")))?;
        let host = HostTensor {
            shape: t.shape.clone(),
            data: t.data(&format!("{what} {name}"))?,
        };
        store
            .set_host(backend, id, &host)
            .map_err(|e| mismatch(format!("{what}: {e}")))?;
    }
    Ok(())
}
