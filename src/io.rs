//! Files nasrs writes and reads: atomic writes (temp file + rename, so a kill never leaves a
//! half-written checkpoint or result), the guard every output path passes (never over an
//! input, never over a file the command did not create without `--force`), and named f32
//! tensors in safetensors with a JSON metadata map (checkpoints, PyTorch interchange),
//! checked for non-finite values and negative variances on load.
//!
//! JSON floats round-trip exactly (serde_json's `float_roundtrip`): a resumed run reads back
//! the very metrics and options it wrote.

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors};
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
    let tmp: PathBuf = dir.join(temp_name(&file_name, std::process::id()));
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

/// The sibling a write of `file_name` goes through: `.<file_name>.<pid>.tmp`.
fn temp_name(file_name: &str, pid: u32) -> String {
    format!(".{file_name}.{pid}.tmp")
}

/// Removes the temp files a killed write of one of `files` left in `dir` (a live process's
/// are left alone: it may still be writing). Returns how many were removed.
pub fn remove_stale_temps(dir: &Path, files: &[&str]) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = files.iter().find_map(|f| {
            name.strip_prefix(&format!(".{f}."))?
                .strip_suffix(".tmp")?
                .parse::<u32>()
                .ok()
        }) else {
            continue;
        };
        let alive = pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// True when `a` and `b` name the same file (hard links and symlinks included); false when
/// either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Checks that the command may write `out` (given by `flag`): never over one of its
/// `inputs`, and over an existing file only with `force`.
pub fn check_output(out: &Path, flag: &str, inputs: &[&Path], force: bool) -> Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
        return Err(Error::invalid(
            flag,
            format!(
                "{} is the input {}; writing it would destroy it, choose another file",
                out.display(),
                input.display()
            ),
        ));
    }
    if out.is_dir() {
        return Err(Error::invalid(
            flag,
            format!("{} is a folder; give a file name", out.display()),
        ));
    }
    if out.exists() && !force {
        return Err(Error::invalid(
            flag,
            format!(
                "{} already exists; pass --force to replace it, or choose another file",
                out.display()
            ),
        ));
    }
    Ok(())
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
    // 8-byte elements first (each map sorted by name): with the header padded to 8 bytes,
    // every tensor stays aligned.
    let entries: Vec<(&String, Dtype, &[usize], &[u8])> = ints
        .iter()
        .map(|(name, t)| {
            (
                name,
                Dtype::I64,
                &t.shape[..],
                bytemuck::cast_slice(&t.data),
            )
        })
        .chain(tensors.iter().map(|(name, t)| {
            (
                name,
                Dtype::F32,
                &t.shape[..],
                bytemuck::cast_slice(&t.data),
            )
        }))
        .collect();
    let bytes = serialize_sorted(&entries, &metadata)
        .map_err(|detail| Error::invalid(path.display().to_string(), detail))?;
    atomic_write(path, &bytes)
}

