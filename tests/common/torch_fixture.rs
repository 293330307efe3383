//! The PyTorch op fixture (`tests/fixtures/ops.safetensors`, written by
//! `tools/make_fixtures.py`) as the parity test reads it: each case's parameters and tensors,
//! and the comparison of a result with PyTorch's (the worst `error / allowed` ratio, the
//! tolerances and the rule in `tests/torch_parity.rs`).

use nasrs::backend::Element;
use nasrs::Nchw;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

pub const OPS_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ops.safetensors"
);
pub const RTOL_F32: f64 = 1e-4;
pub const RTOL_F64: f64 = 1e-6;
pub const RTOL_UPDATE: f64 = 1e-3;

pub type R<T> = std::result::Result<T, String>;

/// One case of the fixture: its parameters and access to its tensors.
pub struct Case<'a> {
    pub name: &'a str,
    pub params: &'a Value,
    pub st: &'a SafeTensors<'a>,
}

impl Case<'_> {
    pub fn tensor(&self, t: &str) -> R<(Vec<f64>, Vec<usize>)> {
        let key = format!("{}.{t}", self.name);
        let view = self
            .st
            .tensor(&key)
            .map_err(|e| format!("{OPS_FIXTURE}: tensor {key}: {e}"))?;
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| {
                    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f64
                })
                .collect(),
            d => {
                return Err(format!(
                    "{OPS_FIXTURE}: tensor {key} has dtype {d:?}, expected F32 or I64"
                ))
            }
        };
        Ok((values, view.shape().to_vec()))
    }
    pub fn values(&self, t: &str) -> R<Vec<f64>> {
        Ok(self.tensor(t)?.0)
    }
    pub fn buf<T: Element>(&self, t: &str) -> R<Vec<T>> {
        Ok(self.values(t)?.into_iter().map(T::from_f64).collect())
    }
    pub fn nchw(&self, t: &str) -> R<Nchw> {
        match self.tensor(t)?.1[..] {
            [n, c, h, w] => Ok(Nchw { n, c, h, w }),
            ref s => Err(format!(
                "{}.{t}: expected an NCHW tensor, got shape {s:?}",
                self.name
            )),
        }
    }
    pub fn usize(&self, key: &str) -> R<usize> {
        self.params
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("case {}: missing integer parameter {key}", self.name))
    }
    pub fn f64(&self, key: &str) -> R<f64> {
        self.params
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("case {}: missing number parameter {key}", self.name))
    }
    pub fn bool(&self, key: &str) -> R<bool> {
        self.params
            .get(key)
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("case {}: missing bool parameter {key}", self.name))
    }
}

/// Compares one result with its reference; returns the worst `error / allowed` ratio (<= 1
/// passes) or an error naming the case, tensor and worst element.
// `!(a <= b)` on purpose: a NaN ratio must fail, where `a > b` would let it pass.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn compare<T: Element>(case: &str, what: &str, got: &[T], want: &[f64], rtol: f64) -> R<f64> {
    if got.len() != want.len() {
        return Err(format!(
            "{case}.{what}: {} elements, PyTorch has {}",
            got.len(),
            want.len()
        ));
    }
    let floor = 1e-3 * want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        let allowed = rtol * (w.abs() + floor);
        let ratio = if allowed > 0.0 {
            (g - w).abs() / allowed
        } else if g == w {
            0.0
        } else {
            f64::INFINITY
        };
        if !(ratio <= worst.0) {
            worst = (ratio, i);
        }
    }
    if !(worst.0 <= 1.0) {
        let i = worst.1;
        return Err(format!(
            "{case}.{what}[{i}]: nasrs {} vs PyTorch {} (error {:.3}x the tolerance {rtol:e})",
            got[i].to_f64(),
            want[i],
            worst.0
        ));
    }
    Ok(worst.0)
}

/// The checks of one case, keeping the worst `error / allowed` ratio seen.
pub struct Checker<'a, 'b> {
    pub case: &'b Case<'a>,
    pub rtol: f64,
    pub worst: f64,
}

impl Checker<'_, '_> {
    pub fn check<T: Element>(&mut self, what: &str, got: &[T], reference: &str) -> R<()> {
        let want = self.case.values(reference)?;
        let r = compare(self.case.name, what, got, &want, self.rtol)?;
        self.worst = self.worst.max(r);
        Ok(())
    }
    /// Checks `after - before` against the reference update `want_after - before`.
    pub fn check_update<T: Element>(
        &mut self,
        what: &str,
        got_after: &[T],
        before: &[f64],
        want_after: &[f64],
    ) -> R<()> {
        let got: Vec<f64> = got_after
            .iter()
            .zip(before)
            .map(|(g, b)| g.to_f64() - b)
            .collect();
        let want: Vec<f64> = want_after.iter().zip(before).map(|(w, b)| w - b).collect();
        let r = compare(self.case.name, what, &got, &want, RTOL_UPDATE)?;
        self.worst = self.worst.max(r);
        Ok(())
    }
}
