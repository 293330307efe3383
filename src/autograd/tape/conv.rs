//! The tape's conv2d (no bias, optionally over a fused input ReLU) and its backward: the data
//! gradient added in place into a pending one where there is one, the weight gradient only
//! when asked for.

use super::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::shape::Conv2dSpec;
use crate::tensor::Tensor;

impl<B: Backend> Tape<B> {
    /// conv2d without bias; `w` must have the shape `spec.weight_shape()`. With
    /// `spec.relu_input` it is `conv2d(relu(x), w)` with no ReLU output stored: backward
    /// recomputes the mask from `x`, which the weight gradient keeps anyway.
    pub fn conv2d(&mut self, x: Var, w: Var, spec: Conv2dSpec) -> Result<Var> {
        let xd = self.nchw(x, "conv2d")?;
        if *self.shape(w) != spec.weight_shape() {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "weight {} does not match {} for input {}",
                    self.shape(w),
                    spec.weight_shape(),
                    xd.shape()
                ),
            ));
        }
        let yd = spec.output(xd)?;
        let y = self
            .backend
            .conv2d_fwd(&self.value(x)?.buf, xd, &self.value(w)?.buf, &spec)?;
        let (xs, ws) = (self.save(x)?, self.save(w)?);
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x, w],
            Box::new(move |be, dy, need, acc| {
                let (xb, wb) = (xs.read(be)?, ws.read(be)?);
                let dx = match (need[0], acc[0].as_mut()) {
                    (false, _) => None,
                    (true, Some(a)) => {
                        be.conv2d_bwd_data_into(&xb, dy, &wb, xd, &spec, a)?;
                        None
                    }
                    (true, None) => Some(be.conv2d_bwd_data(&xb, dy, &wb, xd, &spec)?),
                };
                let dw = if need[1] {
                    Some(be.conv2d_bwd_weight(&xb, dy, xd, &spec)?)
                } else {
                    None
                };
                Ok(vec![dx, dw])
            }),
        ))
    }
}
