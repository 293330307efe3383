//! The IDX format of MNIST and Fashion-MNIST: a 4-byte magic (0, 0, type 0x08 = unsigned
//! byte, number of dimensions), one big-endian u32 per dimension, then the bytes row-major.
//! Files may be gzipped or not (detected from the content, not the name). Images are idx3
//! `[n, h, w]` (one channel) or idx4 `[n, c, h, w]`; labels are idx1 `[n]`.

use super::Dataset;
use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: usize = 10;

/// The IDX element-type code for unsigned bytes, the only type image and label files use.
const TYPE_U8: u8 = 0x08;

/// The contents of one IDX file of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Deflate cannot expand data more than about 1032:1, so a gzip file of `k` bytes holds at
/// most `k * MAX_GZIP_RATIO` bytes: a header claiming more is rejected before decompressing.
const MAX_GZIP_RATIO: usize = 1032;

/// Reads a whole file, gunzipping it if it starts with the gzip magic. The output is not
/// bounded (deflate expands up to ~1000x); IDX files go through `read_idx`, which is.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if is_gzip(&raw) {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::bad_file(path, gzip_error(e)))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn is_gzip(raw: &[u8]) -> bool {
    raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b
}

fn gzip_error(e: std::io::Error) -> String {
    format!("corrupt or truncated gzip data: {e}")
}

/// Parses an IDX file of unsigned bytes, checking that the data is exactly as long as the
/// header declares. A gzipped file is decompressed only as far as its header says it goes,
/// so a small hostile file cannot expand into gigabytes.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let parsed = if is_gzip(&raw) {
        gunzip_idx(&raw)
    } else {
        parse_idx(&raw)
    };
    parsed.map_err(|detail| Error::bad_file(path, detail))
}

/// Appends from `r` to `out` until `out` holds `len` bytes or the stream ends.
fn read_up_to(r: &mut impl Read, out: &mut Vec<u8>, len: usize) -> std::result::Result<(), String> {
    let want = len.saturating_sub(out.len()) as u64;
    r.take(want).read_to_end(out).map_err(gzip_error)?;
    Ok(())
}

fn gunzip_idx(raw: &[u8]) -> std::result::Result<IdxArray, String> {
    let mut dec = MultiGzDecoder::new(raw);
    let mut out = Vec::new();
    read_up_to(&mut dec, &mut out, 4)?;
    if out.len() == 4 {
        let header = 4 + 4 * out[3] as usize;
        read_up_to(&mut dec, &mut out, header)?;
    }
    let head = parse_header(&out)?;
    let limit = raw.len().saturating_mul(MAX_GZIP_RATIO);
    if head.data_len > limit {
        return Err(format!(
            "header {:?} declares {} data bytes, more than a {}-byte gzip file can hold",
            head.dims,
            head.data_len,
            raw.len()
        ));
    }
    // One byte more than declared tells "too long" from "exactly right".
    let total = head.len.saturating_add(head.data_len);
    read_up_to(&mut dec, &mut out, total + 1)?;
    if out.len() > total {
        return Err(format!(
            "the gzip data goes on past the {} data bytes header {:?} declares",
            head.data_len, head.dims
        ));
    }
    parse_idx(&out)
}

/// An IDX header: the dimensions, its own length and the data bytes it declares.
struct IdxHeader {
    dims: Vec<usize>,
    len: usize,
    data_len: usize,
}

