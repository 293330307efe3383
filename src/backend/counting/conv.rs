//! What the counting backend counts for convolutions (`ConvOps`).

use super::{conv_flops, len_check, u, CountBuf, Counting, Io};
use crate::backend::ConvOps;
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
        len_check("conv2d_fwd", "input", x, xd.numel())?;
        let yd = spec.output(xd)?;
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
        len_check("conv2d_bwd_data", "dy", dy, spec.output(xd)?.numel())?;
        // The fused ReLU's mask reads the forward input; an unfused conv never touches it.
        let reads: &[&CountBuf] = if spec.relu_input {
            len_check("conv2d_bwd_data", "input", x, xd.numel())?;
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
        len_check("conv2d_bwd_data_into", "dy", dy, spec.output(xd)?.numel())?;
        len_check("conv2d_bwd_data_into", "accumulator", dx, xd.numel())?;
        let mut reads = vec![dy, w, &*dx];
        if spec.relu_input {
            len_check("conv2d_bwd_data_into", "input", x, xd.numel())?;
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
        len_check("conv2d_bwd_weight", "input", x, xd.numel())?;
        self.unary(
            "conv2d_bwd_weight",
            conv_flops(xd, spec)?,
            &[x, dy],
            spec.weight_shape().numel(),
        )
    }
}
