//! Convolution (no bias; weight `[out, in / groups, k, k]`), with an optional fused input ReLU.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::ElementwiseOps;
use crate::backend::checks;
use crate::error::Result;
use crate::shape::{Conv2dSpec, Nchw};

pub trait ConvOps: ElementwiseOps {
    // With `spec.relu_input` every conv op reads `relu(x)` (`relu_fwd`'s rule) where it reads
    // `x` (applied as the input is read, or in a transient buffer freed inside the op, never
    // stored).
    fn conv2d_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        w: &Self::Storage,
        spec: &Conv2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx = conv_transpose(dy, w)`, zero where `x <= 0` when `spec.relu_input` (`relu_bwd`'s
    /// rule); `x` (the forward input) is read only then.
    fn conv2d_bwd_data(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        w: &Self::Storage,
        x_dims: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Self::Storage>;
    /// `dx += conv2d_bwd_data(..)` in place (the fused-ReLU mask applies to the contribution
    /// only, never to what `dx` already holds).
    fn conv2d_bwd_data_into(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        w: &Self::Storage,
        x_dims: Nchw,
        spec: &Conv2dSpec,
        dx: &mut Self::Storage,
    ) -> Result<()> {
        checks::conv2d_bwd_data_into(self, x, dy, w, x_dims, spec, dx)?;
        let g = self.conv2d_bwd_data(x, dy, w, x_dims, spec)?;
        self.axpy(dx, 1.0, &g)
    }
    fn conv2d_bwd_weight(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<Self::Storage>;
}
