//! Kernels and GEMMs run on the host: a launch calls the kernel's generated trampoline
//! (build/kernel_abi.rs), which runs every thread of every block through the simulation
//! runtime (kernels/sim/runtime*.cpp), counted per kernel; cuBLAS's column-major SGEMM subset
//! runs through `matrixmultiply`. Inside a capture both are recorded instead (graph.rs).

use super::graph::Op;
use super::{sim_err, SimDriver};
use crate::backend::cuda::driver::{LaunchConfig, Sgemm};
use crate::backend::cuda::kernels::{sim_entry, Kernel};
use crate::error::Result;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

/// `nasrs_sim_launch_cfg` in kernels/sim/runtime.h.
#[repr(C)]
pub struct SimLaunchCfg {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

/// A kernel's simulation entry point (generated): unpacks `kernelParams` and runs the grid.
pub type SimEntry = unsafe extern "C" fn(*const SimLaunchCfg, *mut *mut c_void) -> i32;

extern "C" {
    fn nasrs_sim_last_error() -> *const c_char;
}

/// Launches run by every simulated device in this process, per kernel ([`Kernel::ALL`]
/// order), replays included: lets a test prove every kernel was exercised.
static LAUNCHES: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
const _: () = assert!(Kernel::ALL.len() <= 256);

/// How often each kernel has run on the simulation in this process.
pub fn launch_counts() -> Vec<(Kernel, u64)> {
    Kernel::ALL
        .iter()
        .map(|&k| (k, LAUNCHES[k.index()].load(Ordering::Relaxed)))
        .collect()
}

/// Runs one kernel now.
///
/// # Safety
/// As [`Driver::launch`](crate::backend::cuda::driver::Driver::launch).
pub(super) unsafe fn execute(
    kernel: Kernel,
    cfg: &LaunchConfig,
    params: &mut [*mut c_void],
) -> Result<()> {
    let c = SimLaunchCfg {
        grid: [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2],
        block: [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2],
        shared_mem_bytes: cfg.shared_mem_bytes,
    };
    let entry = sim_entry::ENTRIES[kernel.index()];
    LAUNCHES[kernel.index()].fetch_add(1, Ordering::Relaxed);
    if entry(&c, params.as_mut_ptr()) != 0 {
        let msg = CStr::from_ptr(nasrs_sim_last_error()).to_string_lossy();
        return Err(sim_err(format!("{}: {msg}", kernel.name())));
    }
    Ok(())
}

/// Column-major SGEMM, cuBLAS's definition, by `matrixmultiply` (single-threaded:
/// deterministic).
///
/// # Safety
/// As [`Driver::sgemm`](crate::backend::cuda::driver::Driver::sgemm).
pub(super) unsafe fn gemm(g: &Sgemm) {
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    let (lda, ldb, ldc) = (g.lda as isize, g.ldb as isize, g.ldc as isize);
    let (rsa, csa) = if g.trans_a { (lda, 1) } else { (1, lda) };
    let (rsb, csb) = if g.trans_b { (ldb, 1) } else { (1, ldb) };
    let batch = g.batch.map_or((1, 0, 0, 0), |b| {
        (b.count as usize, b.stride_a, b.stride_b, b.stride_c)
    });
    for i in 0..batch.0 {
        let a = (g.a as *const f32).offset(i as isize * batch.1 as isize);
        let b = (g.b as *const f32).offset(i as isize * batch.2 as isize);
        let c = (g.c as *mut f32).offset(i as isize * batch.3 as isize);
        if g.beta == 0.0 {
            // cuBLAS does not read C when beta is 0: whatever it holds (NaN) is overwritten.
            for j in 0..n {
                for r in 0..m {
                    *c.offset(r as isize + j as isize * ldc) = 0.0;
                }
            }
        }
        matrixmultiply::sgemm(
            m, k, n, g.alpha, a, rsa, csa, b, rsb, csb, g.beta, c, 1, ldc,
        );
    }
}

impl SimDriver {
    /// Checks the argument count, then runs the kernel now, or inside a capture records it
    /// with a copy of its argument values.
    pub(super) unsafe fn launch(
        &self,
        kernel: Kernel,
        cfg: &LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let sizes = kernel.param_sizes();
        if params.len() != sizes.len() {
            return Err(sim_err(format!(
                "{}: {} arguments for {} parameters",
                kernel.name(),
                params.len(),
                sizes.len()
            )));
        }
        let mut s = self.lock();
        if let Some(c) = s.capture.as_mut() {
            // Arguments are frozen at capture, as in a CUDA graph.
            let args = params
                .iter()
                .zip(sizes)
                .map(|(&p, &size)| {
                    let mut words = vec![0u64; size.div_ceil(8)];
                    std::ptr::copy_nonoverlapping(
                        p as *const u8,
                        words.as_mut_ptr() as *mut u8,
                        size,
                    );
                    words
                })
                .collect();
            c.ops.push(Op::Launch {
                kernel,
                cfg: *cfg,
                args,
            });
            return Ok(());
        }
        drop(s);
        execute(kernel, cfg, params)
    }

    /// Runs the GEMM now, or records it inside a capture.
    pub(super) unsafe fn sgemm(&self, g: &Sgemm) -> Result<()> {
        if let Some(Op::Gemm(g)) = self.record(Op::Gemm(*g)) {
            gemm(&g);
        }
        Ok(())
    }
}
