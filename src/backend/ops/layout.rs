//! Channel concatenation and splitting, and the one-pixel shift-crop of FactorizedReduce.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::DeviceOps;
use crate::error::Result;
use crate::shape::Nchw;

pub trait LayoutOps: DeviceOps {
    /// Concatenates NCHW tensors of equal N, H, W along channels.
    fn concat_channels(&self, parts: &[(&Self::Storage, Nchw)]) -> Result<Self::Storage>;
    /// The backward of `concat_channels`: splits `dy` back into per-part channel counts.
    fn split_channels(
        &self,
        dy: &Self::Storage,
        dy_dims: Nchw,
        channels: &[usize],
    ) -> Result<Vec<Self::Storage>>;
    /// `x[:, :, 1:, 1:]` (FactorizedReduce's second path): [N, C, H, W] -> [N, C, H-1, W-1].
    fn shift_crop_fwd(&self, x: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;
    fn shift_crop_bwd(&self, dy: &Self::Storage, x_dims: Nchw) -> Result<Self::Storage>;
}
