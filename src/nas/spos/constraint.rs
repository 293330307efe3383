//! SPOS's constrained sampling and search (Guo et al. train and search only paths inside a
//! FLOPs range): the weight count and forward FLOPs of a path, measured on a twin of the
//! supernet built on the counting backend (same configuration, same names and shapes, no
//! memory and no arithmetic), and the ranges a path must lie in.

use super::supernet::{Supernet, SupernetConfig};
use crate::autograd::Tape;
use crate::backend::counting::Counting;
use crate::error::{Error, Result};
use crate::nas::space::SearchSpace;
use crate::nas::Mode;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

/// Inclusive ranges a path's size must lie in (none: every path).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PathLimits {
    /// Weights the path uses (`Supernet::path_weights`).
    #[serde(default)]
    pub params: Option<(u64, u64)>,
    /// Forward FLOPs of one image through the path, as `nasrs model` counts them.
    #[serde(default)]
    pub flops: Option<(u64, u64)>,
}

impl PathLimits {
    pub fn is_empty(&self) -> bool {
        self.params.is_none() && self.flops.is_none()
    }

    /// The range of two optional bounds (`None` when both are unset), checked ordered.
    pub fn range(
        min: Option<u64>,
        max: Option<u64>,
        min_flag: &str,
        max_flag: &str,
    ) -> Result<Option<(u64, u64)>> {
        match (min, max) {
            (None, None) => Ok(None),
            (lo, hi) => {
                let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(u64::MAX));
                if lo > hi {
                    return Err(Error::invalid(
                        min_flag,
                        format!("{lo} is above {max_flag} {hi}"),
                    ));
                }
                Ok(Some((lo, hi)))
            }
        }
    }
}

/// Each measured path's weight count and FLOPs.
type Measured<C> = HashMap<<<C as SupernetConfig>::Space as SearchSpace>::Arch, (u64, u64)>;

/// Measures paths of one supernet configuration and tells whether they lie in the limits.
/// Measurements are cached per path (the evolution meets paths again).
pub struct PathMeter<C: SupernetConfig> {
    limits: PathLimits,
    be: Counting,
    twin: RefCell<C::Net<Counting>>,
    /// Images of one forward: channels, height, width.
    image: (usize, usize, usize),
    cache: RefCell<Measured<C>>,
}

impl<C: SupernetConfig> PathMeter<C> {
    /// A meter for `config`'s supernet on `h x w` images.
    pub fn new(config: &C, limits: PathLimits, h: usize, w: usize) -> Result<Self> {
        let be = Counting::new();
        let twin = config.build(&be, 0)?;
        Ok(PathMeter {
            limits,
            be,
            twin: RefCell::new(twin),
            image: (config.in_channels(), h, w),
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// The path's weight count and the forward FLOPs of one image through it.
    pub fn measure(&self, path: &<C::Space as SearchSpace>::Arch) -> Result<(u64, u64)> {
        if let Some(&m) = self.cache.borrow().get(path) {
            return Ok(m);
        }
        let mut twin = self
            .twin
            .try_borrow_mut()
            .map_err(|_| Error::invalid("path meter", "measured re-entrantly"))?;
        let params = twin.path_weights(path)? as u64;
        let (c, h, w) = self.image;
        self.be.reset()?;
        let mut tape = Tape::new(self.be.clone());
        tape.set_grad_enabled(false);
        let x = tape.constant(Tensor::zeros(&self.be, Shape::new(&[1, c, h, w]))?);
        twin.run_path(&mut tape, x, Mode::EVAL, path)?;
        drop(tape);
        let flops = self.be.snapshot()?.total.flops;
        self.cache
            .borrow_mut()
            .insert(path.clone(), (params, flops));
        Ok((params, flops))
    }

    /// Whether `path` lies in the limits (always, without any); a path that cannot be
    /// measured does not.
    pub fn accepts(&self, path: &<C::Space as SearchSpace>::Arch) -> bool {
        if self.limits.is_empty() {
            return true;
        }
        let Ok((params, flops)) = self.measure(path) else {
            return false;
        };
        let inside =
            |r: Option<(u64, u64)>, v: u64| r.is_none_or(|(lo, hi)| (lo..=hi).contains(&v));
        inside(self.limits.params, params) && inside(self.limits.flops, flops)
    }
}
