//! What the counting backend counts for optimizer updates (SGD, Adam, one tensor or many)
//! (`OptimOps`).

use super::{flops, u, CountBuf, Counting, Io};
use crate::backend::{checks, AdamStep, OptimOps, ScalarRef, SgdStep};
use crate::error::Result;

impl OptimOps for Counting {
    fn sgd_step(
        &self,
        param: &mut CountBuf,
        grad: &CountBuf,
        momentum_buf: &mut CountBuf,
        _hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, CountBuf>>,
    ) -> Result<()> {
        checks::sgd_step(self, param, grad, momentum_buf, grad_scale)?;
        let mut reads = vec![&*param, grad, &*momentum_buf];
        if let Some(s) = &grad_scale {
            reads.push(s.buf);
        }
        self.rec(
            "sgd_step",
            flops::SGD * u(param.len),
            Io {
                reads,
                writes: vec![&*param, &*momentum_buf],
            },
        )
    }
    fn adam_step(
        &self,
        param: &mut CountBuf,
        grad: &CountBuf,
        m: &mut CountBuf,
        v: &mut CountBuf,
        _hp: &AdamStep,
    ) -> Result<()> {
        checks::adam_step(self, param, grad, m, v)?;
        self.rec(
            "adam_step",
            flops::ADAM * u(param.len),
            Io {
                reads: vec![&*param, grad, &*m, &*v],
                writes: vec![&*param, &*m, &*v],
            },
        )
    }
    /// One op for every tensor: each operand counted once, the scale read once (the
    /// multi-tensor kernel reads it as one scalar, not once per tensor).
    fn sgd_step_many(
        &self,
        params: &mut [&mut CountBuf],
        grads: &[&CountBuf],
        momentum_bufs: &mut [&mut CountBuf],
        _hp: &SgdStep,
        grad_scale: Option<ScalarRef<'_, CountBuf>>,
    ) -> Result<()> {
        checks::sgd_step_many(self, params, grads, momentum_bufs, grad_scale)?;
        let mut reads: Vec<&CountBuf> = Vec::with_capacity(3 * params.len() + 1);
        let mut writes: Vec<&CountBuf> = Vec::with_capacity(2 * params.len());
        let mut n = 0;
        for ((p, g), m) in params.iter().zip(grads).zip(momentum_bufs.iter()) {
            reads.extend([&**p, *g, &**m]);
            writes.extend([&**p, &**m]);
            n += p.len;
        }
        if let Some(s) = &grad_scale {
            reads.push(s.buf);
        }
        self.rec("sgd_step_many", flops::SGD * u(n), Io { reads, writes })
    }
    /// One op for every tensor (see `sgd_step_many`).
    fn adam_step_many(
        &self,
        params: &mut [&mut CountBuf],
        grads: &[&CountBuf],
        ms: &mut [&mut CountBuf],
        vs: &mut [&mut CountBuf],
        _hp: &AdamStep,
    ) -> Result<()> {
        checks::adam_step_many(self, params, grads, ms, vs)?;
        let mut reads: Vec<&CountBuf> = Vec::with_capacity(4 * params.len());
        let mut writes: Vec<&CountBuf> = Vec::with_capacity(3 * params.len());
        let mut n = 0;
        for (((p, g), m), v) in params.iter().zip(grads).zip(ms.iter()).zip(vs.iter()) {
            reads.extend([&**p, *g, &**m, &**v]);
            writes.extend([&**p, &**m, &**v]);
            n += p.len;
        }
        self.rec("adam_step_many", flops::ADAM * u(n), Io { reads, writes })
    }
}
