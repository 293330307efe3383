//! CUDA graphs: stream capture (thread-local mode, after the pools are trimmed so graph
//! memory can take their blocks), instantiation with `AUTO_FREE_ON_LAUNCH`, and the
//! instantiated graph, replayed on the driver's stream and destroyed on drop.

use super::device::Inner;
use super::Gpu;
use crate::backend::cuda::driver::{capture_rule, Driver, GraphExec};
use crate::error::{Error, Result};
use cudarc::driver::{result, sys};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

impl Gpu {
    /// Waits for the stream, hands the pools' unused memory back (`trim_memory`: the eager
    /// pool's free blocks go back to the device so graph memory can take them), then
    /// `cuStreamBeginCapture` in thread-local mode: `end_capture` must come from the same
    /// thread. Needs memory pools (allocations inside become graph memory nodes).
    pub(super) fn begin_capture(&self) -> Result<()> {
        let i = &self.inner;
        if i.pool.is_none() {
            return Err(Error::Cuda(format!(
                "graph capture needs stream-ordered memory pools, which {} lacks",
                i.name
            )));
        }
        if i.capturing() {
            return Err(capture_rule("a capture is already running"));
        }
        self.synchronize()?;
        self.trim_memory()?;
        if i.capturing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(capture_rule("a capture is already running"));
        }
        let r = i.bind().and_then(|()| {
            unsafe {
                result::stream::begin_capture(
                    i.stream,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                )
            }
            .map_err(|e| i.err("begin graph capture", e))
        });
        if r.is_err() {
            i.capturing.store(false, Ordering::SeqCst);
        }
        r
    }

    /// `cuStreamEndCapture` (always: even after a failed body the stream leaves capture
    /// mode), instantiation with `AUTO_FREE_ON_LAUNCH` (a relaunch frees what the previous
    /// launch left allocated), the template graph destroyed, the executable uploaded.
    pub(super) fn end_capture(&self) -> Result<Box<dyn GraphExec>> {
        let i = &self.inner;
        if !i.capturing.swap(false, Ordering::SeqCst) {
            // Not ours to end: another thread's capture, or none (CUDA would refuse too).
            return Err(capture_rule("end_capture without a running capture"));
        }
        i.bind()?;
        let graph = unsafe { result::stream::end_capture(i.stream) }
            .map_err(|e| i.err("end graph capture", e))?;
        if graph.is_null() {
            return Err(Error::Cuda("graph capture recorded nothing".into()));
        }
        let exec = unsafe {
            result::graph::instantiate(
                graph,
                sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
            )
        };
        // The executable is independent of its template.
        let _ = unsafe { result::graph::destroy(graph) };
        let exec = exec.map_err(|e| i.err("graph instantiation", e))?;
        // Owned from here: a failed upload destroys it.
        let graph = GpuGraph {
            exec,
            inner: self.inner.clone(),
            launching: Mutex::new(()),
        };
        unsafe { result::graph::upload(exec, i.stream) }.map_err(|e| i.err("graph upload", e))?;
        Ok(Box::new(graph))
    }
}

/// An instantiated graph, launched on the driver's stream.
struct GpuGraph {
    exec: sys::CUgraphExec,
    /// Keeps the context, stream, modules and cuBLAS workspace the graph's nodes use.
    inner: Arc<Inner>,
    /// Serialises launches: the driver API does not promise concurrent calls on one
    /// executable graph are safe.
    launching: Mutex<()>,
}

// SAFETY: a CUgraphExec handle may be launched from any thread (the driver API is thread
// safe, and `launch` binds the context first); launches of one graph are serialised by
// `launching`, and all of them go to the driver's one stream. `inner` is Send + Sync.
unsafe impl Send for GpuGraph {}
unsafe impl Sync for GpuGraph {}

impl GraphExec for GpuGraph {
    fn launch(&self) -> Result<()> {
        let i = &self.inner;
        i.bind()?;
        let _guard = self
            .launching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match unsafe { result::graph::launch(self.exec, i.stream) } {
            // Graph memory is mapped at launch: blocks the eager pool caches (release
            // threshold u64::MAX) may hold the device. Hand them back and retry once.
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                if let Some(pool) = i.pool {
                    i.sync_stream()?;
                    unsafe { result::mem_pool::trim_to(pool, 0) }
                        .map_err(|e| i.err("memory pool trim", e))?;
                }
                unsafe { result::graph::launch(self.exec, i.stream) }
                    .map_err(|e| i.err("graph launch", e))
            }
            r => r.map_err(|e| i.err("graph launch", e)),
        }
    }
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        // An executable still running is freed by the driver when it completes. Then the
        // graph memory nobody uses goes back to the device (what a running graph still uses
        // is released by a later trim).
        let i = &self.inner;
        let _ = i.bind();
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            if i.pool.is_some() {
                let _ = sys::cuDeviceGraphMemTrim(i.dev).result();
            }
        }
    }
}
