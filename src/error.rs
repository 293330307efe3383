//! The one error type of nasrs. Every failure a user can cause (bad shapes, bad files, bad
//! flags, a NaN loss, a missing GPU) is a variant here with a message naming what is at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was given tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A value (flag, option, hyper-parameter) is outside what is accepted.
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file was read but its contents are wrong (truncated, bad magic, inconsistent).
    #[error("{}: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },

    /// The loss or a gradient stopped being a finite number.
    #[error("non-finite value: {0}")]
    NonFinite(String),

    /// The requested device cannot be used (no driver, no GPU, built without `cuda`).
    #[error("{0}")]
    Device(String),

    /// A failure inside the CUDA driver or cuBLAS.
    #[error("CUDA: {0}")]
    Cuda(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn bad_file(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
