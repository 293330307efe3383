//! How well one score ranks architectures as another does: Kendall's tau-b and Spearman's rho
//! (the figures a weight-sharing study reports between supernet scores and stand-alone
//! accuracies), both with ties handled as SciPy's `kendalltau` and `spearmanr` do.

use crate::error::{Error, Result};

fn check(a: &[f64], b: &[f64]) -> Result<()> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(Error::invalid(
            "rank correlation",
            format!(
                "needs two equally long lists of at least 2, got {} and {}",
                a.len(),
                b.len()
            ),
        ));
    }
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "rank correlation",
            format!("score {v} is not finite"),
        ));
    }
    Ok(())
}

/// Kendall's tau-b: `(concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b))` over all
/// pairs; NaN when either list is constant.
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Result<f64> {
    check(a, b)?;
    let n = a.len();
    let (mut c, mut d, mut ta, mut tb) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let (x, y) = (a[i] - a[j], b[i] - b[j]);
            if x == 0.0 && y == 0.0 {
                continue;
            }
            if x == 0.0 {
                ta += 1;
            } else if y == 0.0 {
                tb += 1;
            } else if (x > 0.0) == (y > 0.0) {
                c += 1;
            } else {
                d += 1;
            }
        }
    }
    let denom = (((c + d + ta) * (c + d + tb)) as f64).sqrt();
    Ok((c - d) as f64 / denom)
}

/// Ranks from 1, ties given their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rho: the Pearson correlation of the ranks; NaN when either list is constant.
pub fn spearman_rho(a: &[f64], b: &[f64]) -> Result<f64> {
    check(a, b)?;
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    Ok(sab / (saa * sbb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(kendall_tau(&a, &a).unwrap(), 1.0);
        assert_eq!(kendall_tau(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap(), -1.0);
        assert_eq!(spearman_rho(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap(), -1.0);
        // scipy.stats.kendalltau([1,2,3,4,5], [3,1,2,5,4]) = 0.4; spearmanr = 0.6.
        let b = [3.0, 1.0, 2.0, 5.0, 4.0];
        assert!((kendall_tau(&a, &b).unwrap() - 0.4).abs() < 1e-12);
        assert!((spearman_rho(&a, &b).unwrap() - 0.6).abs() < 1e-12);
        // With ties: kendalltau([1,1,2,3], [1,2,2,3]) = 0.8 (tau-b); spearmanr = 5/6.
        let (c, d) = ([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 3.0]);
        assert!((kendall_tau(&c, &d).unwrap() - 0.8).abs() < 1e-12);
        assert!((spearman_rho(&c, &d).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert!(kendall_tau(&[1.0], &[1.0]).is_err());
        assert!(spearman_rho(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    }
}
