//! Graphs on the simulation: a capture records launches, copies, memsets and GEMMs instead of
//! running them (as CUDA does), allocations inside keep fixed addresses for every replay
//! (graph memory nodes), and CUDA's capture rules are errors: host copies, synchronisation,
//! nested captures, buffers allocated inside and still alive at the end, and freeing a buffer
//! allocated before the capture (a replay would free it again).

use super::exec::{execute, gemm};
use super::memory::{poison, unmap, State};
use super::{lock, sim_err, SimDriver, SimOptions};
use crate::backend::cuda::driver::{capture_rule, DevAddr, GraphExec, LaunchConfig, Sgemm};
use crate::backend::cuda::kernels::Kernel;
use crate::error::Result;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// Work a capture records, replayed in order.
pub(super) enum Op {
    /// The argument bytes of each parameter (8-byte aligned storage).
    Launch {
        kernel: Kernel,
        cfg: LaunchConfig,
        args: Vec<Vec<u64>>,
    },
    Memset {
        dst: DevAddr,
        bytes: usize,
    },
    Dtod {
        dst: DevAddr,
        src: DevAddr,
        bytes: usize,
    },
    Gemm(Sgemm),
    /// A graph allocation coming into use (refilled with NaN, as fresh memory).
    Alloc {
        addr: DevAddr,
        bytes: usize,
    },
    Free {
        bytes: usize,
    },
}

/// A capture in progress: what it recorded and the graph memory it owns.
#[derive(Default)]
pub(super) struct Capture {
    pub(super) ops: Vec<Op>,
    /// The graph's own allocations: address -> bytes, and which are still alive.
    pub(super) owned: Vec<(DevAddr, usize)>,
    pub(super) live: HashMap<DevAddr, usize>,
    /// Graph allocations freed earlier in the capture, by size: a later allocation of the
    /// same size takes one over, as CUDA's graph memory planning shares memory between
    /// allocations whose lifetimes do not overlap (and a step's thousands of buffers stay
    /// within the host's mapping limit).
    pub(super) free_by_size: HashMap<usize, Vec<DevAddr>>,
    pub(super) in_use: usize,
    pub(super) peak: usize,
    /// The first rule the body broke that could not be an error where it happened (a
    /// free runs in `Drop`).
    pub(super) violation: Option<String>,
    /// Buffers from before the capture that the body freed (the violation above): freed
    /// for real when the capture ends.
    pub(super) deferred_frees: Vec<DevAddr>,
}

impl SimDriver {
    pub(super) fn begin_capture(&self) -> Result<()> {
        let mut s = self.lock();
        if s.capture.is_some() {
            return Err(capture_rule("a capture is already running"));
        }
        // As the GPU driver: free pool blocks go back so graph memory can use them.
        s.trim();
        s.capture = Some(Capture::default());
        Ok(())
    }

    pub(super) fn end_capture(&self) -> Result<Box<dyn GraphExec>> {
        let c = self
            .lock()
            .capture
            .take()
            .ok_or_else(|| capture_rule("no capture is running"))?;
        for &addr in &c.deferred_frees {
            self.free(addr);
        }
        let graph = SimGraph {
            state: self.state.clone(),
            options: self.options,
            ops: c.ops,
            owned: c.owned,
            peak: c.peak,
        };
        if let Some(v) = c.violation {
            return Err(capture_rule(&v));
        }
        if c.in_use > 0 {
            return Err(capture_rule(&format!(
                "the captured step leaves {} bytes allocated (every buffer it allocates must \
                 be freed inside it)",
                c.in_use
            )));
        }
        if graph.ops.is_empty() {
            return Err(sim_err("graph capture recorded nothing"));
        }
        Ok(Box::new(graph))
    }
}

/// A recorded graph: its ops, and the graph memory they use at fixed addresses.
struct SimGraph {
    state: Arc<Mutex<State>>,
    options: SimOptions,
    ops: Vec<Op>,
    owned: Vec<(DevAddr, usize)>,
    /// Most graph bytes in use at once during a replay.
    peak: usize,
}

impl GraphExec for SimGraph {
    fn launch(&self) -> Result<()> {
        {
            let mut s = lock(&self.state);
            if s.capture.is_some() {
                return Err(capture_rule("a graph is launched inside a capture"));
            }
            // The graph's memory is reserved for the replay, as cuGraphLaunch maps it (blocks
            // the eager pool caches go back first if they must).
            s.reserve_or_trim(self.options.memory_bytes, true, self.peak)?;
        }
        let mut in_use = 0usize;
        let result = (|| {
            for op in &self.ops {
                match op {
                    Op::Launch { kernel, cfg, args } => {
                        let mut params: Vec<*mut c_void> =
                            args.iter().map(|w| w.as_ptr() as *mut c_void).collect();
                        // SAFETY: the arguments were valid at capture, and the buffers they
                        // address are the graph's own (alive as long as it is) or ones the
                        // caller keeps alive across replays, as with a CUDA graph.
                        unsafe { execute(*kernel, cfg, &mut params)? };
                    }
                    // SAFETY (three arms): as the eager copies and memsets.
                    Op::Memset { dst, bytes } => unsafe {
                        std::ptr::write_bytes(*dst as *mut u8, 0, *bytes)
                    },
                    Op::Dtod { dst, src, bytes } => unsafe {
                        std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes)
                    },
                    Op::Gemm(g) => unsafe { gemm(g) },
                    Op::Alloc { addr, bytes } => {
                        // SAFETY: a graph-owned allocation, mapped until the graph drops.
                        unsafe { poison(*addr, *bytes) };
                        in_use += bytes;
                        let mut s = lock(&self.state);
                        s.graph_in_use += bytes;
                        s.graph_high = s.graph_high.max(s.graph_in_use);
                    }
                    Op::Free { bytes } => {
                        in_use -= bytes;
                        lock(&self.state).graph_in_use -= bytes;
                    }
                }
            }
            Ok(())
        })();
        // A replay that failed midway leaves nothing in use (AUTO_FREE_ON_LAUNCH).
        lock(&self.state).graph_in_use -= in_use;
        result
    }
}

impl Drop for SimGraph {
    fn drop(&mut self) {
        for &(addr, _) in &self.owned {
            unmap(addr);
        }
    }
}
