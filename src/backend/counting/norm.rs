//! What the counting backend counts for batch normalisation (`NormOps`).

use super::{flops, u, CountBuf, Counting, Io};
use crate::backend::{checks, BatchNormSaved, NormOps, RunningStats};
use crate::error::Result;
use crate::shape::Nchw;

impl NormOps for Counting {
    fn batch_norm_train_fwd(
        &self,
        x: &CountBuf,
        xd: Nchw,
        affine: Option<(&CountBuf, &CountBuf)>,
        running: Option<RunningStats<'_, CountBuf>>,
        _eps: f64,
    ) -> Result<(CountBuf, BatchNormSaved<CountBuf>)> {
        checks::batch_norm_train_fwd(self, x, xd, affine, running.as_ref())?;
        let y = self.alloc(xd.numel())?;
        let mean = self.alloc(xd.c)?;
        let invstd = self.alloc(xd.c)?;
        let mut reads = vec![x];
        let mut writes = vec![&y, &mean, &invstd];
        let mut f = flops::BN_FWD * u(xd.numel());
        if let Some((g, b)) = affine {
            reads.extend([g, b]);
            f += flops::BN_AFFINE * u(xd.numel());
        }
        let running = running.map(|r| (r.mean as &CountBuf, r.var as &CountBuf));
        if let Some((m, v)) = running {
            reads.extend([m, v]);
            writes.extend([m, v]);
            f += 6 * u(xd.c);
        }
        self.rec("batch_norm_train_fwd", f, Io { reads, writes })?;
        Ok((y, BatchNormSaved { mean, invstd }))
    }
    fn batch_norm_eval_fwd(
        &self,
        x: &CountBuf,
        xd: Nchw,
        affine: Option<(&CountBuf, &CountBuf)>,
        running_mean: &CountBuf,
        running_var: &CountBuf,
        _eps: f64,
    ) -> Result<CountBuf> {
        checks::batch_norm_eval_fwd(self, x, xd, affine, running_mean, running_var)?;
        let mut reads = vec![x, running_mean, running_var];
        let mut f = flops::BN_EVAL * u(xd.numel());
        if let Some((g, b)) = affine {
            reads.extend([g, b]);
            f += flops::BN_AFFINE * u(xd.numel());
        }
        self.unary("batch_norm_eval_fwd", f, &reads, xd.numel())
    }
    fn batch_norm_bwd(
        &self,
        x: &CountBuf,
        dy: &CountBuf,
        xd: Nchw,
        gamma: Option<&CountBuf>,
        saved: &BatchNormSaved<CountBuf>,
    ) -> Result<(CountBuf, Option<(CountBuf, CountBuf)>)> {
        checks::batch_norm_bwd(self, x, dy, xd, gamma, saved)?;
        let dx = self.alloc(xd.numel())?;
        let dgb = match gamma {
            Some(_) => Some((self.alloc(xd.c)?, self.alloc(xd.c)?)),
            None => None,
        };
        let mut reads = vec![x, dy, &saved.mean, &saved.invstd];
        let mut writes = vec![&dx];
        let mut f = flops::BN_BWD * u(xd.numel());
        if let (Some(g), Some((dg, db))) = (gamma, dgb.as_ref()) {
            reads.push(g);
            writes.extend([dg, db]);
            f += u(xd.numel());
        }
        self.rec("batch_norm_bwd", f, Io { reads, writes })?;
        Ok((dx, dgb))
    }
}
