//! DARTS building blocks on the autograd tape, with PyTorch-compatible parameter names and
//! initialisation (kaiming-uniform convs, BN weight 1 / bias 0, running mean 0 / var 1).
//!
//! A module holds `ParamId`s into three stores: `weights` (trained by SGD), `buffers` (BN
//! running statistics) and, for the supernet, `arch` (the alphas). `Ctx` carries the stores
//! and the mode into every forward.

use super::genotype::Primitive;
use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::backend::{Backend, Element};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::{Conv2dSpec, Nchw, Pool2dSpec, Shape};
use crate::tensor::Tensor;

pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// How a forward pass runs.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Batch norm uses batch statistics (training) or running statistics (eval).
    pub train: bool,
    /// Training-mode batch norms update their running statistics.
    pub update_running: bool,
    /// Gradients are wanted for the weights / for the architecture parameters.
    pub grad_weights: bool,
    pub grad_arch: bool,
}

impl Mode {
    /// A weight step: batch statistics, running update, weight gradients only.
    pub const WEIGHT_STEP: Mode = Mode {
        train: true,
        update_running: true,
        grad_weights: true,
        grad_arch: false,
    };
    /// An architecture step: batch statistics, alpha gradients only, running stats untouched.
    pub const ARCH_STEP: Mode = Mode {
        train: true,
        update_running: false,
        grad_weights: false,
        grad_arch: true,
    };
    /// Weights and alphas trained together on one batch (one-level DARTS, or an embedding
    /// user's own joint step): batch statistics, running update, both gradients.
    pub const JOINT_STEP: Mode = Mode {
        train: true,
        update_running: true,
        grad_weights: true,
        grad_arch: true,
    };
    /// Batch statistics without updating the running ones and without gradients (what the
    /// training-mode output of a network is, read without side effects).
    pub const TRAIN_NO_UPDATE: Mode = Mode {
        train: true,
        update_running: false,
        grad_weights: false,
        grad_arch: false,
    };
    /// Inference.
    pub const EVAL: Mode = Mode {
        train: false,
        update_running: false,
        grad_weights: false,
        grad_arch: false,
    };
}

pub struct Ctx<'a, B: Backend> {
    pub tape: &'a mut Tape<B>,
    pub weights: &'a ParamStore<B>,
    pub buffers: &'a mut ParamStore<B>,
    pub arch: &'a ParamStore<B>,
    pub mode: Mode,
}

impl<B: Backend> Ctx<'_, B> {
    pub fn weight(&mut self, id: ParamId) -> Var {
        self.tape.param(self.weights, id, self.mode.grad_weights)
    }
    pub fn alpha(&mut self, id: ParamId) -> Var {
        self.tape.param(self.arch, id, self.mode.grad_arch)
    }
}

/// Creates parameters with dotted names under a prefix stack.
pub struct Builder<'a, B: Backend> {
    pub backend: &'a B,
    pub weights: &'a mut ParamStore<B>,
    pub buffers: &'a mut ParamStore<B>,
    pub rng: &'a mut Rng,
    prefix: Vec<String>,
}

impl<'a, B: Backend> Builder<'a, B> {
    pub fn new(
        backend: &'a B,
        weights: &'a mut ParamStore<B>,
        buffers: &'a mut ParamStore<B>,
        rng: &'a mut Rng,
    ) -> Self {
        Builder {
            backend,
            weights,
            buffers,
            rng,
            prefix: Vec::new(),
        }
    }

    /// Runs `f` with `part` appended to the name prefix.
    pub fn scope<T>(
        &mut self,
        part: impl ToString,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.prefix.push(part.to_string());
        let r = f(self);
        self.prefix.pop();
        r
    }

    fn name(&self, leaf: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(leaf.to_string());
        parts.join(".")
    }

    fn uniform(&mut self, shape: Shape, bound: f64) -> Result<Tensor<B>> {
        let v: Vec<B::Elem> = (0..shape.numel())
            .map(|_| B::Elem::from_f64((2.0 * self.rng.uniform() - 1.0) * bound))
            .collect();
        Tensor::from_host(self.backend, &v, shape)
    }

    fn filled(&mut self, shape: Shape, value: f64) -> Result<Tensor<B>> {
        Tensor::from_host(
            self.backend,
            &vec![B::Elem::from_f64(value); shape.numel()],
            shape,
        )
    }

