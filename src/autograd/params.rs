//! Named parameter stores: flat lists of tensors with PyTorch `state_dict`-style dotted names
//! (`cells.0._ops.3.op.1.weight`). Modules hold `ParamId`s; optimizers, checkpoints and the
//! tape all walk the same list. A network's `state_dict` is loaded into its stores strictly by
//! [`load_state_dict_strict`], the one set of rules both DARTS networks follow.

use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::io::{HostTensor, HostTensorI64};
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// Index of a tensor inside one `ParamStore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

pub struct ParamStore<B: Backend> {
    /// Unique per store, so the tape can tell parameters of different stores apart.
    pub(crate) store_id: u64,
    names: Vec<String>,
    values: Vec<Tensor<B>>,
}

impl<B: Backend> Default for ParamStore<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> ParamStore<B> {
    pub fn new() -> Self {
        ParamStore {
            store_id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            names: Vec::new(),
            values: Vec::new(),
        }
    }

    pub fn add(&mut self, name: impl Into<String>, value: Tensor<B>) -> ParamId {
        self.names.push(name.into());
        self.values.push(value);
        ParamId(self.values.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.values.iter().map(|t| t.numel()).sum()
    }
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn get(&self, id: ParamId) -> &Tensor<B> {
        &self.values[id.0]
    }
    pub fn get_mut(&mut self, id: ParamId) -> &mut Tensor<B> {
        &mut self.values[id.0]
    }
    /// Two different tensors mutably at once (a batch norm's running mean and variance).
    pub fn get_disjoint_mut(&mut self, ids: [ParamId; 2]) -> Result<[&mut Tensor<B>; 2]> {
        self.values
            .get_disjoint_mut([ids[0].0, ids[1].0])
            .map_err(|_| {
                Error::invalid(
                    "parameter ids",
                    format!("{ids:?} must be two different, existing entries"),
                )
            })
    }
    pub fn tensors(&self) -> &[Tensor<B>] {
        &self.values
    }
    /// The tensors, in id order, without their names.
    pub fn into_tensors(self) -> Vec<Tensor<B>> {
        self.values
    }
    pub fn tensors_mut(&mut self) -> &mut [Tensor<B>] {
        &mut self.values
    }
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.values.len()).map(ParamId)
    }
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }

    /// Replaces a tensor's value, checking the shape is unchanged (checkpoint loading).
    pub fn set(&mut self, id: ParamId, value: Tensor<B>) -> Result<()> {
        let old = &self.values[id.0].shape;
        if *old != value.shape {
            return Err(Error::shape(
                "load",
                format!(
                    "{}: stored {} but the model expects {old}",
                    self.names[id.0], value.shape
                ),
            ));
        }
        self.values[id.0] = value;
        Ok(())
    }

    /// A new store of zero tensors with the same names and shapes (optimizer state).
    pub fn zeros_like(&self, backend: &B) -> Result<Self> {
        let mut s = ParamStore::new();
        for (n, v) in self.names.iter().zip(&self.values) {
            s.add(n.clone(), Tensor::zeros(backend, v.shape.clone())?);
        }
        Ok(s)
    }

    /// A deep copy (separate buffers).
    pub fn deep_copy(&self, backend: &B) -> Result<Self> {
        let mut s = ParamStore::new();
        for (n, v) in self.names.iter().zip(&self.values) {
            s.add(
                n.clone(),
                Tensor::new(backend.copy(&v.buf)?, v.shape.clone()),
            );
        }
        Ok(s)
    }

    /// Copies every tensor to the host as f32 under `{prefix}{name}` (checkpoints).
    pub fn export(
        &self,
        backend: &B,
        prefix: &str,
        out: &mut BTreeMap<String, HostTensor>,
    ) -> Result<()> {
        for (name, t) in self.names.iter().zip(&self.values) {
            out.insert(
                format!("{prefix}{name}"),
                HostTensor {
                    shape: t.shape.dims().to_vec(),
                    data: t.to_f32(backend)?,
                },
            );
        }
        Ok(())
    }

    /// Sets every tensor from `tensors["{prefix}{name}"]`; a missing or misshapen one is an
    /// error naming `path`, the file they came from.
    pub fn import(
        &mut self,
        backend: &B,
        prefix: &str,
        tensors: &BTreeMap<String, HostTensor>,
        path: &Path,
    ) -> Result<()> {
        for i in 0..self.values.len() {
            let name = format!("{prefix}{}", self.names[i]);
            let t = tensors
                .get(&name)
                .ok_or_else(|| Error::bad_file(path, format!("missing tensor {name}")))?;
            self.set_host(backend, ParamId(i), t)
                .map_err(|e| Error::bad_file(path, e.to_string()))?;
        }
        Ok(())
    }

    /// Replaces tensor `id` with the host tensor `t` (uploaded as this backend's elements),
    /// checking the shape is unchanged; the error names the tensor.
    pub fn set_host(&mut self, backend: &B, id: ParamId, t: &HostTensor) -> Result<()> {
        let v: Vec<B::Elem> = t
            .data
            .iter()
            .map(|&x| B::Elem::from_f64(x as f64))
            .collect();
        let value = Tensor::from_host(backend, &v, t.shape.as_slice())
            .map_err(|e| Error::invalid(self.names[id.0].clone(), e.to_string()))?;
        self.set(id, value)
    }

    /// PyTorch's `{bn}.num_batches_tracked` (= `count`) for every `{bn}.running_mean` in
    /// this store of batch-norm buffers.
    pub fn bn_counters(&self, count: u64) -> BTreeMap<String, HostTensorI64> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.names
            .iter()
            .filter_map(|n| n.strip_suffix(".running_mean"))
            .map(|bn| {
                (
                    format!("{bn}.num_batches_tracked"),
                    HostTensorI64 {
                        shape: vec![],
                        data: vec![count],
                    },
                )
            })
            .collect()
    }

    /// Shapes, for summaries.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &Shape)> {
        self.names
            .iter()
            .map(|s| s.as_str())
            .zip(self.values.iter().map(|t| &t.shape))
    }
}

