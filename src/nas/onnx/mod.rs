//! ONNX export of a trained network, for deployment stacks (ONNX Runtime, TensorRT,
//! OpenVINO, TVM, tract): the eval-mode inference graph of the DARTS evaluation network
//! ([`darts`]) or the NAS-Bench-201 network ([`nb201`]), built over the network's own
//! `state_dict` by [`graph::GraphBuilder`] and encoded with the message types generated from
//! the official `onnx.proto` ([`proto`]).
//!
//! The model has one input, [`INPUT`] (`images`, float32 `[batch, C, H, W]`, normalised as
//! the training data was), and one output, [`OUTPUT`] (`logits`, float32 `[batch, classes]`,
//! before softmax); `batch` is a number or the symbolic dimension `batch`. Its metadata
//! ([`META_VERSION`] and the other `META_*` keys) names the nasrs version, the network kind,
//! the genotype or NB201 arch string, the full network description and, where the checkpoint
//! says, the dataset and its input normalisation. Batch norm is exported as
//! `BatchNormalization` (exact); the auxiliary head and drop-path, training-only, are not.
//!
//! This file owns the options, the model around the graph (inputs, outputs, opset, metadata)
//! and reading a checkpoint to export; [`write_model`] writes a file atomically.

pub mod darts;
pub mod graph;
pub mod nb201;
pub mod proto;

use super::classifier::{Classifier, NetworkConfig};
use super::evaluate::{load_any_network, LoadedNetwork};
use super::genotype::Genotype;
use crate::backend::cpu::Cpu;
use crate::data::{DatasetKind, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN};
use crate::data::{FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD};
use crate::error::{Error, Result};
use graph::GraphBuilder;
use prost::Message;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{dimension, Dimension};
use proto::{type_proto, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use proto::{TensorShapeProto, TypeProto, ValueInfoProto};
use std::path::Path;

/// The model's input: float32 images `[batch, C, H, W]`.
pub const INPUT: &str = "images";
/// The model's output: float32 logits `[batch, classes]`.
pub const OUTPUT: &str = "logits";
/// The symbolic batch dimension of a `--batch dynamic` model.
pub const BATCH_DIM: &str = "batch";
/// The opsets a model can be written for (every operator used is unchanged across them).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;
pub const DEFAULT_OPSET: i64 = 17;

/// Metadata keys of the exported model.
pub const META_VERSION: &str = "nasrs.version";
pub const META_NETWORK: &str = "nasrs.network";
pub const META_GENOTYPE: &str = "nasrs.genotype";
pub const META_ARCH: &str = "nasrs.arch";
pub const META_MODEL: &str = "nasrs.model";
pub const META_DATASET: &str = "nasrs.dataset";
pub const META_INPUT: &str = "nasrs.input";

/// The batch dimension of the model's input and output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BatchDim {
    Fixed(usize),
    /// The symbolic dimension [`BATCH_DIM`].
    Dynamic,
}

impl std::str::FromStr for BatchDim {
    type Err = Error;
    /// `N` (at least 1) or `dynamic`.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("dynamic") {
            return Ok(BatchDim::Dynamic);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(BatchDim::Fixed(n)),
            _ => Err(Error::invalid(
                "--batch",
                format!("'{s}' is neither a batch size of at least 1 nor 'dynamic'"),
            )),
        }
    }
}

/// How to export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOptions {
    pub batch: BatchDim,
    /// `H x W` of the input images; None: the size of the dataset the checkpoint names.
    pub image_size: Option<(usize, usize)>,
    /// The ONNX opset, one of [`OPSETS`].
    pub opset: i64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            batch: BatchDim::Fixed(1),
            image_size: None,
            opset: DEFAULT_OPSET,
        }
    }
}

/// An exported model and what it is, for a summary.
pub struct Exported {
    pub model: ModelProto,
    /// `darts-eval` or `nb201`.
    pub network: &'static str,
    /// The network's sizes in one phrase (`C=36 L=20`).
    pub describe: String,
    pub input_shape: Vec<String>,
    pub output_shape: Vec<String>,
    /// Parameters and BN statistics the graph holds (the auxiliary head's are left out).
    pub elements: usize,
}

