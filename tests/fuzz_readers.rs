//! Hostile files never panic the readers. Seeded property tests start from a small valid file
//! of each format (an MNIST-layout IDX set, CIFAR-10 binary batches, a safetensors model
//! checkpoint, a genotype JSON), mutate it (truncation, byte flips, insertions, deletions,
//! header fields set to extreme values, hostile JSON) and read it through the entry points the
//! CLI uses (`data::load`, `load_network`, `resolve_genotype`). Every case must give Ok or an
//! error naming the file, never a panic; a case that panics fails the test with its seed,
//! index and mutation.
//!
//! The test binary's allocator refuses any single allocation over `ALLOC_CAP` (the inputs are
//! a few KB): a reader that trusts a header claiming 2^40 images instead of checking it
//! against the file size aborts the run, printing the case that did it.
//!
//! The seeds are fixed so CI is deterministic; `NASRS_FUZZ_SEED` and `NASRS_FUZZ_CASES`
//! explore other cases (`NASRS_FUZZ_CASES=5000 cargo test --release --test fuzz_readers`);
//! `NASRS_FUZZ_VERBOSE=1` prints every error message (with `--nocapture`).

use nasrs::data::{load, DatasetKind, SequentialBatches};
use nasrs::io::load_safetensors;
use nasrs::nas::eval_model::{resolve_genotype, validate_genotype, EvalConfig, EvalNetwork};
use nasrs::nas::evaluate::{eval_logits, load_network, save_network};
use nasrs::nas::genotype::{Genotype, Primitive};
use nasrs::{Cpu, Error, Rng, Tensor};
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

// ---- the allocation cap --------------------------------------------------------------------

/// No reader needs more than a few MB for these inputs; 256 MiB in one request means a size
/// was taken from a header without being checked against the data.
const ALLOC_CAP: usize = 256 << 20;

/// Bytes of the current case's description kept for the allocator's report.
const LABEL_LEN: usize = 200;

thread_local! {
    // Plain bytes (no destructor, no allocation) so the allocator can read it safely.
    static CASE_LABEL: Cell<([u8; LABEL_LEN], usize)> = const { Cell::new(([0; LABEL_LEN], 0)) };
    static LAST_PANIC_AT: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_case_label(label: &str) {
    let mut buf = [0; LABEL_LEN];
    let n = label.len().min(LABEL_LEN);
    buf[..n].copy_from_slice(&label.as_bytes()[..n]);
    CASE_LABEL.with(|c| c.set((buf, n)));
}

/// Reports the request and the case, then aborts (an allocator may not unwind).
#[cold]
fn refuse(size: usize) -> ! {
    let (buf, n) = CASE_LABEL
        .try_with(|c| c.get())
        .unwrap_or(([0; LABEL_LEN], 0));
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\nfuzz_readers: refused an allocation of {size} bytes (cap {ALLOC_CAP}); case: "
    );
    let _ = err.write_all(&buf[..n]);
    let _ = err.write_all(b"\n");
    std::process::abort();
}

struct CappedAlloc;

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            refuse(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            refuse(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            refuse(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---- the harness ---------------------------------------------------------------------------

/// Where a panic happened, kept by a hook so a failure report can name the line.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC_AT.with(|p| *p.borrow_mut() = at);
            default(info);
        }));
    });
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The message of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let at = LAST_PANIC_AT.with(|p| p.borrow().clone());
    format!("panicked at {at}: {msg}")
}

/// Every error must name the file.
fn no_exception(_: &Error) -> bool {
    false
}

/// One format's run: its seed, what each reader answered, and the failures found.
struct Fuzz {
    name: &'static str,
    seed: u64,
    cases: usize,
    /// Per reader: (Ok, clean errors, known issues tolerated).
    answers: BTreeMap<&'static str, (usize, usize, usize)>,
    failures: Vec<String>,
}