/// How [`load_state_dict_strict`] reads a network's `state_dict`: under which prefix, what it
/// skips, and what its errors say.
pub struct StrictLoad<'a> {
    /// What the key of each of the network's tensors starts with: `module.` in a checkpoint
    /// PyTorch's `DataParallel` saved, "" for none.
    pub prefix: &'a str,
    /// Keys to skip, matched against the whole key (prefix included): a checkpoint's
    /// optimizer state, such as `optimizer.`.
    pub ignore_prefixes: &'a [&'a str],
    /// Further names (after `prefix`) the file may hold: tensors the caller loads itself
    /// (the search network's alphas).
    pub also_known: &'a [&'a str],
    /// The network, as the error for unknown tensors names it ("search network").
    pub network: &'a str,
    /// What that error asks the user to check ("is it the same --channels ...?").
    pub hint: &'a str,
    /// The file the tensors came from; every error names it.
    pub path: &'a Path,
}

/// Loads `tensors`, a network's `state_dict`, into the network's `stores` (its weights and
/// its BN buffers) strictly, as PyTorch's `load_state_dict(strict=True)`: every tensor of
/// every store must be present as `{prefix}{name}` with its shape, and no other key may be,
/// except each BN's `{prefix}{bn}.num_batches_tracked` (optional: older PyTorch has none),
/// the names of `also_known` and keys starting with one of `ignore_prefixes`. Nothing is
/// loaded when a key is unknown. Returns the BN batch count: the largest
/// `num_batches_tracked` found, else 0. Errors name `path` and the tensors at fault.
pub fn load_state_dict_strict<B: Backend>(
    backend: &B,
    stores: &mut [&mut ParamStore<B>],
    tensors: &BTreeMap<String, HostTensor>,
    how: &StrictLoad<'_>,
) -> Result<u64> {
    let counters: Vec<String> = stores
        .iter()
        .flat_map(|s| s.bn_counters(0).into_keys())
        .collect();
    let known: BTreeSet<&str> = stores
        .iter()
        .flat_map(|s| s.names())
        .chain(&counters)
        .map(String::as_str)
        .chain(how.also_known.iter().copied())
        .collect();
    let unexpected: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !k.strip_prefix(how.prefix)
                .is_some_and(|n| known.contains(n))
                && !how.ignore_prefixes.iter().any(|p| k.starts_with(p))
        })
        .collect();
    if !unexpected.is_empty() {
        // With a prefix, a key may be unknown only for lacking it: say which was expected.
        let under = match how.prefix {
            "" => String::new(),
            p => format!(" under the prefix '{p}'"),
        };
        return Err(Error::bad_file(
            how.path,
            format!(
                "{} tensors the {} does not have{under} (e.g. {}); {}",
                unexpected.len(),
                how.network,
                unexpected[..unexpected.len().min(3)].join(", "),
                how.hint
            ),
        ));
    }
    for store in stores.iter_mut() {
        store.import(backend, how.prefix, tensors, how.path)?;
    }
    Ok(counters
        .iter()
        .filter_map(|c| tensors.get(&format!("{}{c}", how.prefix)))
        .filter_map(|t| t.data.first())
        .map(|&v| v.max(0.0) as u64)
        .max()
        .unwrap_or(0))
}
