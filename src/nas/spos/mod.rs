//! Single Path One-Shot (Guo et al., 2019): a supernet holding every candidate operation's
//! weights once, trained one sampled path per batch; then architectures are scored with the
//! inherited weights (after recalibrating the batch-norm statistics for the path) and
//! searched by evolution or at random.
//!
//! `supernet.rs` is what a space's supernet offers ([`Supernet`], [`SupernetConfig`]: the
//! DARTS search network and the NB201 supernet, run one path at a time), `constraint.rs` the
//! weight and FLOPs ranges paths are kept in, `train.rs` the path sampler (uniform or fair)
//! and the training step, `score.rs` the recalibration and the validation accuracy of a path,
//! `evolution.rs` the searches (on any [`SearchSpace`](crate::nas::space::SearchSpace) with
//! any score: the supernet's here, a table's for tabular benchmarks), `run.rs` a SPOS run on
//! disk (train, then search), `study.rs` the ranking study (supernet scores against
//! stand-alone training).

pub mod constraint;
pub mod evolution;
pub mod run;
pub mod score;
pub mod study;
pub mod supernet;
pub mod train;

pub use constraint::{PathLimits, PathMeter};
pub use evolution::{best, evolution_search, random_search, EvolutionConfig, Scored};
pub use score::{path_accuracy, recalibrate_bn, score_path};
pub use supernet::{PathOf, Supernet, SupernetConfig};
pub use train::{PathSampler, Sampling, SposHyper, SposTrainer};
