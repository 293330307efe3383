//! Hostile IDX files (MNIST, Fashion-MNIST) never panic `data::load`: a valid set of the four
//! files, raw or gzipped, under each name the loader accepts, mutated (header fields, bytes,
//! consistent rewrites with odd shapes, gzip streams), must load or give an error naming a
//! mutated file; shapes the size check alone lets through, and gzip bombs, are bad files.
//! The harness, the allocation cap and the mutations are shared (common/fuzz.rs,
//! common/mutate.rs); `NASRS_FUZZ_CASES=5000 cargo test --release --test fuzz_idx` explores
//! more cases.

mod common;

use common::fuzz::{
    install_panic_hook, no_exception, set_case_label, use_dataset, CappedAlloc, Fuzz, TempDir,
};
use common::mutate::{extreme_u32, mutate_bytes, pick, random_bytes};
use nasrs::data::{load, DatasetKind};
use nasrs::Rng;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

// The allocation cap (common/fuzz.rs): a size taken from a header unchecked aborts the run.
#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// `bytes` gzipped (the loader reads a gzipped file of a set as the raw one).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const IDX_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// A valid MNIST-layout set: 6 train and 4 test images of 1 x 5 x 4, in `IDX_STEMS` order.
fn valid_idx_files() -> [Vec<u8>; 4] {
    let mut rng = Rng::new(11);
    let (h, w) = (5, 4);
    let mut split = |n: usize| {
        let px: Vec<u8> = (0..n * h * w).map(|_| rng.below(256) as u8).collect();
        let lb: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
        (
            idx_bytes(&[n as u32, h as u32, w as u32], &px),
            idx_bytes(&[n as u32], &lb),
        )
    };
    let (train_x, train_y) = split(6);
    let (test_x, test_y) = split(4);
    [train_x, train_y, test_x, test_y]
}

/// An image file and a label file that agree with their own headers, of a random shape:
/// small or zero dimensions, now and then a huge one (with a zero, so there is no data), and
/// a label count that may differ from the image count.
fn consistent_idx_split(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let ndim = pick(rng, &[1, 2, 3, 3, 3, 4, 4, 5]);
    let mut dims: Vec<u32> = (0..ndim)
        .map(|_| pick(rng, &[0, 1, 1, 2, 3, 5, 8]))
        .collect();
    if rng.bernoulli(0.3) {
        let d = rng.below(ndim);
        dims[d] = pick(rng, &[0x7fff_ffff, 0x8000_0000, u32::MAX]);
        let z = rng.below(ndim);
        dims[z] = 0;
    }
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
        .unwrap_or(0)
        .min(1 << 16);
    let images = idx_bytes(&dims, &random_bytes(rng, len));
    let n = match rng.below(4) {
        0 => rng.below(4) as u32,
        _ => dims[0],
    };
    let labels: Vec<u8> = (0..(n as usize).min(1 << 16))
        .map(|_| pick(rng, &[0, 3, 9, 9, 10, 255]))
        .collect();
    (images, idx_bytes(&[n], &labels))
}

