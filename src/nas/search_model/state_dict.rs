//! The search network's PyTorch `state_dict`: weights, BN running statistics and
//! `num_batches_tracked` (loaded strictly through `autograd::load_state_dict_strict`, the
//! rules the evaluation network follows too) plus the alphas, as tables or per-edge rows.

use super::{SearchNetwork, ALPHA_TABLES};
use crate::autograd::{load_state_dict_strict, StrictLoad};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::{HostTensor, HostTensorI64};
use std::collections::BTreeMap;
use std::path::Path;

impl<B: Backend> SearchNetwork<B> {
    /// The PyTorch `state_dict`: weights and running statistics as f32 under PyTorch DARTS'
    /// names, the alphas as the two [edges, ops] tables `alphas_normal` and `alphas_reduce`
    /// (PyTorch's `arch_parameters()`; not the per-edge rows), and each BN's
    /// `num_batches_tracked` (= `bn_batches`) as an i64 scalar.
    pub fn state_dict(
        &self,
        backend: &B,
    ) -> Result<(
        BTreeMap<String, HostTensor>,
        BTreeMap<String, HostTensorI64>,
    )> {
        let mut floats = BTreeMap::new();
        self.weights.export(backend, "", &mut floats)?;
        self.buffers.export(backend, "", &mut floats)?;
        for (reduce, name) in [false, true].into_iter().zip(ALPHA_TABLES) {
            let table = self.alpha_table(backend, reduce)?;
            floats.insert(
                name.to_string(),
                HostTensor {
                    shape: table.shape.dims().to_vec(),
                    data: table.to_f32(backend)?,
                },
            );
        }
        let ints = self.buffers.bn_counters(self.bn_batches);
        Ok((floats, ints))
    }

    /// Loads a `state_dict` (as [`Self::state_dict`] writes it, a PyTorch DARTS search
    /// network's, or a `nasrs search` checkpoint) with `EvalNetwork::load_state_dict`'s
    /// rules: every weight and running statistic must be present with its shape, and
    /// nothing unknown may be, except `num_batches_tracked` (optional: older PyTorch has
    /// none; `bn_batches` becomes the largest found, else 0) and names starting with one of
    /// `ignore_prefixes` (a checkpoint's optimizer state: `optimizer.`, `arch_optimizer.`).
    ///
    /// The alphas are read from the tables `alphas_normal` / `alphas_reduce` ([edges, ops])
    /// or, for a cell without its table, from the per-edge rows `alphas_normal.{e}` (both
    /// are in search checkpoints; the table wins). A cell with neither keeps its alphas:
    /// PyTorch DARTS keeps them out of `model.state_dict()` (they are not registered
    /// parameters), so add them to the file or set them with [`Self::set_alpha_table`].
    /// Errors name `path`, the file the tensors came from.
    pub fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        let also_known: Vec<&str> = self
            .arch
            .names()
            .iter()
            .map(String::as_str)
            .chain(ALPHA_TABLES)
            .collect();
        let how = StrictLoad {
            prefix: "",
            ignore_prefixes,
            also_known: &also_known,
            network: "search network",
            hint: "is it the same --channels, --layers, --nodes and --ops?",
            path,
        };
        let stores = &mut [&mut self.weights, &mut self.buffers];
        let bn_batches = load_state_dict_strict(backend, stores, tensors, &how)?;
        let bad = |e: Error| Error::bad_file(path, e.to_string());
        let k = self.config.ops.len();
        for (reduce, name) in [false, true].into_iter().zip(ALPHA_TABLES) {
            let ids = self.alpha_row_ids(reduce).to_vec();
            if let Some(table) = tensors.get(name) {
                self.check_table(reduce, &table.shape).map_err(bad)?;
                if table.data.len() != ids.len() * k {
                    return Err(Error::bad_file(
                        path,
                        format!("{name} holds {} values for its shape", table.data.len()),
                    ));
                }
                for (e, id) in ids.into_iter().enumerate() {
                    let row = HostTensor {
                        shape: vec![k],
                        data: table.data[e * k..(e + 1) * k].to_vec(),
                    };
                    self.arch.set_host(backend, id, &row).map_err(bad)?;
                }
                continue;
            }
            let rows: Vec<Option<&HostTensor>> = ids
                .iter()
                .map(|&id| tensors.get(self.arch.name(id)))
                .collect();
            match rows.iter().position(|r| r.is_none()) {
                // Neither the table nor any row: the alphas stay as they are.
                Some(_) if rows.iter().all(|r| r.is_none()) => {}
                Some(e) => {
                    return Err(Error::bad_file(
                        path,
                        format!(
                            "missing tensor {} (and no {name} table)",
                            self.arch.name(ids[e])
                        ),
                    ))
                }
                None => {
                    for (id, row) in ids.into_iter().zip(rows.into_iter().flatten()) {
                        self.arch.set_host(backend, id, row).map_err(bad)?;
                    }
                }
            }
        }
        self.bn_batches = bn_batches;
        Ok(())
    }
}