impl Fuzz {
    fn new(name: &'static str, seed: u64, cases: usize) -> Self {
        install_panic_hook();
        Fuzz {
            name,
            seed: env_or("NASRS_FUZZ_SEED", seed),
            cases: env_or("NASRS_FUZZ_CASES", cases as u64) as usize,
            answers: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// The generator of case `i`: each case replays on its own from (seed, i).
    fn rng(&self, i: usize) -> Rng {
        Rng::fork(self.seed, &format!("{}/{i}", self.name))
    }

    fn fail(&mut self, case: usize, mutation: &str, what: String) {
        self.failures.push(format!(
            "{} seed {} case {case} [{mutation}]: {what}",
            self.name, self.seed
        ));
    }

    /// Runs one read: Ok, or an error whose message names one of `paths` (when any are
    /// given) unless `known` says it is a known issue; a panic or an anonymous error is
    /// recorded as a failure.
    fn check<T>(
        &mut self,
        case: usize,
        mutation: &str,
        reader: &'static str,
        paths: &[&Path],
        known: fn(&Error) -> bool,
        read: impl FnOnce() -> nasrs::Result<T>,
    ) -> Option<T> {
        set_case_label(&format!(
            "{} seed {} case {case}: {reader}: {mutation}",
            self.name, self.seed
        ));
        let result = catch_unwind(AssertUnwindSafe(read));
        let answers = self.answers.entry(reader).or_default();
        match result {
            Ok(Ok(v)) => {
                answers.0 += 1;
                Some(v)
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if std::env::var_os("NASRS_FUZZ_VERBOSE").is_some() {
                    eprintln!("DEBUG {reader} [{mutation}] {msg}");
                }
                if paths.is_empty() || paths.iter().any(|p| msg.contains(&p.display().to_string()))
                {
                    answers.1 += 1;
                } else if known(&e) {
                    answers.2 += 1;
                } else {
                    self.fail(
                        case,
                        mutation,
                        format!("{reader}: error does not name the file: {msg}"),
                    );
                }
                None
            }
            Err(payload) => {
                let what = format!("{reader} {}", panic_text(&*payload));
                self.fail(case, mutation, what);
                None
            }
        }
    }

    /// Runs a check that is not a read (using what was read): it must not panic.
    fn no_panic(&mut self, case: usize, mutation: &str, what: &str, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            let text = format!("{what} {}", panic_text(&*payload));
            self.fail(case, mutation, text);
        }
    }

    fn finish(self) {
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(r, (ok, err, known))| {
                format!("{r}: {ok} Ok, {err} errors, {known} known issues")
            })
            .collect();
        eprintln!(
            "{}: seed {}, {} cases ({}), {} failures",
            self.name,
            self.seed,
            self.cases,
            answers.join("; "),
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{} of the {} {} cases failed:\n{}",
            self.failures.len(),
            self.cases,
            self.name,
            self.failures.join("\n")
        );
    }
}

/// A fresh directory under the system temp dir, removed when dropped (a failing test too).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("nasrs-fuzz-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- mutations -----------------------------------------------------------------------------

const U32_EXTREMES: [u32; 9] = [
    0,
    1,
    2,
    255,
    65_536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    u32::MAX,
];

const U64_EXTREMES: [u64; 11] = [
    0,
    1,
    7,
    u32::MAX as u64,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 53,
    1 << 63,
    u64::MAX - 7,
    u64::MAX,
];

fn pick<T: Clone>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len())].clone()
}

