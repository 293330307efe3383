//! Checks of the DARTS MixedOp (`MixedOpOps`): one alpha per input, at least one present
//! input, every present input (and the output gradient and accumulators) of `len` elements.

use super::{check_mixed_op, expect_len, same_count};
use crate::backend::DeviceOps;
use crate::error::Result;

fn inputs<B: DeviceOps>(
    b: &B,
    op: &'static str,
    xs: &[Option<&B::Storage>],
    alpha: &B::Storage,
    len: usize,
) -> Result<()> {
    let lens = xs.iter().map(|x| x.map(|x| b.len(x)));
    check_mixed_op(op, lens, b.len(alpha), len)
}

pub fn mixed_op_fwd<B: DeviceOps>(
    b: &B,
    xs: &[Option<&B::Storage>],
    alpha: &B::Storage,
    len: usize,
) -> Result<()> {
    inputs(b, "mixed_op", xs, alpha, len)
}

pub fn mixed_op_bwd<B: DeviceOps>(
    b: &B,
    dy: &B::Storage,
    xs: &[Option<&B::Storage>],
    alpha: &B::Storage,
    len: usize,
) -> Result<()> {
    expect_len(b, "mixed_op_bwd", "output gradient", dy, len)?;
    inputs(b, "mixed_op_bwd", xs, alpha, len)
}

/// As `mixed_op_bwd`, and one accumulator entry per input, each given one of `len`
/// elements (whether or not its gradient is wanted).
pub fn mixed_op_bwd_into<B: DeviceOps>(
    b: &B,
    dy: &B::Storage,
    xs: &[Option<&B::Storage>],
    alpha: &B::Storage,
    len: usize,
    acc: &[Option<&mut B::Storage>],
) -> Result<()> {
    let op = "mixed_op_bwd_into";
    expect_len(b, op, "output gradient", dy, len)?;
    inputs(b, op, xs, alpha, len)?;
    same_count(op, xs.len(), &[acc.len()])?;
    for a in acc.iter().flatten() {
        expect_len(b, op, "accumulator", a, len)?;
    }
    Ok(())
}