/// The safetensors encoding of `entries` (in that order) with a header whose keys are
/// sorted: the same tensors and metadata always give the same bytes (`safetensors::serialize`
/// writes the metadata map in hash order, which differs from one process to the next).
fn serialize_sorted(
    entries: &[(&String, Dtype, &[usize], &[u8])],
    metadata: &HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    use serde_json::{json, Map, Value};
    let mut header = Map::new(); // a BTreeMap: keys sorted
    if !metadata.is_empty() {
        let sorted: BTreeMap<_, _> = metadata.iter().collect();
        header.insert("__metadata__".into(), json!(sorted));
    }
    let mut offset = 0usize;
    for &(name, dtype, shape, data) in entries {
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor {name}: shape {shape:?} overflows"))?;
        if numel.checked_mul(dtype.bitsize() / 8) != Some(data.len()) {
            return Err(format!(
                "tensor {name}: shape {shape:?} does not match its {} bytes",
                data.len()
            ));
        }
        if name == "__metadata__" || header.contains_key(name.as_str()) {
            return Err(format!("tensor name {name} is used twice or reserved"));
        }
        let dtype = match dtype {
            Dtype::I64 => "I64",
            _ => "F32",
        };
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for &(_, _, _, data) in entries {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Loads every tensor and the metadata of a safetensors file, as f32. Conversions are explicit
/// and never lose a value silently: F32 as is; F16 and BF16 widened (exact); F64 rounded to
/// the nearest f32 (PyTorch's `.float()`), a value beyond f32's range refused; I64 (PyTorch's
/// `num_batches_tracked` counters) converted only where f32 holds it exactly (|v| <= 2^24).
/// Other dtypes are refused. Every refusal names the file, the tensor and the value.
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
        let le8 = |c: &[u8]| -> [u8; 8] { c.try_into().unwrap_or([0; 8]) };
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => {
                let wide: Vec<f64> = raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(le8(c)))
                    .collect();
                if let Some((i, v)) = wide
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.is_finite() && v.abs() > f32::MAX as f64)
                {
                    return Err(bad(format!(
                        "tensor {name} (F64) holds {v:e} at element {i}, beyond f32's range"
                    )));
                }
                wide.into_iter().map(|v| v as f32).collect()
            }
            Dtype::I64 => {
                const EXACT: i64 = 1 << 24;
                let ints: Vec<i64> = raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(le8(c)))
                    .collect();
                if let Some((i, v)) = ints.iter().enumerate().find(|(_, v)| v.abs() > EXACT) {
                    return Err(bad(format!(
                        "tensor {name} (I64) holds {v} at element {i}, which f32 cannot hold \
                         exactly (|v| > 2^24)"
                    )));
                }
                ints.into_iter().map(|v| v as f32).collect()
            }
            other => {
                return Err(bad(format!(
                    "tensor {name} has dtype {other:?}; expected F32, F16, BF16, F64 or I64"
                )))
            }
        };
        check_values(path, &name, &data)?;
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

/// A checkpoint never holds a NaN or an infinity (a run stops before saving one), nor a
/// negative batch-norm running variance: either means the file is damaged or not what it
/// claims, and loading it would hide the fault until it surfaces as a NaN far away.
fn check_values(path: &Path, name: &str, data: &[f32]) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_file(
            path,
            format!("tensor {name} holds {} at element {i}", data[i]),
        ));
    }
    if name.ends_with("running_var") {
        if let Some(i) = data.iter().position(|&v| v < 0.0) {
            return Err(Error::bad_file(
                path,
                format!(
                    "tensor {name} holds the negative variance {} at element {i}",
                    data[i]
                ),
            ));
        }
    }
    Ok(())
}

/// Appends `row` as one JSON line to `path` (created if absent) and fsyncs it before
/// returning: a journal whose every line, once written, survives a `kill -9` or a crash. A
/// reader drops a torn last line (a kill in the middle of a write).
pub fn append_jsonl<T: serde::Serialize>(path: &Path, row: &T) -> Result<()> {
    let mut line = serde_json::to_string(row)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    line.push('\n');
    let append = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    };
    append().map_err(|e| Error::io(path, e))
}

/// The rows of a journal written by [`append_jsonl`], each with its 1-based line number. A
/// torn last line (a kill in the middle of its append: no newline after it) that does not
/// parse never happened: it is skipped and cut from the file; one that parses lacks only its
/// newline, which is added; either way appends start on a line of their own. Any other line
/// that does not parse is an error naming the file and the line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let torn = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut rows = Vec::with_capacity(lines.len());
    let mut last_parsed = true;
    for (k, &(i, line)) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(row) => rows.push((i + 1, row)),
            Err(_) if torn && k + 1 == lines.len() => last_parsed = false,
            Err(e) => return Err(Error::bad_file(path, format!("line {}: {e}", i + 1))),
        }
    }
    if torn && last_parsed {
        atomic_write(path, format!("{text}\n").as_bytes())?;
    } else if torn {
        let keep = text.rfind('\n').map_or(0, |p| p + 1);
        atomic_write(path, &text.as_bytes()[..keep])?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("nasrs-io-{}-{name}.jsonl", std::process::id()));
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_torn_last_line_is_cut_or_completed() {
        let p = journal("cut", "{\"a\":1}\n{\"a\":2}\n{\"a\":");
        let rows: Vec<(usize, serde_json::Value)> = read_jsonl(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        let p = journal("complete", "{\"a\":1}\n{\"a\":2}");
        let rows: Vec<(usize, serde_json::Value)> = read_jsonl(&p).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        let p = journal("bad", "{\"a\":1}\nnot json\n{\"a\":3}\n");
        let err = read_jsonl::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