    /// A weight named `leaf` under the current scope, drawn from U(-bound, bound) (a conv's
    /// bias, for one).
    pub fn uniform_param(&mut self, leaf: &str, shape: Shape, bound: f64) -> Result<ParamId> {
        let t = self.uniform(shape, bound)?;
        Ok(self.weights.add(self.name(leaf), t))
    }

    /// A bias-free conv, PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn conv(&mut self, spec: Conv2dSpec) -> Result<Conv> {
        let shape = spec.weight_shape();
        let fan_in = (spec.in_channels / spec.groups) * spec.kernel * spec.kernel;
        let t = self.uniform(shape, 1.0 / (fan_in as f64).sqrt())?;
        Ok(Conv {
            weight: self.weights.add(self.name("weight"), t),
            spec,
        })
    }

    /// A batch norm with PyTorch's defaults (momentum [`BN_MOMENTUM`], eps [`BN_EPS`]).
    pub fn batch_norm(&mut self, channels: usize, affine: bool) -> Result<BatchNorm> {
        self.batch_norm_with(channels, affine, BN_MOMENTUM, BN_EPS)
    }

    /// A batch norm with its own momentum and eps in PyTorch's terms (EfficientNet's are
    /// 0.01 and 1e-3).
    pub fn batch_norm_with(
        &mut self,
        channels: usize,
        affine: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<BatchNorm> {
        let affine = if affine {
            let g = self.filled(Shape::new(&[channels]), 1.0)?;
            let b = self.filled(Shape::new(&[channels]), 0.0)?;
            Some((
                self.weights.add(self.name("weight"), g),
                self.weights.add(self.name("bias"), b),
            ))
        } else {
            None
        };
        let rm = self.filled(Shape::new(&[channels]), 0.0)?;
        let rv = self.filled(Shape::new(&[channels]), 1.0)?;
        let running_mean = self.buffers.add(self.name("running_mean"), rm);
        let running_var = self.buffers.add(self.name("running_var"), rv);
        Ok(BatchNorm {
            affine,
            running_mean,
            running_var,
            momentum,
            eps,
        })
    }

    /// nn.Linear init: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
    pub fn linear(&mut self, in_f: usize, out_f: usize) -> Result<Linear> {
        let bound = 1.0 / (in_f as f64).sqrt();
        let w = self.uniform(Shape::new(&[out_f, in_f]), bound)?;
        let b = self.uniform(Shape::new(&[out_f]), bound)?;
        Ok(Linear {
            weight: self.weights.add(self.name("weight"), w),
            bias: self.weights.add(self.name("bias"), b),
        })
    }
}

pub struct Conv {
    pub weight: ParamId,
    pub spec: Conv2dSpec,
}

impl Conv {
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let w = cx.weight(self.weight);
        cx.tape.conv2d(x, w, self.spec)
    }
}

pub struct BatchNorm {
    pub affine: Option<(ParamId, ParamId)>,
    pub running_mean: ParamId,
    pub running_var: ParamId,
    /// PyTorch's momentum: `running = (1 - momentum) * running + momentum * batch`.
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm {
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let affine = self.affine.map(|(g, b)| (cx.weight(g), cx.weight(b)));
        if cx.mode.train {
            if cx.mode.update_running {
                let [rm, rv] = cx
                    .buffers
                    .get_disjoint_mut([self.running_mean, self.running_var])?;
                cx.tape
                    .batch_norm_train(x, affine, Some((rm, rv, self.momentum)), self.eps)
            } else {
                cx.tape.batch_norm_train(x, affine, None, self.eps)
            }
        } else {
            let (rm, rv) = (
                cx.buffers.get(self.running_mean).clone(),
                cx.buffers.get(self.running_var).clone(),
            );
            cx.tape.batch_norm_eval(x, affine, &rm, &rv, self.eps)
        }
    }
}

pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
}

impl Linear {
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let (w, b) = (cx.weight(self.weight), cx.weight(self.bias));
        cx.tape.linear(x, w, Some(b))
    }
}

fn conv_spec(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Conv2dSpec {
    Conv2dSpec::new(c_in, c_out, kernel)
        .stride(stride)
        .padding(padding)
        .dilation(dilation)
        .groups(groups)
}

/// `spec` reading `max(x, 0)`: the ReLU that starts every DARTS conv block, fused into its
/// first conv so that no ReLU output is stored (see `Conv2dSpec::relu_input`).
fn relu_then(spec: Conv2dSpec) -> Conv2dSpec {
    spec.relu_input()
}

/// ReLU, conv k x k, BN (`ReLUConvBN`: names `op.1.weight`, `op.2.*`); the ReLU is fused
/// into the conv.
pub struct ReluConvBn {
    conv: Conv,
    bn: BatchNorm,
}

impl ReluConvBn {
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        affine: bool,
    ) -> Result<Self> {
        b.scope("op", |b| {
            let conv = b.scope(1, |b| {
                b.conv(relu_then(conv_spec(
                    c_in, c_out, kernel, stride, padding, 1, 1,
                )))
            })?;
            let bn = b.scope(2, |b| b.batch_norm(c_out, affine))?;
            Ok(ReluConvBn { conv, bn })
        })
    }
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let h = self.conv.forward(cx, x)?;
        self.bn.forward(cx, h)
    }
}