fn extreme_u32(rng: &mut Rng) -> u32 {
    if rng.bernoulli(0.15) {
        rng.next_u64() as u32
    } else {
        pick(rng, &U32_EXTREMES)
    }
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// A format-blind mutation of `b`, described.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) -> String {
    let len = b.len();
    match rng.below(8) {
        0 => {
            let at = rng.below(len + 1);
            b.truncate(at);
            format!("truncated to {at} of {len} bytes")
        }
        1 if len > 0 => {
            let k = 1 + rng.below(4);
            let mut at = Vec::new();
            for _ in 0..k {
                let i = rng.below(len);
                b[i] = rng.next_u64() as u8;
                at.push(i);
            }
            format!("{k} random bytes at {at:?}")
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes = random_bytes(rng, n);
            b.splice(at..at, bytes);
            format!("{n} random bytes inserted at {at}")
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = (1 + rng.below(16)).min(len - at);
            b.drain(at..at + n);
            format!("{n} bytes deleted at {at}")
        }
        4 if len >= 4 => {
            let at = rng.below(len - 3) & !3;
            let v = extreme_u32(rng);
            let bytes = if rng.bernoulli(0.5) {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            b[at..at + 4].copy_from_slice(&bytes);
            format!("u32 {v} written at {at}")
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let n = (1 + rng.below(64)).min(len - at);
            let copy = b[at..at + n].to_vec();
            let to = rng.below(len + 1);
            b.splice(to..to, copy);
            format!("{n} bytes from {at} duplicated at {to}")
        }
        6 => {
            let n = rng.below(2);
            b.truncate(n);
            format!("cut to {n} bytes")
        }
        _ => {
            let n = 1 + rng.below(4096);
            let bytes = random_bytes(rng, n);
            b.extend(bytes);
            format!("{n} random bytes appended")
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

// ---- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------

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

/// What a loaded set must satisfy, and what the training loop does with it first.
fn use_dataset(ds: &nasrs::data::Dataset) {
    assert!(ds.n > 0 && ds.sample_len() > 0, "{}: empty", ds.name);
    assert_eq!(ds.images.len(), ds.n * ds.sample_len(), "{}", ds.name);
    assert!(ds.labels.iter().all(|&l| (l as usize) < ds.classes));
    let (mean, std) = ds.channel_stats();
    assert!(mean.iter().chain(&std).all(|v| v.is_finite()));
    let seen: usize = SequentialBatches::new(ds, 4).unwrap().map(|b| b.n).sum();
    assert_eq!(seen, ds.n);
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

// ---- CIFAR-10 binary -----------------------------------------------------------------------

const CIFAR_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn valid_cifar_file(rng: &mut Rng, records: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(records * CIFAR_RECORD);
    for _ in 0..records {
        b.push(rng.below(10) as u8);
        b.extend(random_bytes(rng, CIFAR_RECORD - 1));
    }
    b
}

#[test]
fn cifar_reader_survives_mutations() {
    let mut fz = Fuzz::new("cifar10", 0xc1fa_0002, 500);
    let tmp = TempDir::new("cifar");
    let mut rng = Rng::new(5);
    let valid: Vec<Vec<u8>> = (0..6).map(|_| valid_cifar_file(&mut rng, 2)).collect();
    // Two layouts: files directly in the directory, or in the archive's subdirectory.
    let flat = tmp.0.join("flat");
    let nested_root = tmp.0.join("nested");
    let nested = nested_root.join("cifar-10-batches-bin");
    for d in [&flat, &nested] {
        std::fs::create_dir_all(d).unwrap();
        for (name, bytes) in CIFAR_FILES.iter().zip(&valid) {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
    for root in [&flat, &nested_root] {
        let (train, test) = load(DatasetKind::Cifar10, root).unwrap();
        assert_eq!((train.n, test.n), (10, 2));
    }
    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let use_nested = rng.bernoulli(0.5);
        let (root, dir) = if use_nested {
            (&nested_root, &nested)
        } else {
            (&flat, &flat)
        };
        let f = rng.below(6);
        let path = dir.join(CIFAR_FILES[f]);
        let mut bytes = valid[f].clone();
        let records = bytes.len() / CIFAR_RECORD;
        let mut mutation = format!("{}: ", CIFAR_FILES[f]);
        let mut write = true;
        match rng.below(10) {
            0..=5 => {
                let rounds = 1 + usize::from(rng.bernoulli(0.3));
                let what: Vec<String> = (0..rounds)
                    .map(|_| mutate_bytes(&mut rng, &mut bytes))
                    .collect();
                mutation += &what.join(", then ");
            }
            6 => {
                let r = rng.below(records);
                let l = pick(&mut rng, &[9u8, 10, 11, 127, 128, 255]);
                bytes[r * CIFAR_RECORD] = l;
                mutation += &format!("label {l} in record {r}");
            }
            7 => {
                let extra = pick(&mut rng, &[1, CIFAR_RECORD - 1, CIFAR_RECORD + 1]);
                let tail = random_bytes(&mut rng, extra);
                bytes.extend(tail);
                mutation += &format!("{extra} bytes appended");
            }
            8 => {
                std::fs::remove_file(&path).unwrap();
                write = false;
                mutation += "missing";
            }
            _ => {
                std::fs::remove_file(&path).unwrap();
                std::fs::create_dir(&path).unwrap();
                write = false;
                mutation += "a directory";
            }
        }
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        // When data_batch_1.bin is missing from the archive folder, the loader looks for the
        // flat layout and names the flat path: either name is the file at fault.
        let flat_path = root.join(CIFAR_FILES[f]);
        let named = [path.as_path(), flat_path.as_path()];
        let loaded = fz.check(case, &mutation, "data::load", &named, no_exception, || {
            load(DatasetKind::Cifar10, root)
        });
        if let Some((train, test)) = loaded {
            fz.no_panic(case, &mutation, "using the loaded sets", || {
                use_dataset(&train);
                use_dataset(&test);
            });
        }
        if path.is_dir() {
            std::fs::remove_dir(&path).unwrap();
        }
        std::fs::write(&path, &valid[f]).unwrap();
    }
    fz.finish();
}

// ---- safetensors checkpoints ---------------------------------------------------------------

fn small_config(genotype: Genotype) -> EvalConfig {
    EvalConfig {
        genotype,
        channels: 2,
        layers: 2,
        classes: 3,
        in_channels: 1,
        auxiliary: false,
    }
}

/// Splits a safetensors file into its header JSON object and its data, if it still has them.
fn split_safetensors(b: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let end = n.checked_add(8).filter(|&e| e <= b.len())?;
    let header: Value = serde_json::from_slice(&b[8..end]).ok()?;
    header.is_object().then(|| (header, b[end..].to_vec()))
}

fn join_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(data);
    b
}

/// Nested arrays `depth` deep.
fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A value of the wrong type, or an extreme one, for any JSON field.
fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => json!(null),
        1 => json!(true),
        2 => json!("NaN"),
        3 => json!("Infinity"),
        4 => json!(-1),
        5 => json!(1.5),
        6 => json!(1e308),
        7 => json!(u64::MAX),
        8 => json!(pick(rng, &U64_EXTREMES)),
        9 => json!(""),
        10 => json!([]),
        11 => json!({}),
        12 => json!([[[[1]]]]),
        13 => json!("x".repeat(1 + rng.below(5000))),
        14 => json!({"a": [1, {"b": null}]}),
        _ => json!(pick(rng, &U32_EXTREMES)),
    }
}

/// A mutation of one of a JSON value's leaves or lists, chosen at random, described by path.
fn mutate_json(rng: &mut Rng, v: &mut Value, path: &mut String) {
    let descend = rng.bernoulli(0.7);
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = pick(rng, &keys);
            path.push_str(&format!(".{k}"));
            mutate_json(rng, m.get_mut(&k).unwrap(), path);
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.below(a.len());
            path.push_str(&format!("[{i}]"));
            mutate_json(rng, &mut a[i], path);
        }
        Value::Array(a) if rng.bernoulli(0.4) => match rng.below(4) {
            0 => {
                a.clear();
                path.push_str(" emptied");
            }
            1 if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
                path.push_str(&format!(" lost item {i}"));
            }
            2 if !a.is_empty() => {
                let k = 1 + rng.below(64);
                let copy = a[rng.below(a.len())].clone();
                a.extend(std::iter::repeat_n(copy, k));
                path.push_str(&format!(" got {k} copies of an item"));
            }
            _ => {
                let x = hostile_value(rng);
                path.push_str(&format!(" got {x} appended"));
                a.push(x);
            }
        },
        Value::Object(m) if rng.bernoulli(0.4) => {
            if rng.bernoulli(0.5) && !m.is_empty() {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = pick(rng, &keys);
                m.remove(&k);
                path.push_str(&format!(" lost {k}"));
            } else {
                m.insert("extra".into(), hostile_value(rng));
                path.push_str(" got a field 'extra'");
            }
        }
        _ => {
            let x = hostile_value(rng);
            let shown: String = x.to_string().chars().take(40).collect();
            path.push_str(&format!(" = {shown}"));
            *v = x;
        }
    }
}

