//! `Counting`: a [`Backend`](crate::backend::Backend) that computes nothing and counts everything. Every op records
//! its FLOPs and the bytes it reads and writes (each operand once, 4-byte f32 elements, 2-byte
//! bf16 ones for `Half` buffers), per
//! op name; buffers carry only a length and an id, so a whole DARTS step at full size runs in
//! milliseconds on the host. Driving the real search code (`nas::darts`) with it gives the
//! step's cost model (`crate::bench_model`) from the network itself, not from a formula.
//!
//! What is counted, per measurement window (`reset` .. `snapshot`):
//! - `flops`: arithmetic per op, with the conventions of [`flops`] (2 per multiply-add).
//! - op-level bytes: every operand of every op call, read once and written once: what an
//!   op-by-op schedule moves at the very least (no op re-reads its input).
//! - tensor-level bytes: every distinct buffer touched in the window read at most once and
//!   written at most once: the floor for a schedule that fuses freely but still keeps every
//!   tensor the op graph creates.
//! - op calls (a lower bound on kernel launches), host round trips (`download`,
//!   `sum_squares`, `dot`), host-to-device bytes, allocations and the peak of live bytes
//!   (every buffer alive at once, weights and optimizer state included).
//!
//! Graphs are modelled as CUDA makes them: `capture` runs the step's body once into the
//! graph, not the window, and checks the rules a CUDA graph imposes (no host round trip, no
//! upload, every buffer allocated inside freed inside); `replay` adds the captured ops,
//! tensor traffic and peak (but no allocations: a replay allocates nothing), so a replayed
//! step counts what the same step run directly counts. A step
//! that breaks a rule fails here, on the CPU, with the op named.
//!
//! Values downloaded are zeros; `sum_squares` and `dot` answer the element count (as if
//! every element were 1), so a gradient norm is positive and finite: the clip scaling and
//! the second-order finite-difference branch are taken, as PyTorch always takes them.

mod conv;
mod dense;
mod elementwise;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod pool;

use crate::backend::{checks, DeviceOps, PeakMemory};
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Nchw};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes per element (the model counts f32 storage).
pub const ELEM_BYTES: u64 = 4;
/// Bytes per element of a bf16 buffer (`Backend::Half`: saved activations in bf16 mode).
pub const HALF_BYTES: u64 = 2;

/// FLOP conventions, per element of the tensor named.
pub mod flops {
    /// Batch-norm training forward per input element: sum and sum of squares (3), then
    /// `(x - mean) * invstd` (2).
    pub const BN_FWD: u64 = 5;
    /// The affine `* gamma + beta` of a batch norm, per element.
    pub const BN_AFFINE: u64 = 2;
    /// Batch-norm backward per element: `sum dy`, `sum dy * xhat` with `xhat` recomputed
    /// (5), and `dx = invstd * (dy - mean_dy - xhat * mean_dy_xhat)` (4).
    pub const BN_BWD: u64 = 9;
    /// Batch-norm eval forward per element: `(x - mean) * invstd`.
    pub const BN_EVAL: u64 = 2;
    /// A sigmoid per element: negate, exp, add one, divide (SiLU's forward is the same count:
    /// its divide replaces the sigmoid's).
    pub const SIGMOID: u64 = 4;
    /// Softmax cross-entropy forward per logit: max, subtract, exp, sum.
    pub const XENT_FWD: u64 = 4;
    /// Its backward per logit: `(p - onehot) * dloss / n`.
    pub const XENT_BWD: u64 = 2;
    /// SGD per weight: `g + wd w`, `m = mu m + g`, `w -= lr m`.
    pub const SGD: u64 = 6;
    /// Adam per weight: decay (2), first moment (3), second moment (4), update with bias
    /// corrections, sqrt and divide (5).
    pub const ADAM: u64 = 14;
}

/// Counts of one op name (or of a whole window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpCount {
    pub calls: u64,
    pub flops: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl OpCount {
    pub fn bytes(&self) -> u64 {
        self.bytes_read + self.bytes_written
    }
}

