//! Files nasrs writes and reads: atomic writes (temp file + rename, so a kill never leaves a
//! half-written checkpoint or result), and named f32 tensors in safetensors with a JSON
//! metadata map (checkpoints, PyTorch interchange).

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a sibling temp file, fsync, then rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp: PathBuf = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

pub fn atomic_write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    atomic_write(path, format!("{text}\n").as_bytes())
}

/// Writes one JSON object per line (`metrics.jsonl`), atomically.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        text += &serde_json::to_string(row)
            .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
        text.push('\n');
    }
    atomic_write(path, text.as_bytes())
}

/// The JSON record a nasrs checkpoint keeps under metadata `key`; `kind` names the checkpoint
/// kind ("search", "training") in the error when it is missing.
pub fn read_json_meta<M: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
    kind: &str,
    path: &Path,
) -> Result<M> {
    let json = meta.get(key).ok_or_else(|| {
        Error::bad_file(
            path,
            format!("not a nasrs {kind} checkpoint (no {key} metadata)"),
        )
    })?;
    serde_json::from_str(json).map_err(|e| Error::bad_file(path, format!("bad metadata: {e}")))
}

/// `--resume` continues a run only with the options it was checkpointed with (`path`).
pub fn check_resume_options<C: PartialEq>(checkpointed: &C, asked: &C, path: &Path) -> Result<()> {
    if checkpointed != asked {
        return Err(Error::invalid(
            "--resume",
            format!("the options differ from the checkpointed run in {}; use the same options (see its config.json)", path.display()),
        ));
    }
    Ok(())
}

pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// A named f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A named i64 tensor on the host (PyTorch's `num_batches_tracked` counters).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensorI64 {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// Saves `tensors` (sorted by name) and `metadata` to a safetensors file, atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    save_safetensors_with_i64(path, tensors, &BTreeMap::new(), metadata)
}

/// `save_safetensors` plus I64 tensors (`ints`), whose names must differ from the f32 ones.
pub fn save_safetensors_with_i64(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    ints: &BTreeMap<String, HostTensorI64>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    if let Some(name) = ints.keys().find(|k| tensors.contains_key(*k)) {
        return Err(Error::invalid(
            format!("tensor {name}"),
            "given both as f32 and as i64",
        ));
    }
    let view = |name: &String, dtype, shape: &[usize], bytes| {
        TensorView::new(dtype, shape.to_vec(), bytes)
            .map(|v| (name.clone(), v))
            .map_err(|e| Error::invalid(format!("tensor {name}"), e.to_string()))
    };
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| view(name, Dtype::F32, &t.shape, bytemuck::cast_slice(&t.data)))
        .chain(
            ints.iter()
                .map(|(name, t)| view(name, Dtype::I64, &t.shape, bytemuck::cast_slice(&t.data))),
        )
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    atomic_write(path, &bytes)
}

/// Loads every tensor (F32, or F64 / I64 converted to f32) and the metadata of a safetensors file.
pub fn load_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let bytes = read_file(path)?;
    let bad = |detail: String| Error::bad_file(path, detail);
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("unreadable header: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => {
                return Err(bad(format!(
                    "tensor {name} has dtype {other:?}; expected F32, F64 or I64"
                )))
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}
