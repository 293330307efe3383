//! Buffers, labels, graphs and measurement: what a device offers besides arithmetic.
//! One family of the [`Backend`](crate::backend::Backend) op set; conventions in the
//! `crate::backend` module docs.

use crate::backend::{checks, Element, PeakMemory};
use crate::error::Result;

pub trait DeviceOps: Clone + Send + Sync + 'static {
    /// The scalar type stored (f32 on devices; f64 too on the CPU, for gradient checks).
    type Elem: Element;
    /// A flat buffer of `Elem` on the device.
    type Storage: Send + Sync + 'static;
    /// Class labels of a batch on the device (checked against the class count on upload).
    type Labels: Send + Sync + 'static;
    /// A recorded step the device replays without the host (a CUDA graph); devices without
    /// graphs use `()` and never return one from [`DeviceOps::capture`].
    type Graph: Send + Sync + 'static;
    /// A flat buffer of bf16 values on the device: the storage of activations saved for
    /// backward in the bf16 activation mode (`autograd::Precision::Bf16`). Arithmetic never
    /// reads it directly; it is widened back with [`ElementwiseOps::from_bf16`](super::ElementwiseOps::from_bf16) first.
    type Half: Send + Sync + 'static;
    /// A human-readable device name ("cpu (2 threads)", "cuda:0 NVIDIA H200").
    fn device_name(&self) -> String;
    fn zeros(&self, len: usize) -> Result<Self::Storage>;
    fn upload(&self, host: &[Self::Elem]) -> Result<Self::Storage>;
    fn download(&self, buf: &Self::Storage) -> Result<Vec<Self::Elem>>;
    fn len(&self, buf: &Self::Storage) -> usize;
    /// The address the device's kernels see for `buf` (a device pointer on CUDA, the data's
    /// host address on the CPU): what a captured graph bakes in, so what a graph cache must
    /// key on. Not the address of the host-side handle, which can be reused while the
    /// device buffer differs, and the reverse.
    fn storage_addr(&self, buf: &Self::Storage) -> usize;
    /// As [`DeviceOps::storage_addr`], for labels.
    fn labels_addr(&self, labels: &Self::Labels) -> usize;
    fn copy(&self, buf: &Self::Storage) -> Result<Self::Storage>;
    /// Overwrites `dst` with `src` (same length).
    fn copy_into(&self, dst: &mut Self::Storage, src: &Self::Storage) -> Result<()>;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;
    /// Overwrites `dst` with host data of the same length (a staged input batch: the buffer,
    /// and so every pointer a captured graph holds to it, stays the same).
    fn upload_into(&self, dst: &mut Self::Storage, host: &[Self::Elem]) -> Result<()> {
        checks::upload_into(self, dst, host)?;
        let src = self.upload(host)?;
        self.copy_into(dst, &src)
    }
    /// Uploads a batch's labels; a label `>= classes` is an error naming it.
    fn upload_labels(&self, labels: &[u32], classes: usize) -> Result<Self::Labels>;
    /// Overwrites staged labels of the same length (see `upload_into`).
    fn upload_labels_into(
        &self,
        dst: &mut Self::Labels,
        labels: &[u32],
        classes: usize,
    ) -> Result<()>;
    fn labels_len(&self, labels: &Self::Labels) -> usize;
    /// Records the device work `body` queues into a graph, without running it, or returns
    /// `Ok(None)` without calling `body` where the device has no graphs (then the caller
    /// runs `body` itself). `body` must not read anything back to the host, and every buffer
    /// it allocates must be freed before it returns, except through buffers allocated before
    /// the capture (the graph replays with the same pointers).
    fn capture(&self, body: &mut dyn FnMut() -> Result<()>) -> Result<Option<Self::Graph>> {
        let _ = body;
        Ok(None)
    }
    /// Runs a captured graph once (queued; results are read as usual).
    fn replay(&self, graph: &Self::Graph) -> Result<()> {
        let _ = graph;
        Err(crate::error::Error::invalid(
            "graph replay",
            format!("{} has no graphs", self.device_name()),
        ))
    }
    /// Seconds the device spends on the work `f` queues. The default brackets `f` with
    /// `synchronize` and reads the host clock; a GPU records events on its stream instead.
    fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.synchronize()?;
        let t = std::time::Instant::now();
        f()?;
        self.synchronize()?;
        Ok(t.elapsed().as_secs_f64())
    }
    /// What `time_region` measures with (`wall_clock`, `cuda_events`).
    fn timer_kind(&self) -> &'static str {
        "wall_clock"
    }
    /// Restarts the peak-memory mark where the device can (a no-op where it cannot).
    fn reset_peak_memory(&self) -> Result<()> {
        Ok(())
    }
    /// Peak memory since the last reset, where known.
    fn peak_memory(&self) -> Result<Option<PeakMemory>> {
        Ok(crate::host::peak_rss_bytes().map(|bytes| PeakMemory {
            bytes,
            kind: "max_rss_cumulative",
        }))
    }

    // ---- profiling --------------------------------------------------------------------------
    /// Names the module the ops that follow belong to, until the next call (`stem`,
    /// `cells.3`, `classifier`): the counting backend attributes its counts per scope (FLOPs
    /// per module in `nasrs model`); the default ignores it.
    fn annotate(&self, scope: &str) {
        let _ = scope;
    }
}
