//! A trained classifier network read back and measured: `model.safetensors`, training
//! checkpoints and bare PyTorch DARTS `state_dict`s loaded (checked against their own
//! tensors before anything is built), eval-mode logits, and the test-set report (loss,
//! accuracy, per-class accuracy, confusion matrix). Files name the space of the network they
//! hold ([`SPACE_META`]); [`load_any_network`] opens either kind.

use super::classifier::{Classifier, NetworkConfig};
use super::darts::DeviceBatch;
use super::eval_model::{infer_config, EvalConfig, EvalNetwork};
use super::genotype::Genotype;
use super::mbconv_model::{MbConvConfig, MbConvNetwork};
use super::modules::Mode;
use super::nb201_model::{Nb201Config, Nb201Network};
use crate::autograd::Tape;
use crate::backend::Backend;
use crate::data::{Dataset, SequentialBatches};
use crate::error::{Error, Result};
use crate::io::{load_safetensors, save_safetensors_with_i64, HostTensor};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Metadata key of the network description (genotype, sizes, dataset).
pub const MODEL_META: &str = "nasrs.model";
/// Metadata key of a search checkpoint (`search_run`), refused here by name.
const SEARCH_META: &str = "nasrs.search";
/// Metadata key naming the space of the network a file holds (`nb201`); absent in DARTS
/// files (every file before NB201 networks existed), whose bytes it leaves unchanged.
pub const SPACE_META: &str = "nasrs.space";
/// The space of a file without [`SPACE_META`].
const DEFAULT_SPACE: &str = "darts";
/// Name prefix of the SGD momentum buffers a training checkpoint adds to the state_dict.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum_buffer.";

/// The space of the network a file's metadata describes (`darts` when it does not say).
pub fn file_space(metadata: &HashMap<String, String>) -> &str {
    metadata
        .get(SPACE_META)
        .map_or(DEFAULT_SPACE, String::as_str)
}

/// What `model.safetensors` and checkpoints say about the network they hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta<M = EvalConfig> {
    pub model: M,
    /// The dataset it was trained on (`cifar10`, `mnist`, ...), if known.
    pub dataset: Option<String>,
    /// The side its images were resized to (`nasrs train --resolution`); evaluation
    /// resizes the test images the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<usize>,
}

/// Test-set results: loss, accuracy, per-class accuracy and the confusion matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub count: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[true][predicted]` = number of samples.
    pub confusion: Vec<Vec<usize>>,
}

impl EvalReport {
    /// Accuracy per true class (None for a class without samples).
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect()
    }
}

/// Eval-mode (running statistics, no gradients) logits of one batch.
pub fn eval_logits<B: Backend, N: Classifier<B>>(
    backend: &B,
    net: &mut N,
    images: &Tensor<B>,
) -> Result<Vec<f64>> {
    let mut tape = Tape::new(backend.clone());
    tape.set_grad_enabled(false);
    let x = tape.constant(images.clone());
    let (logits, _) = net.run(&mut tape, x, Mode::EVAL, 0.0, &mut Rng::new(0))?;
    tape.value(logits)?.to_f64(backend)
}

/// Evaluates `net` on every sample of `ds` in eval mode.
pub fn evaluate<B: Backend, N: Classifier<B>>(
    backend: &B,
    net: &mut N,
    ds: &Dataset,
    batch: usize,
) -> Result<EvalReport> {
    let k = net.config().classes();
    if ds.classes > k {
        return Err(Error::invalid(
            "dataset",
            format!(
                "{} has {} classes but the network has {k} outputs",
                ds.name, ds.classes
            ),
        ));
    }
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut loss_sum, mut count) = (0.0, 0usize);
    for b in SequentialBatches::new(ds, batch)? {
        let db = DeviceBatch::from_batch(backend, &b, k)?;
        let logits = eval_logits(backend, net, &db.images)?;
        for (i, &label) in b.labels.iter().enumerate() {
            let row = &logits[i * k..(i + 1) * k];
            let best = (0..k).fold(0, |m, j| if row[j] > row[m] { j } else { m });
            let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
            loss_sum += lse - row[label as usize];
            confusion[label as usize][best] += 1;
        }
        count += b.n;
    }
    if !loss_sum.is_finite() {
        return Err(Error::NonFinite(format!("test loss is {loss_sum}")));
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    Ok(EvalReport {
        count,
        loss: loss_sum / count.max(1) as f64,
        accuracy: correct as f64 / count.max(1) as f64,
        confusion,
    })
}

