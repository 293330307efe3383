//! The evaluation network's PyTorch `state_dict`: writing it, loading it strictly (with a
//! key prefix such as DataParallel's `module.`, through `autograd::load_state_dict_strict`),
//! reading a network's shape off a bare one ([`infer_config`]) and checking a file's tensors
//! against the network its metadata claims ([`check_against_tensors`]).

use super::{EvalConfig, EvalNetwork, AUX_PREFIX, STEM_MULTIPLIER};
use crate::autograd::{load_state_dict_strict, StrictLoad};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::{HostTensor, HostTensorI64};
use crate::nas::genotype::Genotype;
use std::collections::BTreeMap;
use std::path::Path;

impl<B: Backend> EvalNetwork<B> {
    /// The PyTorch `state_dict`: weights and running statistics as f32, and each BN's
    /// `num_batches_tracked` as an i64 scalar.
    pub fn state_dict(
        &self,
        backend: &B,
    ) -> Result<(
        BTreeMap<String, HostTensor>,
        BTreeMap<String, HostTensorI64>,
    )> {
        let mut floats = BTreeMap::new();
        self.weights.export(backend, "", &mut floats)?;
        self.buffers.export(backend, "", &mut floats)?;
        let ints = self.buffers.bn_counters(self.bn_batches);
        Ok((floats, ints))
    }

    /// Loads a `state_dict` strictly: every weight and running statistic must be present
    /// with its shape, and nothing else may be (except `num_batches_tracked`, which may be
    /// missing as in checkpoints of older PyTorch, and names starting with one of
    /// `ignore_prefixes`, such as a checkpoint's optimizer state). Keys under a prefix
    /// (DataParallel's `module.`): [`Self::load_state_dict_prefixed`].
    pub fn load_state_dict(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        self.load_state_dict_prefixed(backend, tensors, "", ignore_prefixes, path)
    }

    /// [`Self::load_state_dict`] for a `state_dict` whose every key carries `prefix`, such
    /// as `module.` (`module.stem.0.weight`) in one PyTorch's `DataParallel` saved: the
    /// network's tensors and each BN's `num_batches_tracked` are read as `{prefix}{name}`,
    /// a key without the prefix is unknown (an error) unless it starts with one of
    /// `ignore_prefixes`, which match the whole key. `""` is [`Self::load_state_dict`].
    pub fn load_state_dict_prefixed(
        &mut self,
        backend: &B,
        tensors: &BTreeMap<String, HostTensor>,
        prefix: &str,
        ignore_prefixes: &[&str],
        path: &Path,
    ) -> Result<()> {
        let how = StrictLoad {
            prefix,
            ignore_prefixes,
            also_known: &[],
            network: "network",
            hint: "is it the same genotype, --channels, --layers and --auxiliary?",
            path,
        };
        let stores = &mut [&mut self.weights, &mut self.buffers];
        self.bn_batches = load_state_dict_strict(backend, stores, tensors, &how)?;
        Ok(())
    }
}

/// Reconstructs the shape of an evaluation network from a bare PyTorch `state_dict` (no
/// nasrs metadata): C from the stem (3C outputs), L from the highest cell index, classes and
/// input channels from the classifier and stem weights, the auxiliary head from its keys.
/// The genotype cannot be read off the weights and must be given.
pub fn infer_config(
    tensors: &BTreeMap<String, HostTensor>,
    genotype: Genotype,
    path: &Path,
) -> Result<EvalConfig> {
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| {
            Error::bad_file(
                path,
                format!("no {name}: not a DARTS evaluation network state_dict"),
            )
        })
    };
    let stem = get("stem.0.weight")?;
    let cls = get("classifier.weight")?;
    if stem.shape.len() != 4 || stem.shape[0] % STEM_MULTIPLIER != 0 || cls.shape.len() != 2 {
        return Err(Error::bad_file(
            path,
            format!(
                "stem.0.weight {:?} / classifier.weight {:?} are not a DARTS network's",
                stem.shape, cls.shape
            ),
        ));
    }
    let layers = cell_indices(tensors)
        .last()
        .map(|m| m + 1)
        .ok_or_else(|| Error::bad_file(path, "no cells.* tensors"))?;
    Ok(EvalConfig {
        genotype,
        channels: stem.shape[0] / STEM_MULTIPLIER,
        layers,
        classes: cls.shape[0],
        in_channels: stem.shape[1],
        auxiliary: tensors.keys().any(|k| k.starts_with(AUX_PREFIX)),
    })
}

/// The distinct `N` of the `cells.N.*` tensor names, ascending.
fn cell_indices(tensors: &BTreeMap<String, HostTensor>) -> Vec<usize> {
    let set: std::collections::BTreeSet<usize> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("cells."))
        .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
        .collect();
    set.into_iter().collect()
}

/// Checks the network `cfg` describes against the tensors of the file it came from, before
/// anything is allocated for it: cells `0..L` and nothing past them, the stem's `3C` outputs
/// and input channels, the classifier's classes. A file whose metadata or names claim a
/// network its tensors do not hold (`cells.99999999.*`, C = 1e9) is refused here, naming it.
pub fn check_against_tensors(
    cfg: &EvalConfig,
    tensors: &BTreeMap<String, HostTensor>,
    path: &Path,
) -> Result<()> {
    let cells = cell_indices(tensors);
    if cells.len() != cfg.layers || cells.iter().enumerate().any(|(i, &c)| i != c) {
        let shown: Vec<String> = cells.iter().take(8).map(|c| c.to_string()).collect();
        return Err(Error::bad_file(
            path,
            format!(
                "describes {} cells but holds tensors for cells {}{} ({} in all)",
                cfg.layers,
                shown.join(", "),
                if cells.len() > 8 { ", ..." } else { "" },
                cells.len()
            ),
        ));
    }
    let stem_out = cfg.channels.checked_mul(STEM_MULTIPLIER);
    let expect = [
        ("stem.0.weight", 0, stem_out, "3 x channels"),
        ("stem.0.weight", 1, Some(cfg.in_channels), "input channels"),
        ("classifier.weight", 0, Some(cfg.classes), "classes"),
    ];
    for (name, axis, want, what) in expect {
        let got = tensors.get(name).and_then(|t| t.shape.get(axis).copied());
        if got.is_none() || got != want {
            return Err(Error::bad_file(
                path,
                format!(
                    "{name} {} does not match the {what} the file describes (C={}, {} input \
                     channels, {} classes)",
                    tensors
                        .get(name)
                        .map_or("is missing".to_string(), |t| format!(
                            "has shape {:?}",
                            t.shape
                        )),
                    cfg.channels,
                    cfg.in_channels,
                    cfg.classes
                ),
            ));
        }
    }
    Ok(())
}
