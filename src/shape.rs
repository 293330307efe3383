//! Shapes and the geometry of the windowed ops (convolution and pooling): output sizes and
//! the validation that turns a bad configuration into an error naming the op and both shapes.

use crate::error::{Error, Result};
use std::fmt;

/// A tensor shape, outermost dimension first (NCHW for images, [N, F] for features).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// The four dimensions of an NCHW shape, or an error naming `op`.
    pub fn nchw(&self, op: &'static str) -> Result<Nchw> {
        match self.0[..] {
            [n, c, h, w] => Ok(Nchw { n, c, h, w }),
            _ => Err(Error::shape(
                op,
                format!("expected an NCHW tensor, got {self}"),
            )),
        }
    }
    /// The two dimensions of an [N, F] shape, or an error naming `op`.
    pub fn matrix(&self, op: &'static str) -> Result<(usize, usize)> {
        match self.0[..] {
            [n, f] => Ok((n, f)),
            _ => Err(Error::shape(
                op,
                format!("expected a [rows, cols] tensor, got {self}"),
            )),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

/// The dimensions of an NCHW activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nchw {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw {
    pub fn numel(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn plane(&self) -> usize {
        self.h * self.w
    }
    pub fn shape(&self) -> Shape {
        Shape(vec![self.n, self.c, self.h, self.w])
    }
}

/// Output size of a sliding window along one axis (PyTorch's formula).
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = input + 2 * padding;
    if stride == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// A 2-D convolution without bias: weight [out_channels, in_channels / groups, k, k].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    /// The op reads max(x, 0): a ReLU fused into the conv, never materialised. Forward is
    /// `conv(relu(x), w)`; the data gradient is masked by `x > 0`, the weight gradient reads
    /// `relu(x)` (so the DARTS ReLU-conv pairs store no ReLU output).
    pub relu_input: bool,
}

impl Conv2dSpec {
    /// A `kernel x kernel` convolution from `in_channels` to `out_channels` with PyTorch's
    /// `nn.Conv2d` defaults (stride 1, padding 0, dilation 1, groups 1, no fused ReLU); the
    /// methods below change one field each:
    /// `Conv2dSpec::new(16, 16, 3).stride(2).padding(1).groups(16).relu_input()`.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2dSpec {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            relu_input: false,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        Conv2dSpec { stride, ..self }
    }
    pub fn padding(self, padding: usize) -> Self {
        Conv2dSpec { padding, ..self }
    }
    pub fn dilation(self, dilation: usize) -> Self {
        Conv2dSpec { dilation, ..self }
    }
    pub fn groups(self, groups: usize) -> Self {
        Conv2dSpec { groups, ..self }
    }
    /// Sets the `relu_input` field: the conv reads `max(x, 0)`.
    pub fn relu_input(self) -> Self {
        Conv2dSpec {
            relu_input: true,
            ..self
        }
    }

    pub fn weight_shape(&self) -> Shape {
        Shape(vec![
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel,
            self.kernel,
        ])
    }
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.groups == self.out_channels
    }
    /// Checks the spec against an input and returns the output dimensions.
    pub fn output(&self, x: Nchw) -> Result<Nchw> {
        let op = "conv2d";
        if self.groups == 0
            || !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return Err(Error::shape(
                op,
                format!(
                    "groups {} must divide in_channels {} and out_channels {}",
                    self.groups, self.in_channels, self.out_channels
                ),
            ));
        }
        if self.kernel == 0 || self.stride == 0 || self.dilation == 0 {
            return Err(Error::shape(
                op,
                format!("kernel, stride and dilation must be positive: {self:?}"),
            ));
        }
        if x.c != self.in_channels {
            return Err(Error::shape(
                op,
                format!(
                    "input {} has {} channels, weight {} expects {}",
                    x.shape(),
                    x.c,
                    self.weight_shape(),
                    self.in_channels
                ),
            ));
        }
        if x.n == 0 {
            return Err(Error::shape(
                op,
                format!("empty batch in input {}", x.shape()),
            ));
        }
        let h = window_out(x.h, self.kernel, self.stride, self.padding, self.dilation);
        let w = window_out(x.w, self.kernel, self.stride, self.padding, self.dilation);
        match (h, w) {
            (Some(h), Some(w)) if h > 0 && w > 0 => Ok(Nchw {
                n: x.n,
                c: self.out_channels,
                h,
                w,
            }),
            _ => Err(Error::shape(
                op,
                format!(
                    "input {} is smaller than the dilated kernel of {self:?}",
                    x.shape()
                ),
            )),
        }
    }
}

/// Which pooling reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    /// Average over the window's in-bounds elements (PyTorch `count_include_pad=False`).
    Avg,
}

/// A 2-D pooling window (DARTS uses 3x3, padding 1, stride 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSpec {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2dSpec {
    pub fn output(&self, x: Nchw, op: &'static str) -> Result<Nchw> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            return Err(Error::shape(op, format!("invalid window {self:?}")));
        }
        if x.n == 0 {
            return Err(Error::shape(
                op,
                format!("empty batch in input {}", x.shape()),
            ));
        }
        let h = window_out(x.h, self.kernel, self.stride, self.padding, 1);
        let w = window_out(x.w, self.kernel, self.stride, self.padding, 1);
        match (h, w) {
            (Some(h), Some(w)) if h > 0 && w > 0 => Ok(Nchw {
                n: x.n,
                c: x.c,
                h,
                w,
            }),
            _ => Err(Error::shape(
                op,
                format!("input {} is smaller than the window {self:?}", x.shape()),
            )),
        }
    }
}
