//! The op families of the [`Backend`](crate::backend::Backend) trait, one file each, mirrored
//! by `cpu/<family>.rs`, `cuda/<family>.rs` (and `kernels/<family>.cu`) and
//! `counting/<family>.rs`. `use nasrs::backend::ops::*` brings every op method into scope
//! on a concrete device type.

mod conv;
mod dense;
mod device;
mod elementwise;
mod layout;
mod mixed_op;
mod norm;
mod optim;
mod pool;

pub use conv::ConvOps;
pub use dense::DenseOps;
pub use device::DeviceOps;
pub use elementwise::ElementwiseOps;
pub use layout::LayoutOps;
pub use mixed_op::MixedOpOps;
pub use norm::NormOps;
pub use optim::OptimOps;
pub use pool::PoolOps;
