//! The CPU's optimizer updates (SGD, Adam, one tensor or many) (`OptimOps`): the reference the CUDA kernels of `kernels/optim.cu` are
//! checked against.

use super::{group_tasks, same_len, AdamConsts, Cpu, SgdConsts, ELEMS_PER_TASK};
use crate::backend::{same_count, AdamStep, Element, OptimOps, ScalarRef, SgdStep};
use crate::error::Result;
use rayon::prelude::*;

impl<T: Element> OptimOps for Cpu<T> {
    fn sgd_step(
        &self,
        param: &mut Vec<T>,
        grad: &Vec<T>,
        buf: &mut Vec<T>,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<()> {
        same_len("sgd_step", param, grad)?;
        same_len("sgd_step", param, buf)?;
        let k = SgdConsts::new("sgd_step", hp, grad_scale)?;
        param
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(grad.par_chunks(ELEMS_PER_TASK))
            .zip(buf.par_chunks_mut(ELEMS_PER_TASK))
            .for_each(|((p, g), b)| k.update(p, g, b));
        Ok(())
    }
    fn adam_step(
        &self,
        param: &mut Vec<T>,
        grad: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        hp: &AdamStep,
    ) -> Result<()> {
        same_len("adam_step", param, grad)?;
        same_len("adam_step", param, m)?;
        same_len("adam_step", param, v)?;
        AdamConsts::new(hp).update(param, grad, m, v);
        Ok(())
    }
    /// Every tensor's update in one rayon pass: tensors cut into pieces and tiny ones grouped
    /// into tasks (`group_tasks`), each element updated by the arithmetic of `sgd_step`.
    fn sgd_step_many(
        &self,
        params: &mut [&mut Vec<T>],
        grads: &[&Vec<T>],
        bufs: &mut [&mut Vec<T>],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<()> {
        same_count("sgd_step_many", params.len(), &[grads.len(), bufs.len()])?;
        for ((p, g), b) in params.iter().zip(grads).zip(bufs.iter()) {
            same_len("sgd_step_many", p, g)?;
            same_len("sgd_step_many", p, b)?;
        }
        let k = SgdConsts::new("sgd_step_many", hp, grad_scale)?;
        let pieces = params
            .iter_mut()
            .zip(grads)
            .zip(bufs.iter_mut())
            .flat_map(|((p, g), b)| {
                p.chunks_mut(ELEMS_PER_TASK)
                    .zip(g.chunks(ELEMS_PER_TASK))
                    .zip(b.chunks_mut(ELEMS_PER_TASK))
                    .map(|((p, g), b)| (p.len(), (p, g, b)))
            });
        group_tasks(pieces).into_par_iter().for_each(|task| {
            for (p, g, b) in task {
                k.update(p, g, b);
            }
        });
        Ok(())
    }
    fn adam_step_many(
        &self,
        params: &mut [&mut Vec<T>],
        grads: &[&Vec<T>],
        ms: &mut [&mut Vec<T>],
        vs: &mut [&mut Vec<T>],
        hp: &AdamStep,
    ) -> Result<()> {
        same_count(
            "adam_step_many",
            params.len(),
            &[grads.len(), ms.len(), vs.len()],
        )?;
        for (((p, g), m), v) in params.iter().zip(grads).zip(ms.iter()).zip(vs.iter()) {
            same_len("adam_step_many", p, g)?;
            same_len("adam_step_many", p, m)?;
            same_len("adam_step_many", p, v)?;
        }
        let k = AdamConsts::new(hp);
        let pieces = params
            .iter_mut()
            .zip(grads)
            .zip(ms.iter_mut())
            .zip(vs.iter_mut())
            .flat_map(|(((p, g), m), v)| {
                p.chunks_mut(ELEMS_PER_TASK)
                    .zip(g.chunks(ELEMS_PER_TASK))
                    .zip(m.chunks_mut(ELEMS_PER_TASK))
                    .zip(v.chunks_mut(ELEMS_PER_TASK))
                    .map(|(((p, g), m), v)| (p.len(), (p, g, m, v)))
            });
        group_tasks(pieces).into_par_iter().for_each(|task| {
            for (p, g, m, v) in task {
                k.update(p, g, m, v);
            }
        });
        Ok(())
    }
}