/// ReLU, then two 1x1 stride-2 convs on x and x[:, :, 1:, 1:], concatenated, then BN. The
/// ReLU is fused into both convs (it commutes with the crop, so the second crops x itself).
pub struct FactorizedReduce {
    conv_1: Conv,
    conv_2: Conv,
    bn: BatchNorm,
}

impl FactorizedReduce {
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        c_in: usize,
        c_out: usize,
        affine: bool,
    ) -> Result<Self> {
        let half = relu_then(conv_spec(c_in, c_out / 2, 1, 2, 0, 1, 1));
        Ok(FactorizedReduce {
            conv_1: b.scope("conv_1", |b| b.conv(half))?,
            conv_2: b.scope("conv_2", |b| b.conv(half))?,
            bn: b.scope("bn", |b| b.batch_norm(c_out, affine))?,
        })
    }
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let a = self.conv_1.forward(cx, x)?;
        let shifted = cx.tape.shift_crop(x)?;
        let b = self.conv_2.forward(cx, shifted)?;
        let cat = cx.tape.concat_channels(&[a, b])?;
        self.bn.forward(cx, cat)
    }
}

/// A cell's two input preprocessors (`preprocess0`, `preprocess1`), as in both DARTS
/// networks: the older input goes through FactorizedReduce when the previous cell reduced
/// (its resolution is then twice the newer one's), else through ReLU-Conv1x1-BN; the newer
/// input always through ReLU-Conv1x1-BN.
pub struct CellInputs {
    preprocess0: Preprocess,
    preprocess1: ReluConvBn,
}

enum Preprocess {
    ReluConvBn(ReluConvBn),
    FactorizedReduce(FactorizedReduce),
}

impl CellInputs {
    /// `c_pp`, `c_p`: channels of the two inputs; `c`: the cell's channels.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        c_pp: usize,
        c_p: usize,
        c: usize,
        reduction_prev: bool,
        affine: bool,
    ) -> Result<Self> {
        let preprocess0 = b.scope("preprocess0", |b| {
            Ok(if reduction_prev {
                Preprocess::FactorizedReduce(FactorizedReduce::new(b, c_pp, c, affine)?)
            } else {
                Preprocess::ReluConvBn(ReluConvBn::new(b, c_pp, c, 1, 1, 0, affine)?)
            })
        })?;
        let preprocess1 = b.scope("preprocess1", |b| {
            ReluConvBn::new(b, c_p, c, 1, 1, 0, affine)
        })?;
        Ok(CellInputs {
            preprocess0,
            preprocess1,
        })
    }

    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, s0: Var, s1: Var) -> Result<(Var, Var)> {
        let h0 = match &self.preprocess0 {
            Preprocess::ReluConvBn(m) => m.forward(cx, s0)?,
            Preprocess::FactorizedReduce(m) => m.forward(cx, s0)?,
        };
        Ok((h0, self.preprocess1.forward(cx, s1)?))
    }
}

/// PyTorch DARTS' `DilConv`: ReLU, depthwise k x k (dilated for a `dil_conv` edge),
/// pointwise 1x1, BN. A `dil_conv` edge is one; a SepConv is two at dilation 1, as in
/// DARTS' `SepConv`. The ReLU is fused into the depthwise conv.
pub struct DilConv {
    dw: Conv,
    pw: Conv,
    bn: BatchNorm,
}

impl DilConv {
    /// `first` is the index of the depthwise conv inside the `op` Sequential.
    #[allow(clippy::too_many_arguments)]
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        first: usize,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        affine: bool,
    ) -> Result<Self> {
        Ok(DilConv {
            dw: b.scope(first, |b| {
                b.conv(relu_then(conv_spec(
                    c_in, c_in, kernel, stride, padding, dilation, c_in,
                )))
            })?,
            pw: b.scope(first + 1, |b| b.conv(conv_spec(c_in, c_out, 1, 1, 0, 1, 1)))?,
            bn: b.scope(first + 2, |b| b.batch_norm(c_out, affine))?,
        })
    }
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Var> {
        let h = self.dw.forward(cx, x)?;
        let h = self.pw.forward(cx, h)?;
        self.bn.forward(cx, h)
    }
}