/// Rewrites the JSON text `s` hostilely: duplicated keys, bare NaN, deep nesting, bad UTF-8.
fn mutate_json_text(rng: &mut Rng, s: &mut Vec<u8>) -> String {
    match rng.below(6) {
        0 => {
            // A key of the outer object given twice (first with another key's value).
            let Some(m) = serde_json::from_slice::<Value>(s)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .filter(|m| !m.is_empty())
            else {
                return "not an object".into();
            };
            let entries: Vec<(String, Value)> = m.into_iter().collect();
            let key = entries[rng.below(entries.len())].0.clone();
            let value = entries[rng.below(entries.len())].1.clone();
            let mut out = format!("{{{}: {value},", Value::String(key.clone())).into_bytes();
            out.extend_from_slice(&s[1..]);
            *s = out;
            format!("key {key:?} duplicated")
        }
        1 => {
            let tok = pick(
                rng,
                &["NaN", "Infinity", "-Infinity", "1e999", "-0", "0x10"],
            );
            let digits: Vec<usize> = (0..s.len()).filter(|&i| s[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return "no number".into();
            }
            let at = pick(rng, &digits);
            s.splice(at..at + 1, tok.bytes());
            format!("number at {at} became {tok}")
        }
        2 => {
            let depth = pick(rng, &[200, 5_000, 100_000]);
            *s = deep_json(depth).into_bytes();
            format!("nested {depth} deep")
        }
        3 => {
            let at = rng.below(s.len() + 1);
            let junk: &[u8] = pick(
                rng,
                &[
                    &[0xff, 0xfe][..],
                    &[0xc3][..],
                    &[0xef, 0xbb, 0xbf][..],
                    &[0][..],
                ],
            );
            s.splice(at..at, junk.iter().copied());
            format!("bytes {junk:?} at {at}")
        }
        4 => {
            let n = rng.below(3);
            *s = ["", "{}", "[]"][n].as_bytes().to_vec();
            format!("replaced by {:?}", ["", "{}", "[]"][n])
        }
        _ => {
            s.splice(0..0, b"[".iter().copied());
            s.push(b']');
            "wrapped in an array".into()
        }
    }
}

/// The names of the tensors a safetensors header lists.
fn tensor_names(header: &Value) -> Vec<String> {
    header
        .as_object()
        .map(|m| m.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default()
}

/// A mutation of a checkpoint's header (JSON structure, text or length prefix) or its data.
/// Falls back to a byte mutation when an earlier one left nothing to mutate structurally.
fn mutate_checkpoint(rng: &mut Rng, file: &mut Vec<u8>) -> String {
    let Some((mut header, mut data)) = split_safetensors(file) else {
        return format!("bytes: {}", mutate_bytes(rng, file));
    };
    let names = tensor_names(&header);
    let what = match rng.below(12) {
        0..=2 => None,
        3 => {
            let v = pick(rng, &U64_EXTREMES);
            file[..8].copy_from_slice(&v.to_le_bytes());
            return format!("header length {v}");
        }
        4 => {
            // The nasrs model record, a JSON string inside the metadata: any field, or one of
            // the sizes of the network (channels, layers, ...) set to an extreme.
            let meta = header["__metadata__"]["nasrs.model"].as_str();
            match meta.and_then(|m| serde_json::from_str::<Value>(m).ok()) {
                Some(mut model) if header["__metadata__"].is_object() => {
                    let mut path = "nasrs.model".to_string();
                    let sizes = ["channels", "layers", "classes", "in_channels"];
                    match model.get_mut("model").and_then(Value::as_object_mut) {
                        Some(config) if rng.bernoulli(0.4) => {
                            let k = pick(rng, &sizes);
                            let v = if rng.bernoulli(0.3) {
                                rng.below(6) as u64
                            } else {
                                pick(rng, &U64_EXTREMES)
                            };
                            config.insert(k.to_string(), json!(v));
                            path.push_str(&format!(".model.{k} = {v}"));
                        }
                        _ => mutate_json(rng, &mut model, &mut path),
                    }
                    header["__metadata__"]["nasrs.model"] = Value::String(model.to_string());
                    Some(path)
                }
                _ => None,
            }
        }
        5 => {
            let mut path = "header".to_string();
            mutate_json(rng, &mut header, &mut path);
            Some(path)
        }
        6 if !names.is_empty() => {
            // One tensor's dtype, shape or offsets.
            let name = pick(rng, &names);
            let t = &mut header[&name];
            match rng.below(3) {
                _ if !t.is_object() => None,
                0 => {
                    let d = pick(
                        rng,
                        &[
                            "F16", "BF16", "I8", "U8", "BOOL", "I32", "F64", "I64", "F8_E4M3",
                            "F4", "XYZ", "",
                        ],
                    );
                    t["dtype"] = json!(d);
                    Some(format!("{name} dtype {d}"))
                }
                1 => {
                    let shape: Value = match rng.below(4) {
                        0 => json!([]),
                        1 => json!([0]),
                        2 => json!([pick(rng, &U64_EXTREMES), pick(rng, &U64_EXTREMES)]),
                        _ => {
                            let mut s = t["shape"].clone();
                            if let Some(a) = s.as_array_mut().filter(|a| !a.is_empty()) {
                                let i = rng.below(a.len());
                                a[i] = json!(pick(rng, &U64_EXTREMES));
                            }
                            s
                        }
                    };
                    t["shape"] = shape.clone();
                    Some(format!("{name} shape {shape}"))
                }
                _ => {
                    let o = &t["data_offsets"];
                    let (s, e) = (o[0].as_u64().unwrap_or(0), o[1].as_u64().unwrap_or(0));
                    let x = pick(rng, &U64_EXTREMES);
                    let offsets = pick(rng, &[[s, x], [x, e], [e, s], [x, x]]);
                    t["data_offsets"] = json!(offsets);
                    Some(format!("{name} data_offsets {offsets:?}"))
                }
            }
        }
        7 if !names.is_empty() => {
            // A tensor renamed: to "", to a name the network lacks, or dropped.
            let name = pick(rng, &names);
            let m = header.as_object_mut().unwrap();
            let t = m.remove(&name).unwrap();
            let to = pick(
                rng,
                &["", "cells.999.x", "optimizer.momentum_buffer.x", "dropped"],
            );
            if to != "dropped" {
                m.insert(to.to_string(), t);
            }
            Some(format!("{name} renamed {to:?}"))
        }
        8 => {
            // The metadata: dropped (a bare state_dict), or the wrong shape.
            let m = header.as_object_mut().unwrap();
            match rng.below(3) {
                0 => {
                    m.remove("__metadata__");
                    Some("no metadata".into())
                }
                1 => {
                    let v = hostile_value(rng);
                    let what = format!("metadata = {v}");
                    m.insert("__metadata__".into(), v);
                    Some(what)
                }
                _ => match m.get_mut("__metadata__").and_then(Value::as_object_mut) {
                    Some(meta) => {
                        meta.insert("nasrs.model".into(), hostile_value(rng));
                        Some("nasrs.model not a string".into())
                    }
                    None => None,
                },
            }
        }
        9 if data.len() >= 4 => {
            // Data set to NaN / Infinity / huge floats at random weights.
            let k = 1 + rng.below(32);
            for _ in 0..k {
                let at = rng.below(data.len() / 4) * 4;
                let v = pick(
                    rng,
                    &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -0.0],
                );
                data[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            Some(format!("{k} floats set to NaN/Inf/MAX"))
        }
        10 => {
            // The data length disagrees with the offsets.
            if rng.bernoulli(0.5) {
                let cut = rng.below(data.len() + 1);
                data.truncate(cut);
                Some(format!("data truncated to {cut}"))
            } else {
                data.extend(std::iter::repeat_n(0, 1 + rng.below(64)));
                Some("data padded".into())
            }
        }
        _ => {
            let mut text = serde_json::to_vec(&header).unwrap();
            let what = mutate_json_text(rng, &mut text);
            let declared = rng.bernoulli(0.2).then(|| pick(rng, &U64_EXTREMES));
            *file = join_safetensors(&text, &data);
            if let Some(n) = declared {
                file[..8].copy_from_slice(&n.to_le_bytes());
            }
            return format!("header text: {what}, length {declared:?}");
        }
    };
    match what {
        Some(what) => {
            *file = join_safetensors(&serde_json::to_vec(&header).unwrap(), &data);
            what
        }
        None => format!("bytes: {}", mutate_bytes(rng, file)),
    }
}

#[test]
fn checkpoint_readers_survive_mutations() {
    let mut fz = Fuzz::new("safetensors", 0x5afe_0003, 500);
    let tmp = TempDir::new("ckpt");
    let be = Cpu::<f32>::new();
    let darts = Genotype::builtin("DARTS_V2").unwrap();
    let net = EvalNetwork::new(&be, small_config(darts.clone()), 7).unwrap();
    let good = tmp.0.join("model.safetensors");
    save_network(
        &be,
        &net,
        Some("mnist"),
        &good,
        BTreeMap::new(),
        HashMap::new(),
    )
    .unwrap();
    let valid = std::fs::read(&good).unwrap();
    let (mut back, _) = load_network(&be, &good, None).unwrap();
    let x = Tensor::from_host(&be, &[0.5f32; 64], [1, 1, 8, 8].as_slice()).unwrap();
    assert_eq!(eval_logits(&be, &mut back, &x).unwrap().len(), 3);

    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut bytes = valid.clone();
        let rounds = if rng.bernoulli(0.3) {
            2 + rng.below(2)
        } else {
            1
        };
        let what: Vec<String> = (0..rounds)
            .map(|_| mutate_checkpoint(&mut rng, &mut bytes))
            .collect();
        let mutation = what.join(", then ");
        let path = tmp.0.join(format!("case-{case}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let named = [path.as_path()];
        fz.check(
            case,
            &mutation,
            "load_safetensors",
            &named,
            no_exception,
            || load_safetensors(&path),
        );
        let genotype = rng.bernoulli(0.3).then(|| darts.clone());
        let loaded = fz.check(
            case,
            &mutation,
            "load_network",
            &named,
            no_exception,
            || load_network(&be, &path, genotype),
        );
        if let Some((mut net, _)) = loaded {
            // A network that loads must run (NaN weights give NaN logits, not a panic).
            let c = net.config.in_channels;
            let x = Tensor::from_host(&be, &vec![0.5f32; c * 64], [1, c, 8, 8].as_slice());
            fz.no_panic(case, &mutation, "eval_logits", || {
                let _ = eval_logits(&be, &mut net, &x.unwrap());
            });
        }
        let _ = std::fs::remove_file(&path);
    }
    fz.finish();
}

/// A checkpoint whose metadata describes a network other than its tensors (absurd sizes, an
/// invalid genotype) must be a bad file naming the path, found before the network is built.
#[test]
fn checkpoint_config_extremes_are_bad_files() {
    install_panic_hook();
    let tmp = TempDir::new("ckpt-config");
    let be = Cpu::<f32>::new();
    let darts = Genotype::builtin("DARTS_V2").unwrap();
    let net = EvalNetwork::new(&be, small_config(darts), 7).unwrap();
    let good = tmp.0.join("model.safetensors");
    save_network(
        &be,
        &net,
        Some("mnist"),
        &good,
        BTreeMap::new(),
        HashMap::new(),
    )
    .unwrap();
    let (header, data) = split_safetensors(&std::fs::read(&good).unwrap()).unwrap();
    let mut cases = vec![
        ("/model/genotype/normal_concat".to_string(), json!([99])),
        ("/model/genotype/reduce".to_string(), json!([])),
    ];
    for v in [0u64, 1 << 31, u32::MAX as u64, 1 << 40, u64::MAX] {
        for field in ["channels", "layers", "classes", "in_channels"] {
            cases.push((format!("/model/{field}"), json!(v)));
        }
    }
    let mut failures = Vec::new();
    for (i, (pointer, v)) in cases.into_iter().enumerate() {
        let mut h = header.clone();
        let meta = h["__metadata__"]["nasrs.model"].as_str().unwrap();
        let mut model: Value = serde_json::from_str(meta).unwrap();
        *model.pointer_mut(&pointer).unwrap() = v.clone();
        h["__metadata__"]["nasrs.model"] = Value::String(model.to_string());
        let path = tmp.0.join(format!("case-{i}.safetensors"));
        let bytes = join_safetensors(&serde_json::to_vec(&h).unwrap(), &data);
        std::fs::write(&path, bytes).unwrap();
        let case = format!("nasrs.model{pointer} = {v}");
        set_case_label(&case);
        match catch_unwind(AssertUnwindSafe(|| load_network(&be, &path, None))) {
            Ok(Err(Error::BadFile { path: p, .. })) if p == path => {}
            Ok(Err(e)) => failures.push(format!("{case}: not a bad file named by path: {e}")),
            Ok(Ok(_)) => failures.push(format!("{case}: accepted")),
            Err(payload) => failures.push(format!("{case}: {}", panic_text(&*payload))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- genotype JSON -------------------------------------------------------------------------

/// Op names and inputs a genotype file might hold, well-formed or not.
fn hostile_op(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(pick(rng, &Primitive::ALL.map(|p| p.name()))),
        1 => json!(pick(
            rng,
            &["sep_conv_9x9", "SEP_CONV_3X3", " none", "", "NaN"]
        )),
        _ => hostile_value(rng),
    }
}

/// A random op pair of `cell`, if the genotype still has one.
fn op_pair<'a>(rng: &mut Rng, g: &'a mut Value, cell: &str) -> Option<(usize, &'a mut Vec<Value>)> {
    let ops = g.get_mut(cell)?.as_array_mut().filter(|a| !a.is_empty())?;
    let k = rng.below(ops.len());
    let pair = ops[k].as_array_mut().filter(|p| p.len() == 2)?;
    Some((k, pair))
}

/// A mutation of a genotype file. Falls back to a byte mutation when an earlier one left
/// nothing to mutate structurally.
fn mutate_genotype(rng: &mut Rng, text: &mut Vec<u8>) -> String {
    let Some(mut g) = serde_json::from_slice::<Value>(text)
        .ok()
        .filter(Value::is_object)
    else {
        return format!("bytes: {}", mutate_bytes(rng, text));
    };
    let cell = pick(rng, &["normal", "reduce"]);
    let concat = format!("{cell}_concat");
    let what = match rng.below(10) {
        0..=1 => None,
        2 => return format!("text: {}", mutate_json_text(rng, text)),
        3 => op_pair(rng, &mut g, cell).map(|(k, pair)| {
            pair[0] = hostile_op(rng);
            format!("{cell}[{k}] op = {}", pair[0])
        }),
        4 => op_pair(rng, &mut g, cell).map(|(k, pair)| {
            pair[1] = if rng.bernoulli(0.5) {
                json!(rng.below(12))
            } else {
                hostile_value(rng)
            };
            format!("{cell}[{k}] input = {}", pair[1])
        }),
        5 => g
            .get_mut(&concat)
            .and_then(Value::as_array_mut)
            .filter(|c| !c.is_empty())
            .map(|c| {
                let k = rng.below(c.len());
                c[k] = if rng.bernoulli(0.5) {
                    json!(rng.below(12))
                } else {
                    hostile_value(rng)
                };
                format!("{concat}[{k}] = {}", c[k])
            }),
        6 => {
            // More nodes: pairs appended that read valid earlier states, all concatenated.
            let extra = 1 + rng.below(8);
            let states = g.get_mut(cell).and_then(Value::as_array_mut).map(|ops| {
                for _ in 0..extra {
                    let node = ops.len() / 2;
                    let p = pick(rng, &Primitive::ALL[1..]).name();
                    ops.push(json!([p, rng.below(node + 2)]));
                    ops.push(json!([p, rng.below(node + 2)]));
                }
                ops.len() / 2 + 2
            });
            states.map(|states| {
                g[&concat] = json!((2..states).collect::<Vec<_>>());
                format!("{cell} grew {extra} nodes")
            })
        }
        7 => op_pair(rng, &mut g, cell).map(|(k, pair)| {
            // A tuple with the wrong arity.
            if rng.bernoulli(0.5) {
                pair.pop();
            } else {
                pair.push(json!(0));
            }
            format!("{cell}[{k}] has {} items", pair.len())
        }),
        _ => {
            let mut path = "genotype".to_string();
            mutate_json(rng, &mut g, &mut path);
            Some(path)
        }
    };
    match what {
        Some(what) => {
            *text = serde_json::to_vec_pretty(&g).unwrap();
            what
        }
        None => format!("bytes: {}", mutate_bytes(rng, text)),
    }
}

/// Builds and runs a tiny network from a genotype the reader accepted: any error is clean, but
/// a genotype `resolve_genotype` accepts must never panic the network code.
fn use_genotype(be: &Cpu<f32>, g: Genotype) {
    let config = EvalConfig {
        layers: 3,
        ..small_config(g)
    };
    if let Ok(mut net) = EvalNetwork::new(be, config, 1) {
        let x = Tensor::from_host(be, &[0.25f32; 64], [1, 1, 8, 8].as_slice()).unwrap();
        let _ = eval_logits(be, &mut net, &x);
    }
}

#[test]
fn genotype_reader_survives_mutations() {
    let mut fz = Fuzz::new("genotype", 0x6e70_0004, 500);
    let tmp = TempDir::new("genotype");
    let be = Cpu::<f32>::new();
    let darts = Genotype::builtin("DARTS_V2").unwrap();
    let valid = darts.to_json().into_bytes();
    let good = tmp.0.join("genotype.json");
    std::fs::write(&good, &valid).unwrap();
    assert_eq!(resolve_genotype(good.to_str().unwrap()).unwrap(), darts);
    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut text = valid.clone();
        let rounds = if rng.bernoulli(0.3) {
            2 + rng.below(2)
        } else {
            1
        };
        let what: Vec<String> = (0..rounds)
            .map(|_| mutate_genotype(&mut rng, &mut text))
            .collect();
        let mutation = what.join(", then ");
        let path = tmp.0.join(format!("case-{case}.json"));
        std::fs::write(&path, &text).unwrap();
        let spec = path.to_str().unwrap();
        let named = [path.as_path()];
        let read = fz.check(
            case,
            &mutation,
            "resolve_genotype",
            &named,
            no_exception,
            || resolve_genotype(spec),
        );
        if let Some(g) = read {
            fz.no_panic(case, &mutation, "building a network from it", || {
                use_genotype(&be, g)
            });
        }
        let _ = std::fs::remove_file(&path);
    }
    fz.finish();
}

/// `Genotype::from_weights` (the search's alphas to a genotype, alphas that come from a
/// checkpoint on resume) with tables of any shape and any values: an error or a valid genotype.
#[test]
fn genotype_from_weights_survives_any_table() {
    let mut fz = Fuzz::new("from_weights", 0xa1fa_0005, 500);
    for case in 0..fz.cases {
        let mut rng = fz.rng(case);
        let mut ops: Vec<Primitive> = Primitive::ALL
            .into_iter()
            .filter(|_| rng.bernoulli(0.6))
            .collect();
        rng.shuffle(&mut ops);
        let steps = if rng.bernoulli(0.1) {
            20 + rng.below(20)
        } else {
            rng.below(6)
        };
        let multiplier = rng.below(steps + 3);
        let edges = steps * (steps + 3) / 2;
        // Mostly the right shape (so that the values are what is tested), now and then
        // the wrong number of rows or one row of the wrong length.
        let table = |rng: &mut Rng| -> Vec<Vec<f64>> {
            let rows = if rng.bernoulli(0.9) {
                edges
            } else {
                rng.below(edges + 3)
            };
            let odd_row = rng.bernoulli(0.1).then(|| rng.below(rows.max(1)));
            (0..rows)
                .map(|r| {
                    let cols = if odd_row == Some(r) {
                        rng.below(ops.len() + 3)
                    } else {
                        ops.len()
                    };
                    (0..cols)
                        .map(|_| match rng.below(12) {
                            0 => f64::NAN,
                            1 => f64::INFINITY,
                            2 => f64::NEG_INFINITY,
                            3 => 0.0,
                            _ => rng.uniform(),
                        })
                        .collect()
                })
                .collect()
        };
        let (normal, reduce) = (table(&mut rng), table(&mut rng));
        let mutation = format!(
            "ops {ops:?}, steps {steps}, multiplier {multiplier}, {}x{:?} / {}x{:?} weights",
            normal.len(),
            normal.first().map(Vec::len),
            reduce.len(),
            reduce.first().map(Vec::len)
        );
        let made = fz.check(case, &mutation, "from_weights", &[], no_exception, || {
            Genotype::from_weights(&normal, &reduce, &ops, steps, multiplier)
        });
        if let Some(g) = made {
            if let Err(e) = validate_genotype(&g) {
                fz.fail(case, &mutation, format!("an invalid genotype: {e}"));
            }
        }
    }
    fz.finish();
}
