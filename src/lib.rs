//! nasrs: neural architecture search (DARTS) with a fast CPU backend and hand-written CUDA
//! kernels.
//!
//! Layers, bottom up:
//! - [`backend`]: the op set as one trait, implemented by the CPU backend (the reference)
//!   and the CUDA backend (feature `cuda`).
//! - [`tensor`]: a device buffer plus its shape.
//! - [`autograd`]: a minimal tape that records ops and replays them in reverse.
//! - [`optim`]: SGD, Adam, gradient clipping and the cosine schedule.
//! - [`nas`]: the DARTS search space, supernet, genotype and search strategy.
//! - [`data`]: dataset readers (CIFAR-10, MNIST IDX), augmentation, batch iterators.
//! - [`io`]: atomic files and checkpoints; [`device`]: opening a backend by name.
//! - [`bench_model`], [`bench`](mod@bench): a DARTS step counted (cost model), then timed.
//! - [`host`]: what the machine has (available memory, peak resident set).

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod bench_model;
pub mod data;
pub mod device;
pub mod error;
pub mod host;
pub mod io;
pub mod nas;
pub mod optim;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use backend::cpu::Cpu;
pub use backend::{Backend, Element};
pub use error::{Error, Result};
pub use rng::Rng;
pub use shape::{Conv2dSpec, Nchw, Pool2dSpec, Shape};
pub use tensor::Tensor;