/// Sets dimension `d` (which may lie past the declared ones) of an IDX header.
fn set_idx_dim(b: &mut Vec<u8>, d: usize, v: u32) {
    let at = 4 + 4 * d;
    if b.len() < at + 4 {
        b.resize(at + 4, 0);
    }
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// A mutation of an IDX file's header fields.
fn mutate_idx_header(rng: &mut Rng, b: &mut Vec<u8>) -> String {
    if b.len() < 4 {
        // An earlier mutation cut the magic short.
        b.resize(4, 0);
    }
    match rng.below(5) {
        0 => {
            let t = pick(rng, &[0x00, 0x09, 0x0b, 0x0c, 0x0d, 0x0e, 0xff]);
            b[2] = t;
            format!("type code 0x{t:02x}")
        }
        1 => {
            let nd = pick(rng, &[0u8, 1, 2, 3, 4, 5, 9, 255]);
            b[3] = nd;
            format!("{nd} dimensions")
        }
        2 => {
            let at = rng.below(2);
            b[at] = 1 + rng.below(255) as u8;
            format!("magic byte {at} = {}", b[at])
        }
        _ => {
            let ndim = b[3] as usize;
            let d = rng.below(ndim + 1);
            let v = extreme_u32(rng);
            set_idx_dim(b, d, v);
            format!("dimension {d} = {v}")
        }
    }
}

/// Writes the four files of a set, each raw or gzipped, under one of the names the loader
/// accepts; returns the paths written.
fn write_idx_set(
    dir: &Path,
    files: &[Vec<u8>; 4],
    gz: [bool; 4],
    dotted: [bool; 4],
) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for (i, stem) in IDX_STEMS.iter().enumerate() {
        let dot = stem.replacen("-idx", ".idx", 1);
        for name in [
            stem.to_string(),
            format!("{stem}.gz"),
            dot.clone(),
            format!("{dot}.gz"),
        ] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let base = if dotted[i] { dot } else { stem.to_string() };
        let (name, bytes) = if gz[i] {
            (format!("{base}.gz"), gzip(&files[i]))
        } else {
            (base, files[i].clone())
        };
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    paths
}

#[test]
fn idx_readers_survive_mutations() {
    let mut fz = Fuzz::new("idx", 0x1d5_0001, 800);
    let tmp = TempDir::new("idx");
    let valid = valid_idx_files();
    // The unmutated set loads, raw and gzipped.
    for gz in [[false; 4], [true; 4]] {
        write_idx_set(&tmp.0, &valid, gz, [false; 4]);
        let (train, test) = load(DatasetKind::Mnist, &tmp.0).unwrap();
        assert_eq!((train.n, test.n, train.h, train.w), (6, 4, 5, 4));
    }
    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut files = valid.clone();
        let mut gz: [bool; 4] = std::array::from_fn(|_| rng.bernoulli(0.3));
        let dotted: [bool; 4] = std::array::from_fn(|_| rng.bernoulli(0.2));
        let mut mutated = BTreeSet::new();
        let mut gz_mutated = BTreeSet::new();
        let mut what = Vec::new();
        // Mostly one mutation; sometimes a few, so that they can combine.
        let rounds = if rng.bernoulli(0.3) {
            2 + rng.below(3)
        } else {
            1
        };
        for _ in 0..rounds {
            let f = rng.below(4);
            let stem = IDX_STEMS[f];
            let m = match rng.below(12) {
                10 | 11 => {
                    // A whole split rewritten consistently: data as long as the header says,
                    // so that odd shapes (zeros, huge dimensions next to a zero, other image
                    // sizes, idx1 or idx5 images) get past the size check.
                    let split = f & !1;
                    let (x, y) = consistent_idx_split(&mut rng);
                    files[split] = x;
                    files[split + 1] = y;
                    mutated.extend([split, split + 1]);
                    let dims = &files[split][4..4 + 4 * files[split][3] as usize];
                    let dims: Vec<u32> = dims
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    format!("{} rewritten as {dims:?}", IDX_STEMS[split])
                }
                0..=3 => {
                    mutated.insert(f);
                    format!("{stem}: {}", mutate_idx_header(&mut rng, &mut files[f]))
                }
                4..=6 => {
                    mutated.insert(f);
                    format!("{stem}: {}", mutate_bytes(&mut rng, &mut files[f]))
                }
                7 => {
                    // The same count in an image file and its label file.
                    let split = f & !1;
                    let n = extreme_u32(&mut rng);
                    set_idx_dim(&mut files[split], 0, n);
                    set_idx_dim(&mut files[split + 1], 0, n);
                    mutated.extend([split, split + 1]);
                    format!("{n} in {} and {}", IDX_STEMS[split], IDX_STEMS[split + 1])
                }
                8 => {
                    // An image file as idx4 [n, c, h, w] with an extreme channel count.
                    let c = extreme_u32(&mut rng);
                    let b = &mut files[f & !1];
                    if b.len() >= 8 {
                        b[3] = 4;
                        b.splice(8..8, c.to_be_bytes());
                    }
                    mutated.insert(f & !1);
                    format!("{}: idx4 with {c} channels", IDX_STEMS[f & !1])
                }
                _ => {
                    gz[f] = true;
                    mutated.insert(f);
                    gz_mutated.insert(f);
                    format!("{stem}: its gzip stream mutated")
                }
            };
            what.push(m);
        }
        let paths = write_idx_set(&tmp.0, &files, gz, dotted);
        for &f in &gz_mutated {
            let mut b = std::fs::read(&paths[f]).unwrap();
            let m = mutate_bytes(&mut rng, &mut b);
            what.push(format!("{}.gz: {m}", IDX_STEMS[f]));
            std::fs::write(&paths[f], b).unwrap();
        }
        let mutation = what.join(", then ");
        let named: Vec<&Path> = mutated.iter().map(|&i| paths[i].as_path()).collect();
        let kind = pick(&mut rng, &[DatasetKind::Mnist, DatasetKind::FashionMnist]);
        let loaded = fz.check(case, &mutation, "data::load", &named, no_exception, || {
            load(kind, &tmp.0)
        });
        if let Some((train, test)) = loaded {
            fz.no_panic(case, &mutation, "using the loaded sets", || {
                use_dataset(&train);
                use_dataset(&test);
            });
        }
    }
    fz.finish();
}