/// Exports the network a checkpoint holds (`model.safetensors` or `checkpoint.safetensors`
/// of `nasrs train`, either space, or a PyTorch DARTS `state_dict` with `genotype`): read
/// and checked as `nasrs eval` reads it, then [`export`]ed.
pub fn export_checkpoint(
    path: &Path,
    genotype: Option<Genotype>,
    opts: &ExportOptions,
) -> Result<Exported> {
    let cpu = Cpu::new();
    let source = path.display().to_string();
    match load_any_network(&cpu, path, genotype)? {
        LoadedNetwork::Darts(net, meta) => {
            export(&cpu, &*net, meta.dataset.as_deref(), opts, &source)
        }
        LoadedNetwork::Nb201(net, meta) => {
            export(&cpu, &*net, meta.dataset.as_deref(), opts, &source)
        }
        LoadedNetwork::MbConv(..) => Err(Error::invalid(
            source,
            "is an MBConv network; ONNX export covers the DARTS and NB201 networks only",
        )),
    }
}

/// The network kinds nasrs can export.
pub trait Exportable: NetworkConfig {
    /// The `nasrs.network` metadata value.
    const NETWORK: &'static str;
    /// Adds the network's nodes reading [`INPUT`] and returns the logits.
    fn build_graph(&self, g: &mut GraphBuilder) -> Result<graph::Value>;
    /// The cell, as metadata: (key, value).
    fn cell_meta(&self) -> (&'static str, String);
    /// Checks that `h x w` images pass the inference graph.
    fn check_inference_size(&self, h: usize, w: usize) -> Result<()> {
        self.check_image_size(h, w)
    }
}

impl Exportable for super::eval_model::EvalConfig {
    const NETWORK: &'static str = "darts-eval";
    fn build_graph(&self, g: &mut GraphBuilder) -> Result<graph::Value> {
        darts::build(g, self, INPUT)
    }
    fn cell_meta(&self) -> (&'static str, String) {
        (META_GENOTYPE, self.genotype.to_json())
    }
    /// The auxiliary head's 32x32 requirement does not apply: the graph leaves it out.
    fn check_inference_size(&self, h: usize, w: usize) -> Result<()> {
        let without_head = super::eval_model::EvalConfig {
            auxiliary: false,
            ..self.clone()
        };
        without_head.check_image_size(h, w)
    }
}

impl Exportable for super::nb201_model::Nb201Config {
    const NETWORK: &'static str = "nb201";
    fn build_graph(&self, g: &mut GraphBuilder) -> Result<graph::Value> {
        nb201::build(g, self, INPUT)
    }
    fn cell_meta(&self) -> (&'static str, String) {
        (META_ARCH, self.arch.to_arch_string())
    }
}

/// Exports `net` (trained on `dataset`, if known; `source` names it in messages).
pub fn export<B, N>(
    backend: &B,
    net: &N,
    dataset: Option<&str>,
    opts: &ExportOptions,
    source: &str,
) -> Result<Exported>
where
    B: crate::backend::Backend,
    N: Classifier<B>,
    N::Config: Exportable,
{
    if !OPSETS.contains(&opts.opset) {
        return Err(Error::invalid(
            "--opset",
            format!(
                "{} is not supported; nasrs writes opsets {} to {}",
                opts.opset,
                OPSETS.start(),
                OPSETS.end()
            ),
        ));
    }
    let cfg = net.config();
    let kind = dataset.and_then(|d| d.parse::<DatasetKind>().ok());
    let (h, w) = match (opts.image_size, kind) {
        (Some(hw), _) => hw,
        (None, Some(k)) => image_size(k),
        (None, None) => {
            return Err(Error::invalid(
                "--image-size",
                format!("{source} does not say which dataset it was trained on; pass --image-size"),
            ))
        }
    };
    cfg.check_inference_size(h, w)
        .map_err(|e| Error::invalid("--image-size", e.to_string()))?;
    let (tensors, _counters) = net.state_dict(backend)?;
    let mut g = GraphBuilder::new(&tensors, source);
    let logits = cfg.build_graph(&mut g)?;
    debug_assert_eq!(logits, OUTPUT);
    let batch = match opts.batch {
        BatchDim::Fixed(n) => Dim::Value(n),
        BatchDim::Dynamic => Dim::Param(BATCH_DIM),
    };
    let input = [
        batch,
        Dim::Value(cfg.in_channels()),
        Dim::Value(h),
        Dim::Value(w),
    ];
    let output = [batch, Dim::Value(cfg.classes())];
    let elements = g.exported_elements();
    let mut meta = vec![
        (META_VERSION, env!("CARGO_PKG_VERSION").to_string()),
        (META_NETWORK, N::Config::NETWORK.to_string()),
        cfg.cell_meta(),
        (
            META_MODEL,
            serde_json::to_string(cfg).map_err(|e| Error::invalid("model", e.to_string()))?,
        ),
    ];
    if let Some(d) = dataset {
        meta.push((META_DATASET, d.to_string()));
    }
    if let Some(n) = kind.and_then(normalisation) {
        meta.push((META_INPUT, n));
    }
    let graph = GraphProto {
        name: Some(format!("nasrs_{}", N::Config::NETWORK.replace('-', "_"))),
        node: std::mem::take(&mut g.nodes),
        initializer: std::mem::take(&mut g.initializers),
        input: vec![value_info(INPUT, &input)],
        output: vec![value_info(OUTPUT, &output)],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(ir_version(opts.opset)),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opts.opset),
        }],
        producer_name: Some("nasrs".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "{} network ({}) exported by nasrs in eval mode: input {INPUT} float32 {}, \
             output {OUTPUT} float32 {} (logits, before softmax)",
            N::Config::NETWORK,
            cfg.describe(),
            show(&input),
            show(&output)
        )),
        graph: Some(graph),
        metadata_props: meta
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            })
            .collect(),
        ..Default::default()
    };
    Ok(Exported {
        model,
        network: N::Config::NETWORK,
        describe: cfg.describe(),
        input_shape: input.iter().map(Dim::to_string).collect(),
        output_shape: output.iter().map(Dim::to_string).collect(),
        elements,
    })
}

