//! The tape's layout ops, which move values without arithmetic: channel concatenation (its
//! backward splits the gradient), the one-pixel shift-crop and reshape (a new shape over the
//! same buffer), each with its backward.

use super::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::shape::{Nchw, Shape};
use crate::tensor::Tensor;

impl<B: Backend> Tape<B> {
    pub fn concat_channels(&mut self, xs: &[Var]) -> Result<Var> {
        let dims: Vec<Nchw> = xs
            .iter()
            .map(|&x| self.nchw(x, "concat_channels"))
            .collect::<Result<_>>()?;
        let parts: Vec<(&B::Storage, Nchw)> = xs
            .iter()
            .zip(&dims)
            .map(|(&x, &d)| Ok((&*self.value(x)?.buf, d)))
            .collect::<Result<_>>()?;
        let y = self.backend.concat_channels(&parts)?;
        let first = dims[0];
        let yd = Nchw {
            c: dims.iter().map(|d| d.c).sum(),
            ..first
        };
        let channels: Vec<usize> = dims.iter().map(|d| d.c).collect();
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            xs,
            Box::new(move |be, dy, _, _| {
                Ok(be
                    .split_channels(dy, yd, &channels)?
                    .into_iter()
                    .map(Some)
                    .collect())
            }),
        ))
    }

    /// `x[:, :, 1:, 1:]`.
    pub fn shift_crop(&mut self, x: Var) -> Result<Var> {
        let xd = self.nchw(x, "shift_crop")?;
        let y = self.backend.shift_crop_fwd(&self.value(x)?.buf, xd)?;
        let yd = Nchw {
            h: xd.h - 1,
            w: xd.w - 1,
            ..xd
        };
        Ok(self.push(
            Tensor::new(y, yd.shape()),
            &[x],
            Box::new(move |be, dy, _, _| Ok(vec![Some(be.shift_crop_bwd(dy, xd)?)])),
        ))
    }

    /// The same elements under another shape of as many elements (a 1x1 conv weight
    /// `[O, I, 1, 1]` read as a linear layer's `[O, I]`); no copy forward, a copy of `dy`
    /// backward.
    pub fn reshape(&mut self, x: Var, dims: &[usize]) -> Result<Var> {
        let shape = Shape::new(dims);
        if shape.numel() != self.shape(x).numel() {
            return Err(Error::shape(
                "reshape",
                format!("{} into {shape}", self.shape(x)),
            ));
        }
        let y = Tensor {
            buf: self.value(x)?.buf.clone(),
            shape,
        };
        Ok(self.push(
            y,
            &[x],
            Box::new(|be, dy, _, _| Ok(vec![Some(be.copy(dy)?)])),
        ))
    }
}
