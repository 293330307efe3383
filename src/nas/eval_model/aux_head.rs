//! The auxiliary head (`AuxiliaryHeadCIFAR` of the DARTS code): a second classifier on the
//! features of cell 2L/3, trained alongside the network and left out of the paper's
//! parameter count.

use super::conv_spec;
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nas::modules::{BatchNorm, Builder, Conv, Ctx, Linear};
use crate::shape::Pool2dSpec;

/// Channels of the auxiliary head's 1x1 and 2x2 convolutions (fixed in `AuxiliaryHeadCIFAR`).
pub const AUX_MID: usize = 128;
pub const AUX_OUT: usize = 768;
/// Name prefix of the auxiliary head (not counted in the paper's parameter count).
pub const AUX_PREFIX: &str = "auxiliary_head.";

/// `AuxiliaryHeadCIFAR`: ReLU, AvgPool 5x5/3 (count_include_pad=False), conv 1x1 C->128,
/// BN, ReLU, conv 2x2 128->768, BN, ReLU, linear 768->classes.
pub(super) struct AuxHead {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    classifier: Linear,
}

const AUX_POOL: Pool2dSpec = Pool2dSpec {
    kernel: 5,
    stride: 3,
    padding: 0,
};

impl AuxHead {
    /// Builds the head on `c_in` channels under PyTorch's names
    /// (`auxiliary_head.features.2.weight`, `auxiliary_head.classifier.weight`).
    pub(super) fn new<B: Backend>(b: &mut Builder<B>, c_in: usize, classes: usize) -> Result<Self> {
        b.scope("auxiliary_head", |b| {
            let (conv1, bn1, conv2, bn2) = b.scope("features", |b| {
                Ok((
                    b.scope(2, |b| b.conv(conv_spec(c_in, AUX_MID, 1, 0)))?,
                    b.scope(3, |b| b.batch_norm(AUX_MID, true))?,
                    // The ReLU between bn1 and conv2 is fused into conv2.
                    b.scope(5, |b| {
                        b.conv(conv_spec(AUX_MID, AUX_OUT, 2, 0).relu_input())
                    })?,
                    b.scope(6, |b| b.batch_norm(AUX_OUT, true))?,
                ))
            })?;
            let classifier = b.scope("classifier", |b| b.linear(AUX_OUT, classes))?;
            Ok(AuxHead {
                conv1,
                bn1,
                conv2,
                bn2,
                classifier,
            })
        })
    }

    pub(super) fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let h = cx.tape.relu(x)?;
        let h = cx.tape.avg_pool2d(h, AUX_POOL)?;
        let h = self.conv1.forward(cx, h)?;
        let h = self.bn1.forward(cx, h)?;
        let h = self.conv2.forward(cx, h)?;
        let h = self.bn2.forward(cx, h)?;
        let h = cx.tape.relu(h)?;
        let d = cx.tape.shape(h).nchw("auxiliary head")?;
        if d.h != 1 || d.w != 1 {
            return Err(Error::shape(
                "auxiliary head",
                format!(
                    "features end at {}x{} instead of 1x1 (the head expects 8x8 inputs, i.e. 32x32 images)",
                    d.h, d.w
                ),
            ));
        }
        // Averaging a 1x1 plane is exactly the flatten `x.view(n, -1)`.
        let flat = cx.tape.global_avg_pool(h)?;
        self.classifier.forward(cx, flat)
    }
}
