//! Batch normalisation (per channel over N, H, W), training and eval mode.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use super::DeviceOps;
use crate::backend::{BatchNormSaved, RunningStats};
use crate::error::Result;
use crate::shape::Nchw;

pub trait NormOps: DeviceOps {
    /// Training mode: normalise with batch statistics, update `running` if given.
    /// `affine` is (gamma, beta).
    fn batch_norm_train_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        affine: Option<(&Self::Storage, &Self::Storage)>,
        running: Option<RunningStats<'_, Self::Storage>>,
        eps: f64,
    ) -> Result<(Self::Storage, BatchNormSaved<Self::Storage>)>;
    /// Eval mode: normalise with the running statistics.
    fn batch_norm_eval_fwd(
        &self,
        x: &Self::Storage,
        x_dims: Nchw,
        affine: Option<(&Self::Storage, &Self::Storage)>,
        running_mean: &Self::Storage,
        running_var: &Self::Storage,
        eps: f64,
    ) -> Result<Self::Storage>;
    /// Backward of the training-mode forward: `dx`, and `(dgamma, dbeta)` when `gamma` is given.
    #[allow(clippy::type_complexity)]
    fn batch_norm_bwd(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        x_dims: Nchw,
        gamma: Option<&Self::Storage>,
        saved: &BatchNormSaved<Self::Storage>,
    ) -> Result<(Self::Storage, Option<(Self::Storage, Self::Storage)>)>;
}
