//! Max, average and global average pooling.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::ElementwiseOps;
use crate::backend::checks;
use crate::error::Result;
use crate::shape::{Nchw, Pool2dSpec};

pub trait PoolOps: ElementwiseOps {
    fn max_pool2d_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    /// Routes each output gradient to the first maximum of its window (PyTorch's tie rule),
    /// or to its last NaN (a NaN is the maximum, as in PyTorch's `max_pool2d`, whose output
    /// it is), recomputed from `x` so no index tensor is stored.
    fn max_pool2d_bwd(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx += max_pool2d_bwd(..)` in place.
    fn max_pool2d_bwd_into(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Self::Storage,
    ) -> Result<()> {
        checks::max_pool2d_bwd_into(self, x, dy, x_dims, spec, dx)?;
        let g = self.max_pool2d_bwd(x, dy, x_dims, spec)?;
        self.axpy(dx, 1.0, &g)
    }
    /// Padding is not counted in the divisor (`count_include_pad=False`).
    fn avg_pool2d_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    fn avg_pool2d_bwd(
        &self,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx += avg_pool2d_bwd(..)` in place.
    fn avg_pool2d_bwd_into(
        &self,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Pool2dSpec,
        dx: &mut Self::Storage,
    ) -> Result<()> {
        checks::avg_pool2d_bwd_into(self, dy, x_dims, spec, dx)?;
        let g = self.avg_pool2d_bwd(dy, x_dims, spec)?;
        self.axpy(dx, 1.0, &g)
    }
    /// Mean over H and W: [N, C, H, W] -> [N, C].
    fn global_avg_pool_fwd(&self, x: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;
    fn global_avg_pool_bwd(&self, dy: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;
}
