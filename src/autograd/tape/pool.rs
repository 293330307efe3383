//! The tape's pooling ops, forward and backward: max and average pooling (both accumulate
//! into a pending gradient in place) and global average pooling.

use super::{Tape, Var};
use crate::backend::Backend;
use crate::error::Result;
use crate::shape::Pool2dSpec;
use crate::tensor::Tensor;

impl<B: Backend> Tape<B> {
    pub fn max_pool2d(&mut self, x: Var, spec: Pool2dSpec) -> Result<Var> {
        let xd = self.nchw(x, "max_pool2d")?;
        let yd = spec.output(xd, "max_pool2d")?;
        let y = self
            .backend
            .max_pool2d_fwd(&self.value(x)?.buf, xd, &spec)?;
        let xs = self.save_exact(x)?;
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x],
            Box::new(move |be, dy, _, acc| {
                let xb = xs.read(be)?;
                Ok(vec![match acc[0].as_mut() {
                    Some(a) => {
                        be.max_pool2d_bwd_into(&xb, dy, xd, &spec, a)?;
                        None
                    }
                    None => Some(be.max_pool2d_bwd(&xb, dy, xd, &spec)?),
                }])
            }),
        ))
    }

    pub fn avg_pool2d(&mut self, x: Var, spec: Pool2dSpec) -> Result<Var> {
        let xd = self.nchw(x, "avg_pool2d")?;
        let yd = spec.output(xd, "avg_pool2d")?;
        let y = self
            .backend
            .avg_pool2d_fwd(&self.value(x)?.buf, xd, &spec)?;
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x],
            Box::new(move |be, dy, _, acc| {
                Ok(vec![match acc[0].as_mut() {
                    Some(a) => {
                        be.avg_pool2d_bwd_into(dy, xd, &spec, a)?;
                        None
                    }
                    None => Some(be.avg_pool2d_bwd(dy, xd, &spec)?),
                }])
            }),
        ))
    }

    /// [N, C, H, W] -> [N, C].
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let xd = self.nchw(x, "global_avg_pool")?;
        let y = self.backend.global_avg_pool_fwd(&self.value(x)?.buf, xd)?;
        Ok(self.push(
            Tensor::new(y, [xd.n, xd.c]),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.global_avg_pool_bwd(dy, xd)?)])),
        ))
    }
}
