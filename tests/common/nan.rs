//! What the NaN tests (`tests/nan_*.rs`) share: NaN and infinity, downloads, and the
//! index sets they compare (which elements are NaN, which are not finite).

use nasrs::Backend;

pub const NAN: f32 = f32::NAN;
pub const INF: f32 = f32::INFINITY;

pub fn down<B: Backend<Elem = f32>>(be: &B, s: &B::Storage) -> nasrs::Result<Vec<f32>> {
    be.download(s)
}

/// Indices of the NaN elements.
pub fn nans(v: &[f32]) -> Vec<usize> {
    (0..v.len()).filter(|&i| v[i].is_nan()).collect()
}

/// Indices of the non-finite elements.
pub fn non_finite(v: &[f32]) -> Vec<usize> {
    (0..v.len()).filter(|&i| !v[i].is_finite()).collect()
}

/// Equal, a NaN matching any NaN.
pub fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}
