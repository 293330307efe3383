//! Choosing the device: the `--device` flag value (`auto | cpu | cuda | cuda:N | cuda-sim`)
//! and its resolution to a usable backend. Compiled with or without the `cuda` and
//! `cuda-sim` features; every failure (no CUDA support in this build, no driver, no GPU) is
//! a one-line `Error::Device`, never a panic.

use crate::backend::cpu::Cpu;
use crate::backend::prelude::*;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA GPU 0 if one is usable, else the CPU (with a notice).
    #[default]
    Auto,
    Cpu,
    /// A CUDA GPU by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    /// The CUDA backend on the host simulation of a GPU (feature `cuda-sim`; slow, for
    /// checking the CUDA code without a GPU).
    CudaSim,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid {
            what: format!("--device '{s}'"),
            detail: "expected auto, cpu, cuda, cuda:N or cuda-sim".into(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "cuda-sim" => Ok(DeviceChoice::CudaSim),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::CudaSim => write!(f, "cuda-sim"),
        }
    }
}

/// A device ready to run. Match on it and call the generic code with the backend inside.
pub enum Resolved {
    Cpu(Cpu<f32>),
    /// The CUDA backend, on a GPU or on the host simulation.
    #[cfg(any(feature = "cuda", feature = "cuda-sim"))]
    Cuda(crate::backend::cuda::Cuda),
}

impl Resolved {
    /// The backend's device name ("cpu (...)", "cuda:0 NVIDIA H200 (sm_90)").
    pub fn name(&self) -> String {
        match self {
            Resolved::Cpu(c) => c.device_name(),
            #[cfg(any(feature = "cuda", feature = "cuda-sim"))]
            Resolved::Cuda(c) => c.device_name(),
        }
    }
    /// Memory a run on this device can still allocate: the host's available RAM for the
    /// CPU, the free device memory for CUDA; None where unknown.
    pub fn available_memory(&self) -> Result<Option<u64>> {
        match self {
            Resolved::Cpu(_) => Ok(crate::host::available_memory()),
            #[cfg(any(feature = "cuda", feature = "cuda-sim"))]
            Resolved::Cuda(c) => c.free_memory(),
        }
    }
    pub fn is_cuda(&self) -> bool {
        !matches!(self, Resolved::Cpu(_))
    }
}

/// Whether this binary was built with the `cuda` feature (GPU support).
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// Whether this binary was built with the `cuda-sim` feature (the host simulation).
pub const fn cuda_sim_compiled() -> bool {
    cfg!(feature = "cuda-sim")
}

/// Opens the CUDA backend on the host simulation, or says why it cannot.
#[cfg(feature = "cuda-sim")]
pub fn open_cuda_sim() -> Result<Resolved> {
    crate::backend::cuda::Cuda::open_sim().map(Resolved::Cuda)
}

/// Opens the CUDA backend on the host simulation, or says why it cannot.
#[cfg(not(feature = "cuda-sim"))]
pub fn open_cuda_sim() -> Result<Resolved> {
    Err(Error::Device(
        "nasrs was built without the CUDA simulation; rebuild with --features cuda-sim".into(),
    ))
}

/// Opens CUDA device `ordinal`, or says in one line why it cannot.
#[cfg(feature = "cuda")]
pub fn open_cuda(ordinal: usize) -> Result<Resolved> {
    crate::backend::cuda::Cuda::open(ordinal).map(Resolved::Cuda)
}

/// Opens CUDA device `ordinal`, or says in one line why it cannot.
#[cfg(not(feature = "cuda"))]
pub fn open_cuda(_ordinal: usize) -> Result<Resolved> {
    Err(Error::Device(
        "nasrs was built without CUDA support; rebuild with --features cuda".into(),
    ))
}

/// The number of GPUs this build can use: what the driver reports with `--features cuda`,
/// else 0.
pub fn gpu_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        crate::backend::cuda::Cuda::gpu_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// Resolves a choice to a device. Returns the device and, when `auto` fell back to the CPU,
/// a one-line notice for the CLI to print.
pub fn resolve(choice: DeviceChoice) -> Result<(Resolved, Option<String>)> {
    match choice {
        DeviceChoice::Cpu => Ok((Resolved::Cpu(Cpu::new()), None)),
        DeviceChoice::Cuda(n) => open_cuda(n).map(|d| (d, None)),
        DeviceChoice::CudaSim => open_cuda_sim().map(|d| (d, None)),
        DeviceChoice::Auto => match open_cuda(0) {
            Ok(d) => Ok((d, None)),
            Err(e) => Ok((
                Resolved::Cpu(Cpu::new()),
                Some(format!("note: using the CPU ({e})")),
            )),
        },
    }
}