/// One candidate operation on an edge.
pub enum EdgeOp {
    /// The `none` op: all zero (at stride 2 of the shape of `x[:, :, ::2, ::2]`). Never
    /// materialised: `forward` answers None and the fused MixedOp skips the input.
    Zero,
    Pool {
        max: bool,
        spec: Pool2dSpec,
        bn: Option<BatchNorm>,
    },
    Identity,
    FactorizedReduce(FactorizedReduce),
    SepConv(Box<[DilConv; 2]>),
    DilConv(DilConv),
}

impl EdgeOp {
    /// Builds `primitive` at `stride` for `c` channels, with PyTorch DARTS' names. `pool_bn`:
    /// the search network follows pools with a non-affine BN.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        primitive: Primitive,
        c: usize,
        stride: usize,
        affine: bool,
        pool_bn: bool,
    ) -> Result<Self> {
        Ok(match primitive {
            Primitive::None => EdgeOp::Zero,
            Primitive::MaxPool3x3 | Primitive::AvgPool3x3 => {
                let bn = if pool_bn {
                    Some(b.scope(1, |b| b.batch_norm(c, false))?)
                } else {
                    None
                };
                EdgeOp::Pool {
                    max: primitive == Primitive::MaxPool3x3,
                    spec: Pool2dSpec {
                        kernel: 3,
                        stride,
                        padding: 1,
                    },
                    bn,
                }
            }
            Primitive::SkipConnect if stride == 1 => EdgeOp::Identity,
            Primitive::SkipConnect => {
                EdgeOp::FactorizedReduce(FactorizedReduce::new(b, c, c, affine)?)
            }
            Primitive::SepConv3x3 | Primitive::SepConv5x5 => {
                let k = if primitive == Primitive::SepConv3x3 {
                    3
                } else {
                    5
                };
                b.scope("op", |b| {
                    let first = DilConv::new(b, 1, c, c, k, stride, k / 2, 1, affine)?;
                    let second = DilConv::new(b, 5, c, c, k, 1, k / 2, 1, affine)?;
                    Ok(EdgeOp::SepConv(Box::new([first, second])))
                })?
            }
            Primitive::DilConv3x3 | Primitive::DilConv5x5 => {
                let k = if primitive == Primitive::DilConv3x3 {
                    3
                } else {
                    5
                };
                b.scope("op", |b| {
                    Ok(EdgeOp::DilConv(DilConv::new(
                        b,
                        1,
                        c,
                        c,
                        k,
                        stride,
                        k - 1,
                        2,
                        affine,
                    )?))
                })?
            }
        })
    }

    /// The op's output, or None for the `none` op (a known zero, see [`Tape::mixed_op`]).
    pub fn forward<B: Backend>(&self, cx: &mut Ctx<B>, x: Var) -> Result<Option<Var>> {
        let y = match self {
            EdgeOp::Zero => return Ok(None),
            EdgeOp::Pool { max, spec, bn } => {
                let h = if *max {
                    cx.tape.max_pool2d(x, *spec)?
                } else {
                    cx.tape.avg_pool2d(x, *spec)?
                };
                match bn {
                    Some(bn) => bn.forward(cx, h),
                    None => Ok(h),
                }
            }
            EdgeOp::Identity => Ok(x),
            EdgeOp::FactorizedReduce(fr) => fr.forward(cx, x),
            EdgeOp::SepConv(halves) => {
                let h = halves[0].forward(cx, x)?;
                halves[1].forward(cx, h)
            }
            EdgeOp::DilConv(d) => d.forward(cx, x),
        };
        y.map(Some)
    }
}

/// The dimensions of a network's input images `x`, checked to be NCHW with `in_channels`
/// channels (`what` names the input in the message): every network's first check.
pub fn input_dims<B: Backend>(
    tape: &Tape<B>,
    x: Var,
    in_channels: usize,
    what: &'static str,
) -> Result<Nchw> {
    let d = tape.shape(x).nchw(what)?;
    if d.c != in_channels {
        return Err(Error::shape(
            what,
            format!(
                "images {} have {} channels, the network expects {in_channels}",
                d.shape(),
                d.c
            ),
        ));
    }
    Ok(d)
}
