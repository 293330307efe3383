pub mod tape; pub use tape::*;
