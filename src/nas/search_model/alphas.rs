//! The search network's alphas in both views: the per-edge rows `arch` holds (what the
//! optimizer and the tape see) and PyTorch's `[edges, ops]` tables (`alphas_normal`,
//! `alphas_reduce`), to read and to set, their gradients in the table view, and the
//! genotype they derive.

use super::SearchNetwork;
use crate::autograd::ParamId;
use crate::backend::{softmax, Backend};
use crate::error::{Error, Result};
use crate::nas::genotype::Genotype;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The checkpoint names of the alpha tables, as PyTorch DARTS calls its architecture
/// parameters: `[edges, ops]` each, the normal cell's then the reduction cell's.
pub const ALPHA_TABLES: [&str; 2] = ["alphas_normal", "alphas_reduce"];

impl<B: Backend> SearchNetwork<B> {
    /// The ids in `arch` of the per-edge alpha rows of the normal (`reduce = false`) or
    /// reduction cell, in edge order (row e of the table is `arch.get(alpha_row_ids(r)[e])`).
    pub fn alpha_row_ids(&self, reduce: bool) -> &[ParamId] {
        if reduce {
            &self.alphas_reduce
        } else {
            &self.alphas_normal
        }
    }

    /// softmax(alpha) per edge, for the normal (`reduce = false`) or reduction cell.
    pub fn alpha_weights(&self, backend: &B, reduce: bool) -> Result<Vec<Vec<f64>>> {
        self.alpha_row_ids(reduce)
            .iter()
            .map(|&id| Ok(softmax(&self.arch.get(id).to_f64(backend)?)))
            .collect()
    }

    /// The raw alphas as an [edges, ops] table (as PyTorch's `alphas_normal`).
    pub fn alpha_table(&self, backend: &B, reduce: bool) -> Result<Tensor<B>> {
        let rows: Vec<&Tensor<B>> = self
            .alpha_row_ids(reduce)
            .iter()
            .map(|&id| self.arch.get(id))
            .collect();
        self.table_of(backend, &rows)
    }

    /// PyTorch's `model.alphas_normal`: the normal cell's raw alphas, [edges, ops].
    pub fn alphas_normal(&self, backend: &B) -> Result<Tensor<B>> {
        self.alpha_table(backend, false)
    }

    /// PyTorch's `model.alphas_reduce`: the reduction cell's raw alphas, [edges, ops].
    pub fn alphas_reduce(&self, backend: &B) -> Result<Tensor<B>> {
        self.alpha_table(backend, true)
    }

    /// Sets the normal (`reduce = false`) or reduction cell's alphas from an [edges, ops]
    /// table (PyTorch's view); a table of another shape is an error naming both shapes.
    /// The rows get new buffers (a captured DARTS step notices and captures again).
    pub fn set_alpha_table(&mut self, backend: &B, reduce: bool, table: &Tensor<B>) -> Result<()> {
        self.check_table(reduce, table.shape.dims())?;
        let exact = table.to_host(backend)?;
        let k = self.config.ops.len();
        for (e, id) in self.alpha_row_ids(reduce).to_vec().into_iter().enumerate() {
            let row = Tensor::from_host(backend, &exact[e * k..(e + 1) * k], [k])?;
            self.arch.set(id, row)?;
        }
        Ok(())
    }

    /// Sets `model.alphas_normal` from an [edges, ops] table (see [`Self::set_alpha_table`]).
    pub fn set_alphas_normal(&mut self, backend: &B, table: &Tensor<B>) -> Result<()> {
        self.set_alpha_table(backend, false, table)
    }

    /// Sets `model.alphas_reduce` from an [edges, ops] table (see [`Self::set_alpha_table`]).
    pub fn set_alphas_reduce(&mut self, backend: &B, table: &Tensor<B>) -> Result<()> {
        self.set_alpha_table(backend, true, table)
    }

    /// A gradient of the alphas (one tensor per `arch` row, in `arch` order, as
    /// `Darts::arch_gradient` and `Tape` gradients of `arch` give it) in PyTorch's view: the
    /// [edges, ops] table of the normal (`reduce = false`) or reduction cell, what
    /// `model.alphas_normal.grad` holds after PyTorch's backward.
    pub fn alpha_grad_table(
        &self,
        backend: &B,
        grads: &[Tensor<B>],
        reduce: bool,
    ) -> Result<Tensor<B>> {
        if grads.len() != self.arch.len() {
            return Err(Error::invalid(
                "alpha gradient",
                format!("{} tensors for {} alpha rows", grads.len(), self.arch.len()),
            ));
        }
        let rows: Vec<&Tensor<B>> = self
            .alpha_row_ids(reduce)
            .iter()
            .map(|&id| &grads[id.0])
            .collect();
        self.table_of(backend, &rows)
    }

    /// Per-edge rows stacked into an [edges, ops] table.
    fn table_of(&self, backend: &B, rows: &[&Tensor<B>]) -> Result<Tensor<B>> {
        let k = self.config.ops.len();
        let mut v = Vec::with_capacity(rows.len() * k);
        for row in rows {
            if row.shape.dims() != [k] {
                return Err(Error::shape(
                    "alpha table",
                    format!("a row of shape {} (expected [{k}])", row.shape),
                ));
            }
            v.extend(row.to_host(backend)?);
        }
        Tensor::from_host(backend, &v, Shape::new(&[rows.len(), k]))
    }

    pub(super) fn check_table(&self, reduce: bool, shape: &[usize]) -> Result<()> {
        let want = [self.config.edges(), self.config.ops.len()];
        if shape != want {
            return Err(Error::shape(
                "alpha table",
                format!(
                    "{} is {shape:?}; this network's is {want:?} (edges, ops)",
                    ALPHA_TABLES[reduce as usize]
                ),
            ));
        }
        Ok(())
    }

    /// The genotype the current alphas derive (DARTS' `genotype()`: each node keeps its two
    /// strongest incoming edges, each edge its strongest op other than `none`).
    pub fn genotype(&self, backend: &B) -> Result<Genotype> {
        Genotype::from_weights(
            &self.alpha_weights(backend, false)?,
            &self.alpha_weights(backend, true)?,
            &self.config.ops,
            self.config.steps,
            self.config.multiplier,
        )
    }
}