/// Everything one measurement window recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CountSnapshot {
    /// Per op name (the trait method), sorted by name.
    pub ops: BTreeMap<&'static str, OpCount>,
    /// Per scope named by `DeviceOps::annotate` (a module: `stem`, `cells.3`), in order of
    /// first use; ops before any annotation are under `""`. Replayed graphs are not split.
    pub scopes: Vec<(String, OpCount)>,
    /// Sum over `ops`.
    pub total: OpCount,
    /// Distinct buffers read / written in the window, bytes (each counted once).
    pub tensor_bytes_read: u64,
    pub tensor_bytes_written: u64,
    /// Ops that return a value to the host (a synchronisation each on a GPU).
    pub host_syncs: u64,
    pub h2d_bytes: u64,
    pub d2h_bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    /// Most bytes alive at once during the window (buffers alive before it included).
    pub peak_live_bytes: u64,
    /// Bytes alive when the window was snapshot.
    pub live_bytes: u64,
}

impl CountSnapshot {
    pub fn tensor_bytes(&self) -> u64 {
        self.tensor_bytes_read + self.tensor_bytes_written
    }
}

#[derive(Clone, Copy, Default)]
struct Touched {
    bytes: u64,
    read: bool,
    written: bool,
}

#[derive(Default)]
struct State {
    next_id: u64,
    ops: BTreeMap<&'static str, OpCount>,
    touched: HashMap<u64, Touched>,
    host_syncs: u64,
    h2d_bytes: u64,
    d2h_bytes: u64,
    allocations: u64,
    allocated_bytes: u64,
    live_bytes: u64,
    peak_live_bytes: u64,
    /// Inside `capture`: host round trips and uploads are errors.
    capturing: bool,
    /// The scope `annotate` named last, and the counts per scope in order of first use.
    scope: String,
    scopes: Vec<(String, OpCount)>,
}

/// Labels on the counting device: only their number.
pub struct CountLabels {
    len: usize,
}

/// A captured step: the counts its body recorded, added again on each replay.
pub struct CountGraph {
    ops: BTreeMap<&'static str, OpCount>,
    /// Buffers the body touched, and whether each was allocated inside it.
    touched: Vec<(u64, Touched, bool)>,
    /// Most bytes the body had alive at once above what was alive before it.
    peak_above_base: u64,
}

/// A buffer: a length, an element size (f32, or bf16 for `Half`) and an identity; dropping
/// it releases its bytes from the live count.
pub struct CountBuf {
    id: u64,
    len: usize,
    elem_bytes: u64,
    state: Arc<Mutex<State>>,
}

impl CountBuf {
    fn bytes(&self) -> u64 {
        self.len as u64 * self.elem_bytes
    }
}

impl Drop for CountBuf {
    fn drop(&mut self) {
        // A poisoned lock only means another thread panicked mid-count; the count is moot.
        if let Ok(mut s) = self.state.lock() {
            s.live_bytes = s.live_bytes.saturating_sub(self.bytes());
        }
    }
}

/// The counting device. Clones share one set of counters.
#[derive(Clone, Default)]
pub struct Counting {
    state: Arc<Mutex<State>>,
}

/// The operands of one op call: buffers read, buffers written (fresh outputs included).
struct Io<'a> {
    reads: Vec<&'a CountBuf>,
    writes: Vec<&'a CountBuf>,
}

/// Counting only: `Half` and `Storage` are one type here, so the conversions check which one
/// they were given (on the other devices the types tell them apart).
fn elem_check(op: &'static str, b: &CountBuf, elem_bytes: u64) -> Result<()> {
    if b.elem_bytes != elem_bytes {
        return Err(Error::invalid(
            op,
            format!(
                "a buffer of {}-byte elements where {elem_bytes}-byte ones were expected",
                b.elem_bytes
            ),
        ));
    }
    Ok(())
}

fn u(v: usize) -> u64 {
    v as u64
}

