//! The kernels on the device: every module of `kernels/*.cu` loaded once at open from the
//! fatbin build.rs embeds, its functions in a table indexed by [`Kernel::index`], and
//! launches, their configuration checked first so that a bad one is a clear error rather than
//! the driver's "invalid value".

use super::device::{open_error, Inner};
use super::Gpu;
use crate::backend::cuda::driver::LaunchConfig;
use crate::backend::cuda::kernels::{Kernel, FATBINS};
use crate::error::{Error, Result};
use cudarc::driver::result::DriverError;
use cudarc::driver::{result, sys};
use std::ffi::{c_void, CString};

/// Most threads in one block on every architecture nasrs targets (sm_80, sm_90).
const MAX_BLOCK_THREADS: u64 = 1024;
/// Most dynamic shared memory a launch gets without opting in per kernel
/// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), which nasrs never does.
const MAX_SHARED_BYTES: u32 = 48 << 10;

/// Loads every kernel into `inner.funcs` (`open`'s step), each module once; the modules
/// belong to `inner` as soon as they are loaded, so a failure unloads them.
pub(super) fn load_all(inner: &mut Inner) -> Result<()> {
    let ordinal = inner.ordinal;
    let dev_err = |what: &str, e: DriverError| open_error(ordinal, what, e);
    // Every kernel, each module loaded once, functions indexed by `Kernel::index`.
    let mut loaded: Vec<(&'static str, sys::CUmodule)> = Vec::new();
    inner.funcs = vec![std::ptr::null_mut(); Kernel::ALL.len()];
    // The simulation's deliberately wrong kernels are not in the fatbin (their slots stay
    // null: launching one on a GPU is an error, not a crash).
    for &kernel in Kernel::ALL.iter().filter(|k| !k.sim_only()) {
        let module_name = kernel.module();
        let module = match loaded.iter().find(|(m, _)| *m == module_name) {
            Some(&(_, m)) => m,
            None => {
                let m = load_module(module_name).map_err(|e| e.into_error(module_name, ordinal))?;
                // Owned by `inner` from here, so a later failure unloads it.
                inner.modules.push(m);
                loaded.push((module_name, m));
                m
            }
        };
        let name = kernel.name();
        let c_name = CString::new(name)
            .map_err(|_| Error::Device(format!("kernel name {name:?} contains a NUL byte")))?;
        let func = unsafe { result::module::get_function(module, c_name) }
            .map_err(|e| dev_err(&format!("loading kernel {name}"), e))?;
        let slot = inner.funcs.get_mut(kernel.index()).ok_or_else(|| {
            Error::Device(format!(
                "kernel {name} has index {} outside the kernel table of {}",
                kernel.index(),
                Kernel::ALL.len()
            ))
        })?;
        *slot = func;
    }
    Ok(())
}

enum LoadError {
    /// No fatbin of that name in `FATBINS`.
    Missing,
    /// A zero-length fatbin.
    Empty,
    Driver(DriverError),
}

impl LoadError {
    /// The one-line `Error::Device` of `open` ("CUDA loading kernels/conv.cu failed ...").
    fn into_error(self, stem: &str, ordinal: usize) -> Error {
        let why = match self {
            LoadError::Missing => {
                return Error::Device(format!(
                    "kernel module {stem} was not embedded at build time"
                ))
            }
            LoadError::Empty => "the embedded fatbin is empty".to_string(),
            LoadError::Driver(e) => e.to_string(),
        };
        Error::Device(format!(
            "CUDA loading kernels/{stem}.cu failed on cuda:{ordinal}: {why}"
        ))
    }
}

/// Loads the module `kernels/<stem>.cu` from its embedded fatbin with `cuModuleLoadData`.
/// The context must be current.
fn load_module(stem: &str) -> std::result::Result<sys::CUmodule, LoadError> {
    let bin = FATBINS
        .iter()
        .find(|(m, _)| *m == stem)
        .map(|(_, b)| *b)
        .ok_or(LoadError::Missing)?;
    if bin.is_empty() {
        return Err(LoadError::Empty);
    }
    // `cuModuleLoadData` takes a bare pointer: it finds a fatbin's size in its header, but
    // reads anything it does not recognise as NUL-terminated PTX text. An `include_bytes!`
    // slice is neither NUL-terminated nor aligned, so hand the driver an owned, 8-byte
    // aligned copy with at least 8 zero bytes after the image. The driver copies what it
    // needs during the call; the buffer only has to outlive it.
    let mut image = vec![0u64; bin.len() / 8 + 2];
    bytemuck::cast_slice_mut::<u64, u8>(&mut image)[..bin.len()].copy_from_slice(bin);
    let module = unsafe { result::module::load_data(image.as_ptr().cast::<c_void>()) };
    drop(image);
    module.map_err(LoadError::Driver)
}

impl Gpu {
    /// Checks the launch configuration against the device's limits and the kernel against
    /// the loaded table, then `cuLaunchKernel` on the stream.
    pub(super) unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let i = &self.inner;
        let name = kernel.name();
        let (gx, gy, gz) = cfg.grid_dim;
        let (bx, by, bz) = cfg.block_dim;
        // Clear errors for what the driver would only call an invalid value.
        if [gx, gy, gz, bx, by, bz].contains(&0) {
            return Err(Error::Cuda(format!(
                "{name}: empty launch (grid {gx}x{gy}x{gz}, block {bx}x{by}x{bz})"
            )));
        }
        let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
        if threads > MAX_BLOCK_THREADS {
            return Err(Error::Cuda(format!(
                "{name}: a block of {bx}x{by}x{bz} = {threads} threads exceeds the limit of \
                 {MAX_BLOCK_THREADS}"
            )));
        }
        if cfg.shared_mem_bytes > MAX_SHARED_BYTES {
            return Err(Error::Cuda(format!(
                "{name}: {} bytes of dynamic shared memory exceed the limit of {MAX_SHARED_BYTES}",
                cfg.shared_mem_bytes
            )));
        }
        let func = match i.funcs.get(kernel.index()) {
            Some(&f) if !f.is_null() => f,
            _ => return Err(Error::Cuda(format!("{name}: kernel is not loaded"))),
        };
        i.bind()?;
        // SAFETY: `func` is a live function of a loaded module; the caller guarantees the
        // params match its signature and the addresses are valid (the trait's contract).
        unsafe {
            result::launch_kernel(
                func,
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                i.stream,
                params,
            )
        }
        .map_err(|e| Error::Cuda(format!("{name}: {e}")))
    }
}
