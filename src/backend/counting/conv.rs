//! What the counting backend counts for convolutions (`ConvOps`).

use super::{conv_flops, u, CountBuf, Counting, Io};
use crate::backend::{checks, ConvOps};
use crate::error::Result;
use crate::shape::{Conv2dSpec, Nchw};

impl ConvOps for Counting {
    fn conv2d_fwd(
        &self,
        x: &CountBuf,
        xd: Nchw,
        w: &CountBuf,
        spec: &Conv2dSpec,
    ) -> Result<CountBuf> {
        let yd = checks::conv2d_fwd(self, x, xd, w, spec)?;
        self.unary("conv2d_fwd", conv_flops(xd, spec)?, &[x, w], yd.numel())
    }
    fn conv2d_bwd_data(
        &self,
        x: &CountBuf,
        dy: &CountBuf,
        w: &CountBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<CountBuf> {
        checks::conv2d_bwd_data(self, x, dy, w, xd, spec)?;
        // The fused ReLU's mask reads the forward input; an unfused conv never touches it.
        let reads: &[&CountBuf] = if spec.relu_input {
            &[x, dy, w]
        } else {
            &[dy, w]
        };
        self.unary("conv2d_bwd_data", conv_flops(xd, spec)?, reads, xd.numel())
    }
    /// Reads the accumulator and writes it back, besides what the fresh op reads: the honest
    /// bytes of an in-place accumulation (no fresh buffer, no `axpy`).
    fn conv2d_bwd_data_into(
        &self,
        x: &CountBuf,
        dy: &CountBuf,
        w: &CountBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
        dx: &mut CountBuf,
    ) -> Result<()> {
        checks::conv2d_bwd_data_into(self, x, dy, w, xd, spec, dx)?;
        let mut reads = vec![dy, w, &*dx];
        if spec.relu_input {
            reads.push(x);
        }
        // The fresh op's FLOPs plus one add per input element.
        let f = conv_flops(xd, spec)? + u(xd.numel());
        self.rec(
            "conv2d_bwd_data_into",
            f,
            Io {
                reads,
                writes: vec![&*dx],
            },
        )
    }
    fn conv2d_bwd_weight(
        &self,
        x: &CountBuf,
        dy: &CountBuf,
        xd: Nchw,
        spec: &Conv2dSpec,
    ) -> Result<CountBuf> {
        checks::conv2d_bwd_weight(self, x, dy, xd, spec)?;
        self.unary(
            "conv2d_bwd_weight",
            conv_flops(xd, spec)?,
            &[x, dy],
            spec.weight_shape().numel(),
        )
    }
}
