//! What the counting backend counts for the linear layer, softmax cross-entropy and
//! correct-prediction count (`DenseOps`).

use super::{flops, u, CountBuf, CountLabels, Counting, Io};
use crate::backend::{checks, DenseOps};
use crate::error::Result;

impl DenseOps for Counting {
    fn linear_fwd(
        &self,
        x: &CountBuf,
        w: &CountBuf,
        b: Option<&CountBuf>,
        n: usize,
        in_f: usize,
        out_f: usize,
    ) -> Result<CountBuf> {
        checks::linear_fwd(self, x, w, b, n, in_f, out_f)?;
        let mut reads = vec![x, w];
        let mut f = 2 * u(n * in_f * out_f);
        if let Some(b) = b {
            reads.push(b);
            f += u(n * out_f);
        }
        self.unary("linear_fwd", f, &reads, n * out_f)
    }
    fn linear_bwd(
        &self,
        x: &CountBuf,
        w: &CountBuf,
        dy: &CountBuf,
        n: usize,
        in_f: usize,
        out_f: usize,
        with_bias: bool,
    ) -> Result<(CountBuf, CountBuf, Option<CountBuf>)> {
        checks::linear_bwd(self, x, w, dy, n, in_f, out_f)?;
        let dx = self.alloc(n * in_f)?;
        let dw = self.alloc(out_f * in_f)?;
        let db = if with_bias {
            Some(self.alloc(out_f)?)
        } else {
            None
        };
        let mut writes = vec![&dx, &dw];
        let mut f = 4 * u(n * in_f * out_f);
        if let Some(db) = db.as_ref() {
            writes.push(db);
            f += u(n * out_f);
        }
        self.rec(
            "linear_bwd",
            f,
            Io {
                reads: vec![x, w, dy],
                writes,
            },
        )?;
        Ok((dx, dw, db))
    }
    fn softmax_cross_entropy_fwd(
        &self,
        logits: &CountBuf,
        n: usize,
        k: usize,
        labels: &CountLabels,
    ) -> Result<(CountBuf, CountBuf)> {
        checks::softmax_cross_entropy_fwd(self, logits, n, k, labels)?;
        let loss = self.alloc(1)?;
        let probs = self.alloc(n * k)?;
        self.rec(
            "softmax_cross_entropy_fwd",
            flops::XENT_FWD * u(n * k) + 2 * u(n),
            Io {
                reads: vec![logits],
                writes: vec![&loss, &probs],
            },
        )?;
        Ok((loss, probs))
    }
    fn softmax_cross_entropy_bwd(
        &self,
        probs: &CountBuf,
        dloss: &CountBuf,
        n: usize,
        k: usize,
        labels: &CountLabels,
    ) -> Result<CountBuf> {
        checks::softmax_cross_entropy_bwd(self, probs, dloss, n, k, labels)?;
        self.unary(
            "softmax_cross_entropy_bwd",
            flops::XENT_BWD * u(n * k),
            &[probs, dloss],
            n * k,
        )
    }
    fn count_correct(
        &self,
        logits: &CountBuf,
        n: usize,
        k: usize,
        labels: &CountLabels,
    ) -> Result<CountBuf> {
        checks::count_correct(self, logits, n, k, labels)?;
        self.unary("count_correct", u(n * k), &[logits], 1)
    }
}