/// Writes the network's `state_dict` (plus `extra` f32 tensors) with its description, its
/// space (unless DARTS) and `extra_meta`, atomically.
pub fn save_network<B: Backend, N: Classifier<B>>(
    backend: &B,
    net: &N,
    dataset: Option<&str>,
    path: &Path,
    extra: BTreeMap<String, HostTensor>,
    extra_meta: HashMap<String, String>,
) -> Result<()> {
    save_network_at(backend, net, (dataset, None), path, extra, extra_meta)
}

/// [`save_network`] of a network trained on images resized to `resolution`.
pub fn save_network_at<B: Backend, N: Classifier<B>>(
    backend: &B,
    net: &N,
    (dataset, resolution): (Option<&str>, Option<usize>),
    path: &Path,
    extra: BTreeMap<String, HostTensor>,
    extra_meta: HashMap<String, String>,
) -> Result<()> {
    let (mut floats, ints) = net.state_dict(backend)?;
    floats.extend(extra);
    let meta = ModelMeta {
        model: net.config().clone(),
        dataset: dataset.map(str::to_string),
        resolution,
    };
    let mut metadata = extra_meta;
    let space = <N::Config as NetworkConfig>::SPACE;
    if space != DEFAULT_SPACE {
        metadata.insert(SPACE_META.to_string(), space.to_string());
    }
    metadata.insert(
        MODEL_META.to_string(),
        serde_json::to_string(&meta)
            .map_err(|e| Error::invalid("model metadata", e.to_string()))?,
    );
    save_safetensors_with_i64(path, &floats, &ints, metadata)
}

/// Loads a DARTS evaluation network from `model.safetensors`, a training checkpoint, or a
/// PyTorch DARTS `state_dict` saved as safetensors. With nasrs metadata the file says what
/// it holds (`genotype` overrides its genotype); without, the shape is read off the weights
/// and `genotype` must be given. A file of another space is refused, naming it
/// ([`load_any_network`] opens any).
pub fn load_network<B: Backend>(
    backend: &B,
    path: &Path,
    genotype: Option<Genotype>,
) -> Result<(EvalNetwork<B>, ModelMeta)> {
    let (tensors, metadata) = load_safetensors(path)?;
    load_darts(backend, path, tensors, &metadata, genotype)
}

/// A network of any space, as [`load_any_network`] read it.
pub enum LoadedNetwork<B: Backend> {
    Darts(Box<EvalNetwork<B>>, ModelMeta<EvalConfig>),
    Nb201(Box<Nb201Network<B>>, ModelMeta<Nb201Config>),
    MbConv(Box<MbConvNetwork<B>>, ModelMeta<MbConvConfig>),
}

/// Loads the network a file holds, whichever space its metadata names: an NB201 or MBConv
/// network (nasrs files only) or a DARTS one ([`load_network`]'s rules; `genotype` applies to these).
pub fn load_any_network<B: Backend>(
    backend: &B,
    path: &Path,
    genotype: Option<Genotype>,
) -> Result<LoadedNetwork<B>> {
    let (tensors, metadata) = load_safetensors(path)?;
    match file_space(&metadata) {
        DEFAULT_SPACE => {
            let (net, meta) = load_darts(backend, path, tensors, &metadata, genotype)?;
            Ok(LoadedNetwork::Darts(Box::new(net), meta))
        }
        space if space == Nb201Config::SPACE => {
            if genotype.is_some() {
                return Err(Error::invalid(
                    "--genotype",
                    format!(
                        "{} holds an NB201 network, whose cell its metadata names; drop --genotype",
                        path.display()
                    ),
                ));
            }
            let (net, meta) = load_model::<B, Nb201Config>(backend, path, &tensors, &metadata)?;
            Ok(LoadedNetwork::Nb201(Box::new(net), meta))
        }
        space if space == MbConvConfig::SPACE => {
            if genotype.is_some() {
                return Err(Error::invalid(
                    "--genotype",
                    format!(
                        "{} holds an MBConv network, whose architecture its metadata names; \
                         drop --genotype",
                        path.display()
                    ),
                ));
            }
            let (net, meta) = load_model::<B, MbConvConfig>(backend, path, &tensors, &metadata)?;
            Ok(LoadedNetwork::MbConv(Box::new(net), meta))
        }
        other => Err(Error::bad_file(
            path,
            format!("holds a network of the space '{other}', which this nasrs does not know"),
        )),
    }
}

