//! Hardware-aware search's latency lookup tables (issue 15): every block configuration the
//! MBConv space can produce at one network scale, timed alone on a device, so that a
//! network's latency is predicted without running it: stem + the sum of its blocks + head.
//! The predictor is checked against timing whole networks (`check`).
//!
//! `signature.rs` owns the scale and the pieces' signatures (the table's keys) and the
//! enumeration of the space's pieces; `table.rs` the file, its lookup and the prediction;
//! `measure.rs` the timing (eval-mode forward, warm-up, then repeated timed runs) of a
//! piece, of a whole network, of a table build and of a check; `objective.rs` latency in a
//! search's objective (MnasNet's soft and hard rewards, a plain limit); `pareto.rs` the
//! accuracy-latency Pareto front of a search's results.

pub mod measure;
pub mod objective;
pub mod pareto;
pub mod signature;
pub mod table;

pub use measure::{build_table, check, CheckReport, CheckRow, Protocol};
pub use objective::{LatencyObjective, LatencyReward, MNAS_SOFT_WEIGHT};
pub use pareto::{front, pareto_svg, ParetoPoint};
pub use signature::{arch_pieces, space_pieces, Piece, PieceSpec, Scale};
pub use table::{LatencyTable, Prediction, Timing};
