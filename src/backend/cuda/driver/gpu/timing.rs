//! Timing on the device: CUDA events recorded on the stream around a region of work.

use super::device::Inner;
use super::Gpu;
use crate::error::Result;
use cudarc::driver::{result, sys};

impl Gpu {
    /// CUDA events recorded on the stream around `f` (`CU_EVENT_DEFAULT`: timing on): device
    /// time from the first queued op to the last, host gaps inside (mid-step downloads)
    /// included, as PyTorch's `torch.cuda.Event` timing counts them.
    pub(super) fn time_region(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.refuse_in_capture(|| "time_region inside the captured step".to_string())?;
        let i = &self.inner;
        i.bind()?;
        let start = Event::new(i)?;
        let end = Event::new(i)?;
        unsafe { result::event::record(start.0, i.stream) }
            .map_err(|e| i.err("event record", e))?;
        f()?;
        // `f` may have run on this thread with another context current; ours again.
        i.bind()?;
        unsafe { result::event::record(end.0, i.stream) }.map_err(|e| i.err("event record", e))?;
        unsafe { result::event::synchronize(end.0) }.map_err(|e| i.err("event synchronize", e))?;
        let ms = unsafe { result::event::elapsed(start.0, end.0) }
            .map_err(|e| i.err("event elapsed time", e))?;
        Ok(f64::from(ms) / 1e3)
    }
}

/// A CUDA event with timing, destroyed on drop (the context is current: `time_region` bound
/// it on this thread).
struct Event(sys::CUevent);

impl Event {
    fn new(i: &Inner) -> Result<Self> {
        result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map(Event)
            .map_err(|e| i.err("event creation", e))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let _ = unsafe { result::event::destroy(self.0) };
    }
}
