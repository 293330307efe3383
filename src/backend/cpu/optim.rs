//! The CPU's optimizer updates (SGD, Adam, one tensor or many) (`OptimOps`): the reference
//! the CUDA kernels of `kernels/optim.cu` are checked against.

use super::{group_tasks, team, AdamConsts, Cpu, SgdConsts, ELEMS_PER_TASK};
use crate::backend::{checks, AdamStep, Element, OptimOps, ScalarRef, SgdStep};
use crate::error::Result;

impl<T: Element> OptimOps for Cpu<T> {
    fn sgd_step(
        &self,
        param: &mut Vec<T>,
        grad: &Vec<T>,
        buf: &mut Vec<T>,
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<()> {
        checks::sgd_step(self, param, grad, buf, grad_scale)?;
        let k = SgdConsts::new(hp, grad_scale);
        team::chunks_mut2(param, ELEMS_PER_TASK, buf, ELEMS_PER_TASK, |i, p, b| {
            k.update(p, &grad[i * ELEMS_PER_TASK..][..p.len()], b)
        });
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
        checks::adam_step(self, param, grad, m, v)?;
        AdamConsts::new(hp).update(param, grad, m, v);
        Ok(())
    }
    /// Every tensor's update in one parallel pass: tensors cut into pieces and tiny ones grouped
    /// into tasks (`group_tasks`), each element updated by the arithmetic of `sgd_step`.
    fn sgd_step_many(
        &self,
        params: &mut [&mut Vec<T>],
        grads: &[&Vec<T>],
        bufs: &mut [&mut Vec<T>],
        hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, Vec<T>>>,
    ) -> Result<()> {
        checks::sgd_step_many(self, params, grads, bufs, grad_scale)?;
        let k = SgdConsts::new(hp, grad_scale);
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
        team::each(group_tasks(pieces), |task| {
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
        checks::adam_step_many(self, params, grads, ms, vs)?;
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
        team::each(group_tasks(pieces), |task| {
            for (p, g, m, v) in task {
                k.update(p, g, m, v);
            }
        });
        Ok(())
    }
}
