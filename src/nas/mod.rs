//! The NAS layer: modules, not kernels. `modules` holds the DARTS building blocks (conv,
//! batch norm, ReLUConvBN, FactorizedReduce, SepConv, DilConv) and the eight primitives;
//! `search_model` the one-shot supernet with its architecture parameters; `genotype` the
//! discrete architecture derived from them; `darts` the search strategy. `space` holds the
//! search spaces (DARTS, NAS-Bench-201, MBConv); `eval_model`, `nb201_model` and
//! `mbconv_model` the networks trained from an architecture of each, all driven through
//! `classifier` by `train_run` and `evaluate`.
//! `history` is what every search strategy returns (the architectures scored, in query order);
//! `multi_trial` the strategies that score one architecture at a time (random search, aging
//! evolution, REINFORCE) and the tabular benchmark they are scored on; `scaling`
//! EfficientNet's compound scaling of an MBConv network.

pub mod classifier;
pub mod darts;
pub mod eval_model;
pub mod evaluate;
pub mod genotype;
pub mod genotypes_builtin;
pub mod history;
pub mod latency;
pub mod mbconv_model;
pub mod modules;
pub mod multi_trial;
pub mod nb201_model;
pub mod onnx;
pub mod progress;
pub mod ranking;
pub mod report;
pub mod run_dir;
pub mod scaling;
pub mod search_model;
pub mod search_run;
pub mod sizing;
pub mod space;
pub mod spos;
pub mod train_run;

pub use genotype::{Genotype, Primitive};
pub use modules::{Ctx, Mode};
pub use search_model::{SearchConfig, SearchNetwork};