fn parse_header(bytes: &[u8]) -> std::result::Result<IdxHeader, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != TYPE_U8 || bytes[3] == 0 {
        return Err(format!(
            "bad magic 0x{magic:08x}: not an IDX file of unsigned bytes (expected 0x0000080N)"
        ));
    }
    let ndim = bytes[3] as usize;
    let len = 4 + 4 * ndim;
    if bytes.len() < len {
        return Err(format!(
            "truncated header: {ndim} dimensions need {len} bytes, file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // With a zero dimension the product is 0 whatever the others are, but the others still
    // describe a shape (an image size) later code multiplies: all must multiply safely.
    let data_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .map(|all| if dims.contains(&0) { 0 } else { all })
        .ok_or_else(|| format!("header dimensions {dims:?} overflow"))?;
    Ok(IdxHeader {
        dims,
        len,
        data_len,
    })
}

fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    let IdxHeader {
        dims,
        len,
        data_len: expected,
    } = parse_header(bytes)?;
    let have = bytes.len() - len;
    if have < expected {
        return Err(format!(
            "truncated: header {dims:?} declares {expected} data bytes, file has {have}"
        ));
    }
    if have > expected {
        return Err(format!(
            "{} bytes past the {expected} data bytes header {dims:?} declares",
            have - expected
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[len..].to_vec(),
    })
}

/// Reads an image file and its label file into a dataset, checking that the two agree and
/// that every label is below `classes`.
pub fn load_idx_pair(
    name: &str,
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
    mean: f32,
    std: f32,
) -> Result<Dataset> {
    let images = read_idx(images_path)?;
    let (n, c, h, w) = match images.dims[..] {
        [n, h, w] => (n, 1, h, w),
        [n, c, h, w] => (n, c, h, w),
        _ => {
            return Err(Error::bad_file(
                images_path,
                format!(
                    "an image file must be idx3 [n, h, w] or idx4 [n, c, h, w], this one is {:?}",
                    images.dims
                ),
            ))
        }
    };
    // parse_header checked that the dimensions multiply without overflow.
    if c * h * w == 0 {
        return Err(Error::bad_file(
            images_path,
            format!("empty image shape {:?}", images.dims),
        ));
    }
    if n == 0 {
        return Err(Error::bad_file(
            images_path,
            format!("no images (header {:?})", images.dims),
        ));
    }
    let labels = read_idx(labels_path)?;
    if labels.dims.len() != 1 {
        return Err(Error::bad_file(
            labels_path,
            format!(
                "a label file must be idx1 [n], this one is {:?}",
                labels.dims
            ),
        ));
    }
    if labels.dims[0] != n {
        return Err(Error::bad_file(
            labels_path,
            format!(
                "{} labels for the {n} images of {}",
                labels.dims[0],
                images_path.display()
            ),
        ));
    }
    if let Some((i, &l)) = labels
        .data
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(Error::bad_file(
            labels_path,
            format!("label {l} at index {i} is not below the {classes} classes"),
        ));
    }
    let labels = labels.data.iter().map(|&l| l as u32).collect();
    Dataset::new(
        name,
        images.data,
        labels,
        (c, h, w),
        classes,
        vec![mean; c],
        vec![std; c],
    )
}

/// Finds `dir/stem` under the names MNIST mirrors use: `train-images-idx3-ubyte`, its `.gz`,
/// and the dotted `train-images.idx3-ubyte` variants. Missing -> an I/O error naming them.
pub fn find_idx_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    for c in &candidates {
        let p = dir.join(c);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::io(
        dir.join(stem),
        std::io::Error::new(
            ErrorKind::NotFound,
            format!(
                "not found (also tried {}, {}, {})",
                candidates[1], candidates[2], candidates[3]
            ),
        ),
    ))
}

/// Loads MNIST-layout train and test sets from `dir` (the four standard file names).
pub fn load_mnist_dir(dir: &Path, name: &str, mean: f32, std: f32) -> Result<(Dataset, Dataset)> {
    let train_images = find_idx_file(dir, "train-images-idx3-ubyte")?;
    let train = load_idx_pair(
        &format!("{name}/train"),
        &train_images,
        &find_idx_file(dir, "train-labels-idx1-ubyte")?,
        MNIST_CLASSES,
        mean,
        std,
    )?;
    let test_images = find_idx_file(dir, "t10k-images-idx3-ubyte")?;
    let test = load_idx_pair(
        &format!("{name}/test"),
        &test_images,
        &find_idx_file(dir, "t10k-labels-idx1-ubyte")?,
        MNIST_CLASSES,
        mean,
        std,
    )?;
    if (train.c, train.h, train.w) != (test.c, test.h, test.w) {
        return Err(Error::bad_file(
            &test_images,
            format!(
                "{name} test images are {}x{}x{} but the train images ({}) are {}x{}x{}",
                test.c,
                test.h,
                test.w,
                train_images.display(),
                train.c,
                train.h,
                train.w
            ),
        ));
    }
    Ok((train, test))
}
