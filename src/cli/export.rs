//! `nasrs export onnx`: a trained network (either space) as an ONNX model for deployment
//! (`nasrs::nas::onnx` builds it). The output is checked before anything is read (never over
//! the checkpoint, never over an existing file without `--force`) and written atomically, so
//! a refused or failed export leaves no file and an existing one untouched.

use clap::{Args, Subcommand};
use nasrs::nas::eval_model::resolve_genotype;
use nasrs::nas::onnx::{self, BatchDim, ExportOptions};
use nasrs::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ExportCommand {
    /// The eval-mode inference graph as ONNX: input `images` float32 [batch, C, H, W]
    /// (normalised as the training data), output `logits` float32 [batch, classes]; batch
    /// norm as BatchNormalization, no auxiliary head, no drop-path. The model's metadata
    /// records the nasrs version, the network kind, the genotype (nasrs.genotype) or NB201
    /// arch (nasrs.arch), the network (nasrs.model) and the dataset and its normalisation.
    Onnx(OnnxArgs),
}

#[derive(Args)]
pub struct OnnxArgs {
    /// model.safetensors or checkpoint.safetensors of `nasrs train` (either space), or a
    /// PyTorch DARTS state_dict in safetensors (with --genotype).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The genotype, for checkpoints without nasrs metadata (PyTorch state_dicts).
    #[arg(long)]
    genotype: Option<String>,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// Batch size of the model's input and output: N, or `dynamic` (a symbolic `batch`).
    #[arg(long, default_value = "1")]
    batch: String,
    /// ONNX opset (13 to 21).
    #[arg(long, default_value_t = onnx::DEFAULT_OPSET)]
    opset: i64,
    /// Input image size, N or HxW (default: the size of the dataset the checkpoint names).
    #[arg(long)]
    image_size: Option<String>,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
}

pub fn export(cmd: ExportCommand) -> Result<()> {
    match cmd {
        ExportCommand::Onnx(a) => export_onnx(a),
    }
}

fn export_onnx(a: OnnxArgs) -> Result<()> {
    let opts = ExportOptions {
        batch: a.batch.parse::<BatchDim>()?,
        image_size: a.image_size.as_deref().map(parse_image_size).transpose()?,
        opset: a.opset,
    };
    let mut inputs: Vec<&Path> = vec![&a.checkpoint];
    inputs.extend(a.genotype.as_deref().map(Path::new));
    nasrs::io::check_output(&a.out, "--out", &inputs, a.force)?;
    let genotype = a.genotype.as_deref().map(resolve_genotype).transpose()?;
    let exported = onnx::export_checkpoint(&a.checkpoint, genotype, &opts)?;
    let bytes = onnx::write_model(&exported.model, &a.out)?;
    out!(
        "{}: {} network ({}), opset {}, {} parameters and BN statistics, {:.1} MB",
        a.out.display(),
        exported.network,
        exported.describe,
        a.opset,
        exported.elements,
        bytes as f64 / 1e6
    );
    out!(
        "  input  {} float32 [{}]",
        onnx::INPUT,
        exported.input_shape.join(", ")
    );
    out!(
        "  output {} float32 [{}]",
        onnx::OUTPUT,
        exported.output_shape.join(", ")
    );
    Ok(())
}

/// `N` (square) or `HxW`, each at least 1.
fn parse_image_size(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::invalid(
            "--image-size",
            format!("'{s}' is not N or HxW (e.g. 32 or 28x28)"),
        )
    };
    let side = |t: &str| match t.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(bad()),
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((side(h)?, side(w)?)),
        None => {
            let n = side(s)?;
            Ok((n, n))
        }
    }
}