/// Multiply-adds of a convolution (each of its three passes does the same number).
fn conv_macs(xd: Nchw, spec: &Conv2dSpec) -> Result<u64> {
    let yd = spec.output(xd)?;
    let per_out = u(spec.in_channels / spec.groups.max(1) * spec.kernel * spec.kernel);
    Ok(u(yd.numel()) * per_out)
}

/// FLOPs of one conv pass: 2 per multiply-add, plus one per input element for a fused ReLU
/// (its max in the forward and weight gradient, its mask in the data gradient: the work
/// `relu_fwd` / `relu_bwd` did, moved into the conv; its bytes are gone).
fn conv_flops(xd: Nchw, spec: &Conv2dSpec) -> Result<u64> {
    let relu = if spec.relu_input { u(xd.numel()) } else { 0 };
    Ok(2 * conv_macs(xd, spec)? + relu)
}

impl Counting {
    pub fn new() -> Self {
        Counting::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::invalid("counting backend", "its counter lock is poisoned"))
    }

    fn alloc(&self, len: usize) -> Result<CountBuf> {
        self.alloc_sized(len, ELEM_BYTES)
    }

    fn alloc_sized(&self, len: usize, elem_bytes: u64) -> Result<CountBuf> {
        let mut s = self.lock()?;
        s.next_id += 1;
        s.allocations += 1;
        s.allocated_bytes += u(len) * elem_bytes;
        s.live_bytes += u(len) * elem_bytes;
        s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
        Ok(CountBuf {
            id: s.next_id,
            len,
            elem_bytes,
            state: self.state.clone(),
        })
    }

    /// Records one op call.
    fn rec(&self, op: &'static str, flops: u64, io: Io<'_>) -> Result<()> {
        let mut s = self.lock()?;
        let mut c = OpCount {
            calls: 1,
            flops,
            ..OpCount::default()
        };
        for b in &io.reads {
            c.bytes_read += b.bytes();
            let t = s.touched.entry(b.id).or_default();
            t.bytes = b.bytes();
            t.read = true;
        }
        for b in &io.writes {
            c.bytes_written += b.bytes();
            let t = s.touched.entry(b.id).or_default();
            t.bytes = b.bytes();
            t.written = true;
        }
        let e = s.ops.entry(op).or_default();
        e.calls += c.calls;
        e.flops += c.flops;
        e.bytes_read += c.bytes_read;
        e.bytes_written += c.bytes_written;
        let scope = s.scope.clone();
        let at = match s.scopes.iter().position(|(n, _)| *n == scope) {
            Some(i) => i,
            None => {
                s.scopes.push((scope, OpCount::default()));
                s.scopes.len() - 1
            }
        };
        let e = &mut s.scopes[at].1;
        e.calls += c.calls;
        e.flops += c.flops;
        e.bytes_read += c.bytes_read;
        e.bytes_written += c.bytes_written;
        Ok(())
    }

    /// Sets the scope later ops are counted under (see `DeviceOps::annotate`).
    fn set_scope(&self, scope: &str) {
        if let Ok(mut s) = self.lock() {
            if s.scope != scope {
                s.scope = scope.to_string();
            }
        }
    }

    /// Starts a new measurement window: clears the counts; the peak restarts at the bytes
    /// alive now.
    pub fn reset(&self) -> Result<()> {
        let mut s = self.lock()?;
        let live = s.live_bytes;
        let next_id = s.next_id;
        let scope = std::mem::take(&mut s.scope);
        *s = State {
            next_id,
            scope,
            live_bytes: live,
            peak_live_bytes: live,
            ..State::default()
        };
        Ok(())
    }

    /// The counts since the last `reset`.
    pub fn snapshot(&self) -> Result<CountSnapshot> {
        let s = self.lock()?;
        let mut total = OpCount::default();
        for c in s.ops.values() {
            total.calls += c.calls;
            total.flops += c.flops;
            total.bytes_read += c.bytes_read;
            total.bytes_written += c.bytes_written;
        }
        let (mut tr, mut tw) = (0, 0);
        for t in s.touched.values() {
            let b = t.bytes;
            if t.read {
                tr += b;
            }
            if t.written {
                tw += b;
            }
        }
        Ok(CountSnapshot {
            ops: s.ops.clone(),
            scopes: s.scopes.clone(),
            total,
            tensor_bytes_read: tr,
            tensor_bytes_written: tw,
            host_syncs: s.host_syncs,
            h2d_bytes: s.h2d_bytes,
            d2h_bytes: s.d2h_bytes,
            allocations: s.allocations,
            allocated_bytes: s.allocated_bytes,
            peak_live_bytes: s.peak_live_bytes,
            live_bytes: s.live_bytes,
        })
    }

    /// Bytes alive now.
    pub fn live_bytes(&self) -> Result<u64> {
        Ok(self.lock()?.live_bytes)
    }

    fn host_sync(&self, d2h: u64) -> Result<()> {
        let mut s = self.lock()?;
        if s.capturing {
            return Err(Error::invalid(
                "graph capture",
                "the captured step reads a value back to the host",
            ));
        }
        s.host_syncs += 1;
        s.d2h_bytes += d2h;
        Ok(())
    }

    /// A host-to-device copy (an error inside a capture: a graph would freeze the host data).
    fn h2d(&self, op: &str, bytes: u64) -> Result<()> {
        let mut s = self.lock()?;
        if s.capturing {
            return Err(Error::invalid(
                "graph capture",
                format!("the captured step uploads from the host ({op})"),
            ));
        }
        s.h2d_bytes += bytes;
        Ok(())
    }

    /// A fresh output of `len` elements for an op reading `reads`.
    fn unary(
        &self,
        op: &'static str,
        flops: u64,
        reads: &[&CountBuf],
        len: usize,
    ) -> Result<CountBuf> {
        let y = self.alloc(len)?;
        self.rec(
            op,
            flops,
            Io {
                reads: reads.to_vec(),
                writes: vec![&y],
            },
        )?;
        Ok(y)
    }
}