/// Headers the size check alone lets through: no images next to a huge image size (which
/// once sized a per-channel vector of 2^32 floats), dimensions whose product overflows once
/// the zero is left out, and a test set whose images differ from the train set's.
#[test]
fn idx_shapes_without_images_or_that_disagree_are_bad_files() {
    install_panic_hook();
    let tmp = TempDir::new("idx-shapes");
    let valid = valid_idx_files();
    let images = tmp.0.join(IDX_STEMS[0]);
    let labels = tmp.0.join(IDX_STEMS[1]);
    let test_images = tmp.0.join(IDX_STEMS[2]);
    for (dims, want) in [
        (vec![0, u32::MAX, 1, 1], "no images"),
        (vec![0, 5, 4], "no images"),
        (vec![0, u32::MAX, u32::MAX, u32::MAX], "overflow"),
    ] {
        set_case_label(&format!("images {dims:?}"));
        write_idx_set(&tmp.0, &valid, [false; 4], [false; 4]);
        std::fs::write(&images, idx_bytes(&dims, &[])).unwrap();
        std::fs::write(&labels, idx_bytes(&[0], &[])).unwrap();
        let e = load(DatasetKind::Mnist, &tmp.0).unwrap_err().to_string();
        assert!(
            e.contains(&images.display().to_string()) && e.contains(want),
            "{dims:?}: {e}"
        );
    }
    write_idx_set(&tmp.0, &valid, [false; 4], [false; 4]);
    std::fs::write(&test_images, idx_bytes(&[4, 4, 5], &[0; 80])).unwrap();
    let e = load(DatasetKind::Mnist, &tmp.0).unwrap_err().to_string();
    assert!(
        e.contains(&test_images.display().to_string())
            && e.contains(&images.display().to_string())
            && e.contains("1x4x5")
            && e.contains("1x5x4"),
        "{e}"
    );
}

/// Zeros, gzipped: a small file that decompresses to far more than any header below declares.
fn gzipped_zeros(header: &[u8], zeros: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(header).unwrap();
    let block = vec![0u8; 1 << 20];
    for _ in 0..zeros >> 20 {
        enc.write_all(&block).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn idx_gzip_bombs_are_refused_without_decompressing_them() {
    install_panic_hook();
    let tmp = TempDir::new("idx-bomb");
    let valid = valid_idx_files();
    write_idx_set(&tmp.0, &valid, [false; 4], [false; 4]);
    let images = tmp.0.join("train-images-idx3-ubyte");
    let _ = std::fs::remove_file(&images);
    let gz_path = tmp.0.join("train-images-idx3-ubyte.gz");
    // 320 MiB of zeros: past ALLOC_CAP, so reading it all would abort this test.
    let zeros = 320 << 20;
    for (dims, want) in [
        // A header that claims 2^40 bytes: more than the gzip file can hold.
        (vec![1 << 20, 1 << 10, 1 << 10], "more than a"),
        // A plausible header, and far more data than it declares.
        (vec![6, 5, 4], "goes on past the 120 data bytes"),
    ] {
        set_case_label(&format!("gzip bomb with header {dims:?}"));
        std::fs::write(&gz_path, gzipped_zeros(&idx_bytes(&dims, &[]), zeros)).unwrap();
        let e = load(DatasetKind::Mnist, &tmp.0).unwrap_err().to_string();
        assert!(
            e.contains(&gz_path.display().to_string()) && e.contains(want),
            "{dims:?}: {e}"
        );
    }
}