/// Writes `model` to `path` atomically (a temp file renamed over it: a failed or killed
/// export leaves no partial file). Whether `path` may be written is the caller's check
/// (`io::check_output`).
pub fn write_model(model: &ModelProto, path: &Path) -> Result<u64> {
    let bytes = model.encode_to_vec();
    crate::io::atomic_write(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// The IR version each opset needs (ONNX's versioning table).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// The image size of a dataset nasrs reads.
fn image_size(kind: DatasetKind) -> (usize, usize) {
    match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => (28, 28),
        DatasetKind::Cifar10 | DatasetKind::Synthetic => (32, 32),
    }
}

/// How the input images are normalised, for the datasets with fixed constants.
fn normalisation(kind: DatasetKind) -> Option<String> {
    let (mean, std): (Vec<f32>, Vec<f32>) = match kind {
        DatasetKind::Cifar10 => (CIFAR10_MEAN.to_vec(), CIFAR10_STD.to_vec()),
        DatasetKind::Mnist => (vec![MNIST_MEAN], vec![MNIST_STD]),
        DatasetKind::FashionMnist => (vec![FASHION_MNIST_MEAN], vec![FASHION_MNIST_STD]),
        DatasetKind::Synthetic => return None,
    };
    Some(format!(
        "{INPUT}: NCHW float32, each channel (pixel / 255 - mean) / std with mean {mean:?} and \
         std {std:?}"
    ))
}

#[derive(Clone, Copy)]
enum Dim {
    Value(usize),
    Param(&'static str),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Value(n) => write!(f, "{n}"),
            Dim::Param(p) => f.write_str(p),
        }
    }
}

fn show(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match *d {
                Dim::Value(n) => dimension::Value::DimValue(n as i64),
                Dim::Param(p) => dimension::Value::DimParam(p.into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
