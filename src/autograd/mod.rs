//! The autograd tape: a list of recorded ops replayed in reverse (micrograd's idea, kept
//! backend-agnostic as in burn: the tape knows ops, never devices). Parameters live in
//! named stores (`ParamStore`) outside the tape, so a tape is built and dropped every step.

mod params;
mod saved;
mod tape;

pub use params::{load_state_dict_strict, ParamId, ParamStore, StrictLoad};
pub use saved::{Precision, ReleaseStats};
pub use tape::{Gradients, Tape, Var};
