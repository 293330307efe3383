//! One piece of the MBConv network built alone, with its own weights: the stem, one MBConv
//! block (from its [`BlockPlan`]), or the head (1x1 head conv + BN + swish, global average
//! pooling, the linear classifier). A latency table times these one by one
//! (`nas::latency`); together they are the network's eval-mode forward.

use super::block::{ConvBn, MbConvBlock};
use super::plan::BlockPlan;
use super::MbConvConfig;
use crate::autograd::{ParamStore, Tape};
use crate::backend::Backend;
use crate::error::Result;
use crate::nas::modules::{Builder, Ctx, Linear, Mode};
use crate::rng::Rng;
use crate::shape::Conv2dSpec;
use crate::tensor::Tensor;

enum Piece {
    Stem(ConvBn),
    Block(Box<MbConvBlock>),
    Head(ConvBn, Linear),
}

/// A stem, a block or a head with its weights and BN statistics (fresh: running mean 0,
/// variance 1).
pub struct MbConvPart<B: Backend> {
    weights: ParamStore<B>,
    buffers: ParamStore<B>,
    piece: Piece,
}

impl<B: Backend> MbConvPart<B> {
    fn build(
        backend: &B,
        seed: u64,
        f: impl FnOnce(&mut Builder<B>) -> Result<Piece>,
    ) -> Result<Self> {
        let mut rng = Rng::fork(seed, "weights");
        let (mut weights, mut buffers) = (ParamStore::new(), ParamStore::new());
        let piece = f(&mut Builder::new(
            backend,
            &mut weights,
            &mut buffers,
            &mut rng,
        ))?;
        Ok(MbConvPart {
            weights,
            buffers,
            piece,
        })
    }

    /// The stem of `config`'s network: 3x3 stride-2 conv to `stem_channels` + BN + swish.
    pub fn stem(
        backend: &B,
        config: &MbConvConfig,
        stem_channels: usize,
        seed: u64,
    ) -> Result<Self> {
        let spec = Conv2dSpec::new(config.in_channels, stem_channels, 3)
            .stride(2)
            .padding(1);
        let bn = (config.bn_momentum, config.bn_eps);
        Self::build(backend, seed, |b| {
            Ok(Piece::Stem(ConvBn::new(b, spec, true, bn)?))
        })
    }

    /// One MBConv block of `config`'s network.
    pub fn block(backend: &B, config: &MbConvConfig, plan: BlockPlan, seed: u64) -> Result<Self> {
        let bn = (config.bn_momentum, config.bn_eps);
        Self::build(backend, seed, |b| {
            Ok(Piece::Block(Box::new(MbConvBlock::new(b, plan, bn)?)))
        })
    }

    /// The head of `config`'s network: 1x1 conv `last_channels -> head_channels` + BN +
    /// swish, global average pooling, the classifier.
    pub fn head(
        backend: &B,
        config: &MbConvConfig,
        last_channels: usize,
        head_channels: usize,
        seed: u64,
    ) -> Result<Self> {
        let spec = Conv2dSpec::new(last_channels, head_channels, 1);
        let bn = (config.bn_momentum, config.bn_eps);
        Self::build(backend, seed, |b| {
            let conv = ConvBn::new(b, spec, true, bn)?;
            let linear = b.linear(head_channels, config.classes)?;
            Ok(Piece::Head(conv, linear))
        })
    }

    /// The eval-mode forward of `x` (no gradients recorded), as the network runs it; the
    /// output stays on the device.
    pub fn forward_eval(&mut self, backend: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let mut tape = Tape::new(backend.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(x.clone());
        let no_alphas = ParamStore::new();
        let mut cx = Ctx {
            tape: &mut tape,
            weights: &self.weights,
            buffers: &mut self.buffers,
            arch: &no_alphas,
            mode: Mode::EVAL,
        };
        let y = match &self.piece {
            Piece::Stem(stem) => stem.forward(&mut cx, x)?,
            Piece::Block(block) => block.forward(&mut cx, x, 0.0, &mut Rng::new(0))?,
            Piece::Head(conv, linear) => {
                let h = conv.forward(&mut cx, x)?;
                let pooled = cx.tape.global_avg_pool(h)?;
                linear.forward(&mut cx, pooled)?
            }
        };
        Ok(tape.value(y)?.clone())
    }
}