/// Loads a network of space `M` from a file nasrs wrote (its [`MODEL_META`] describes it),
/// checking the file's space and its tensors against the description before building.
pub fn load_model<B: Backend, M: NetworkConfig>(
    backend: &B,
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: &HashMap<String, String>,
) -> Result<(M::Network<B>, ModelMeta<M>)> {
    let space = file_space(metadata);
    if space != M::SPACE {
        return Err(Error::bad_file(
            path,
            format!("holds a {space} network, not a {} one", M::SPACE),
        ));
    }
    let json = metadata.get(MODEL_META).ok_or_else(|| {
        Error::bad_file(
            path,
            format!("no {MODEL_META} metadata: not a nasrs network"),
        )
    })?;
    let meta: ModelMeta<M> = serde_json::from_str(json)
        .map_err(|e| Error::bad_file(path, format!("bad {MODEL_META} metadata: {e}")))?;
    let net = build_checked(backend, path, tensors, &meta.model)?;
    Ok((net, meta))
}

/// Validates the file's own description as the file's (a bad size in its metadata names
/// the file, not a flag the user never gave), checks it against the tensors, then builds
/// the network and loads them.
fn build_checked<B: Backend, M: NetworkConfig>(
    backend: &B,
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    model: &M,
) -> Result<M::Network<B>> {
    model
        .validate()
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    model.check_against_tensors(tensors, path)?;
    let mut net = model.build(backend, 0)?;
    net.load_state_dict(backend, tensors, &[MOMENTUM_PREFIX], path)?;
    Ok(net)
}

fn load_darts<B: Backend>(
    backend: &B,
    path: &Path,
    tensors: BTreeMap<String, HostTensor>,
    metadata: &HashMap<String, String>,
    genotype: Option<Genotype>,
) -> Result<(EvalNetwork<B>, ModelMeta)> {
    let space = file_space(metadata);
    if space != DEFAULT_SPACE {
        return Err(Error::bad_file(
            path,
            format!("holds a {space} network, not a DARTS evaluation network"),
        ));
    }
    let meta = match metadata.get(MODEL_META) {
        Some(json) => {
            let mut m: ModelMeta = serde_json::from_str(json)
                .map_err(|e| Error::bad_file(path, format!("bad {MODEL_META} metadata: {e}")))?;
            if let Some(g) = genotype {
                m.model.genotype = g;
            }
            m
        }
        None if metadata.contains_key(SEARCH_META) => {
            return Err(Error::bad_file(
                path,
                "is a search checkpoint (the DARTS supernet, not a trained network); train \
                 the cell it found first: nasrs train --genotype <its run folder>/genotype.json",
            ))
        }
        None => {
            let g = genotype.ok_or_else(|| {
                Error::invalid(
                    "--genotype",
                    format!(
                        "{} has no nasrs metadata (a PyTorch state_dict?); say which genotype it is",
                        path.display()
                    ),
                )
            })?;
            ModelMeta {
                model: infer_config(&tensors, g, path)?,
                dataset: None,
                resolution: None,
            }
        }
    };
    let net = build_checked(backend, path, &tensors, &meta.model)?;
    Ok((net, meta))
}
