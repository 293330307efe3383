//! What the counting backend counts for DARTS MixedOp (`MixedOpOps`).

use super::{mixed_op_present, u, CountBuf, Counting, Io};
use crate::backend::{checks, MixedOpOps};
use crate::error::Result;

impl MixedOpOps for Counting {
    fn mixed_op_fwd(
        &self,
        xs: &[Option<&CountBuf>],
        alpha: &CountBuf,
        len: usize,
    ) -> Result<CountBuf> {
        checks::mixed_op_fwd(self, xs, alpha, len)?;
        let present = mixed_op_present(xs);
        let mut reads = present.clone();
        reads.push(alpha);
        self.unary("mixed_op_fwd", 2 * u(present.len() * len), &reads, len)
    }
    fn mixed_op_bwd(
        &self,
        dy: &CountBuf,
        xs: &[Option<&CountBuf>],
        alpha: &CountBuf,
        len: usize,
        need_dx: &[bool],
    ) -> Result<(Vec<Option<CountBuf>>, CountBuf)> {
        checks::mixed_op_bwd(self, dy, xs, alpha, len)?;
        let present = mixed_op_present(xs);
        let dxs = xs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if x.is_some() && need_dx.get(i).copied().unwrap_or(false) {
                    self.alloc(len).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let dalpha = self.alloc(xs.len())?;
        let mut reads = vec![dy, alpha];
        reads.extend_from_slice(&present);
        let mut writes: Vec<&CountBuf> = dxs.iter().flatten().collect();
        let n_dx = u(writes.len());
        writes.push(&dalpha);
        // A dot product per present input, a scaling per gradient written.
        let f = 2 * u(present.len() * len) + n_dx * u(len);
        self.rec("mixed_op_bwd", f, Io { reads, writes })?;
        Ok((dxs, dalpha))
    }
    fn mixed_op_bwd_into(
        &self,
        dy: &CountBuf,
        xs: &[Option<&CountBuf>],
        alpha: &CountBuf,
        len: usize,
        need_dx: &[bool],
        acc: &mut [Option<&mut CountBuf>],
    ) -> Result<(Vec<Option<CountBuf>>, CountBuf)> {
        checks::mixed_op_bwd_into(self, dy, xs, alpha, len, acc)?;
        let present = mixed_op_present(xs);
        let wanted = |i: usize| xs[i].is_some() && need_dx.get(i).copied().unwrap_or(false);
        let mut dxs = Vec::with_capacity(xs.len());
        for (i, a) in acc.iter().enumerate() {
            match a {
                Some(_) if wanted(i) => dxs.push(None),
                _ if wanted(i) => dxs.push(Some(self.alloc(len)?)),
                _ => dxs.push(None),
            }
        }
        let dalpha = self.alloc(xs.len())?;
        let mut reads = vec![dy, alpha];
        reads.extend_from_slice(&present);
        let mut writes: Vec<&CountBuf> = dxs.iter().flatten().collect();
        let n_fresh = u(writes.len());
        // An accumulated dx_k is read and written back (a multiply-add per element).
        let mut n_acc = 0;
        for (i, a) in acc.iter().enumerate() {
            if let (Some(a), true) = (a, wanted(i)) {
                reads.push(&**a);
                writes.push(&**a);
                n_acc += 1;
            }
        }
        writes.push(&dalpha);
        let f = 2 * u(present.len() * len) + n_fresh * u(len) + 2 * n_acc * u(len);
        self.rec("mixed_op_bwd_into", f, Io { reads, writes })?;
        Ok((dxs, dalpha))
    }
}