/// The present MixedOp inputs (an absent one is neither read nor multiplied).
fn mixed_op_present<'a>(xs: &[Option<&'a CountBuf>]) -> Vec<&'a CountBuf> {
    xs.iter().flatten().copied().collect()
}

impl DeviceOps for Counting {
    type Elem = f32;
    type Storage = CountBuf;
    type Labels = CountLabels;
    type Graph = CountGraph;
    /// A buffer of 2-byte elements (counted as such: reads, writes, live bytes).
    type Half = CountBuf;
    fn device_name(&self) -> String {
        "counting (no arithmetic; FLOPs and bytes only)".into()
    }
    fn zeros(&self, len: usize) -> Result<CountBuf> {
        // A memset: one write.
        self.unary("zeros", 0, &[], len)
    }
    fn upload(&self, host: &[f32]) -> Result<CountBuf> {
        self.h2d("upload", u(host.len()) * ELEM_BYTES)?;
        self.alloc(host.len())
    }
    fn upload_into(&self, dst: &mut CountBuf, host: &[f32]) -> Result<()> {
        checks::upload_into(self, dst, host)?;
        self.h2d("upload_into", u(host.len()) * ELEM_BYTES)
    }
    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<CountLabels> {
        checks::upload_labels(labels, classes)?;
        self.h2d("upload_labels", u(labels.len()) * 4)?;
        Ok(CountLabels { len: labels.len() })
    }
    fn upload_labels_into(
        &self,
        dst: &mut CountLabels,
        labels: &[u32],
        classes: usize,
    ) -> Result<()> {
        checks::upload_labels_into(self, dst, labels, classes)?;
        self.h2d("upload_labels_into", u(labels.len()) * 4)
    }
    fn labels_len(&self, labels: &CountLabels) -> usize {
        labels.len
    }
    fn capture(&self, body: &mut dyn FnMut() -> Result<()>) -> Result<Option<CountGraph>> {
        // Capturing runs nothing: the body's counts go into the graph, not the window, and
        // the window's own counts are put back afterwards.
        let (outside, live_before, first_internal_id) = {
            let mut s = self.lock()?;
            if s.capturing {
                return Err(Error::invalid(
                    "graph capture",
                    "a capture is already running",
                ));
            }
            s.capturing = true;
            let window = State {
                next_id: s.next_id,
                live_bytes: s.live_bytes,
                peak_live_bytes: s.live_bytes,
                capturing: true,
                ..State::default()
            };
            let outside = std::mem::replace(&mut *s, window);
            (outside, s.live_bytes, s.next_id + 1)
        };
        let result = body();
        let mut s = self.lock()?;
        let next_id = s.next_id;
        let inside = std::mem::replace(&mut *s, outside);
        s.next_id = next_id;
        s.capturing = false;
        result?;
        if inside.live_bytes != live_before {
            return Err(Error::invalid(
                "graph capture",
                format!(
                    "the captured step leaves {} bytes allocated (every buffer it allocates \
                     must be freed inside it)",
                    inside.live_bytes as i128 - live_before as i128
                ),
            ));
        }
        Ok(Some(CountGraph {
            ops: inside.ops,
            touched: inside
                .touched
                .into_iter()
                .map(|(id, t)| (id, t, id >= first_internal_id))
                .collect(),
            peak_above_base: inside.peak_live_bytes.saturating_sub(live_before),
        }))
    }
    /// Adds the captured ops, the buffers they touch (the graph's own buffers as new ones,
    /// as a step run directly would allocate them afresh; buffers from before the capture
    /// under their ids, so a window counts them once) and the step's peak above the bytes
    /// alive now. No allocation is counted: a replay allocates nothing.
    fn replay(&self, graph: &CountGraph) -> Result<()> {
        let mut s = self.lock()?;
        s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes + graph.peak_above_base);
        for (op, c) in &graph.ops {
            let e = s.ops.entry(op).or_default();
            e.calls += c.calls;
            e.flops += c.flops;
            e.bytes_read += c.bytes_read;
            e.bytes_written += c.bytes_written;
        }
        for (id, t, internal) in &graph.touched {
            let id = if *internal {
                s.next_id += 1;
                s.next_id
            } else {
                *id
            };
            let e = s.touched.entry(id).or_default();
            e.bytes = t.bytes;
            e.read |= t.read;
            e.written |= t.written;
        }
        Ok(())
    }
    fn download(&self, buf: &CountBuf) -> Result<Vec<f32>> {
        self.host_sync(u(buf.len) * ELEM_BYTES)?;
        Ok(vec![0.0; buf.len])
    }
    fn len(&self, buf: &CountBuf) -> usize {
        buf.len
    }
    /// Counted buffers have no memory: their id stands for the address.
    fn storage_addr(&self, buf: &CountBuf) -> usize {
        buf.id as usize
    }
    /// Counted labels have no memory or id; graphs here bake nothing in, so the handle's
    /// address serves.
    fn labels_addr(&self, labels: &CountLabels) -> usize {
        labels as *const CountLabels as usize
    }
    fn copy(&self, buf: &CountBuf) -> Result<CountBuf> {
        self.unary("copy", 0, &[buf], buf.len)
    }
    fn copy_into(&self, dst: &mut CountBuf, src: &CountBuf) -> Result<()> {
        checks::copy_into(self, dst, src)?;
        self.rec(
            "copy_into",
            0,
            Io {
                reads: vec![src],
                writes: vec![&*dst],
            },
        )
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn reset_peak_memory(&self) -> Result<()> {
        let mut s = self.lock()?;
        s.peak_live_bytes = s.live_bytes;
        Ok(())
    }
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        Ok(Some(PeakMemory {
            bytes: self.lock()?.peak_live_bytes,
            kind: "live_buffers_high",
        }))
    }
    fn annotate(&self, scope: &str) {
        self.set_scope(scope);
    }
}
