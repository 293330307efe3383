//! What the counting backend counts for pooling (`PoolOps`).

use super::{u, CountBuf, Counting, Io};
use crate::backend::{checks, PoolOps};
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};

impl PoolOps for Counting {
    fn max_pool2d_fwd(&self, x: &CountBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CountBuf> {
        let yd = checks::max_pool2d_fwd(self, x, xd, spec)?;
        let f = u(yd.numel() * spec.kernel * spec.kernel);
        self.unary("max_pool2d_fwd", f, &[x], yd.numel())
    }
    fn max_pool2d_bwd(
        &self,
        x: &CountBuf,
        dy: &CountBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<CountBuf> {
        let yd = checks::max_pool2d_bwd(self, x, dy, xd, spec)?;
        // The window maximum is recomputed (k*k compares) and its gradient added (1).
        let f = u(yd.numel() * (spec.kernel * spec.kernel + 1));
        self.unary("max_pool2d_bwd", f, &[x, dy], xd.numel())
    }
    fn max_pool2d_bwd_into(
        &self,
        x: &CountBuf,
        dy: &CountBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut CountBuf,
    ) -> Result<()> {
        let yd = checks::max_pool2d_bwd_into(self, x, dy, xd, spec, dx)?;
        // As `max_pool2d_bwd`; the gradient is added where it was stored, so no extra FLOP.
        let f = u(yd.numel() * (spec.kernel * spec.kernel + 1));
        self.rec(
            "max_pool2d_bwd_into",
            f,
            Io {
                reads: vec![x, dy, &*dx],
                writes: vec![&*dx],
            },
        )
    }
    fn avg_pool2d_fwd(&self, x: &CountBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CountBuf> {
        let yd = checks::avg_pool2d_fwd(self, x, xd, spec)?;
        // Whole windows (padding included) as an upper bound, plus the divide.
        let f = u(yd.numel() * (spec.kernel * spec.kernel + 1));
        self.unary("avg_pool2d_fwd", f, &[x], yd.numel())
    }
    fn avg_pool2d_bwd(&self, dy: &CountBuf, xd: Nchw, spec: &Pool2dSpec) -> Result<CountBuf> {
        let yd = checks::avg_pool2d_bwd(self, dy, xd, spec)?;
        let f = u(yd.numel() * (spec.kernel * spec.kernel + 1));
        self.unary("avg_pool2d_bwd", f, &[dy], xd.numel())
    }
    fn avg_pool2d_bwd_into(
        &self,
        dy: &CountBuf,
        xd: Nchw,
        spec: &Pool2dSpec,
        dx: &mut CountBuf,
    ) -> Result<()> {
        let yd = checks::avg_pool2d_bwd_into(self, dy, xd, spec, dx)?;
        let f = u(yd.numel() * (spec.kernel * spec.kernel + 1));
        self.rec(
            "avg_pool2d_bwd_into",
            f,
            Io {
                reads: vec![dy, &*dx],
                writes: vec![&*dx],
            },
        )
    }
    fn global_avg_pool_fwd(&self, x: &CountBuf, xd: Nchw) -> Result<CountBuf> {
        checks::global_avg_pool_fwd(self, x, xd)?;
        self.unary("global_avg_pool_fwd", u(xd.numel()), &[x], xd.n * xd.c)
    }
    fn global_avg_pool_bwd(&self, dy: &CountBuf, xd: Nchw) -> Result<CountBuf> {
        checks::global_avg_pool_bwd(self, dy, xd)?;
        self.unary("global_avg_pool_bwd", u(xd.numel()), &[dy], xd.numel())
    }
}
