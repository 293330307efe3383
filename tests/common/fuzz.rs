//! The harness the reader fuzz tests share (`tests/fuzz_*.rs`): seeded cases that each replay
//! on their own, every read checked to give Ok or an error naming the file, never a panic, a
//! failure report with the seed, case and mutation; the test binary's allocation cap; and
//! what a loaded set or a small network must survive.
//!
//! The allocation cap: each fuzz binary installs [`CappedAlloc`] as its global allocator,
//! which refuses any single allocation over `ALLOC_CAP` (the inputs are a few KB): a reader
//! that trusts a header claiming 2^40 images instead of checking it against the file size
//! aborts the run, printing the case that did it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: common::fuzz::CappedAlloc = common::fuzz::CappedAlloc;
//! ```
//!
//! The seeds are fixed so CI is deterministic; `NASRS_FUZZ_SEED` and `NASRS_FUZZ_CASES`
//! explore other cases (`NASRS_FUZZ_CASES=5000 cargo test --release --test fuzz_idx`);
//! `NASRS_FUZZ_VERBOSE=1` prints every error message (with `--nocapture`).

use nasrs::data::SequentialBatches;
use nasrs::nas::eval_model::EvalConfig;
use nasrs::nas::genotype::Genotype;
use nasrs::{Error, Rng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
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

pub fn set_case_label(label: &str) {
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

pub struct CappedAlloc;

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

// ---- the harness ---------------------------------------------------------------------------

/// Where a panic happened, kept by a hook so a failure report can name the line.
pub fn install_panic_hook() {
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
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let at = LAST_PANIC_AT.with(|p| p.borrow().clone());
    format!("panicked at {at}: {msg}")
}

/// Every error must name the file.
pub fn no_exception(_: &Error) -> bool {
    false
}

/// One format's run: its seed, what each reader answered, and the failures found.
pub struct Fuzz {
    name: &'static str,
    seed: u64,
    pub cases: usize,
    /// Per reader: (Ok, clean errors, known issues tolerated).
    answers: BTreeMap<&'static str, (usize, usize, usize)>,
    failures: Vec<String>,
}

impl Fuzz {
    pub fn new(name: &'static str, seed: u64, cases: usize) -> Self {
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
    pub fn rng(&self, i: usize) -> Rng {
        Rng::fork(self.seed, &format!("{}/{i}", self.name))
    }

    pub fn fail(&mut self, case: usize, mutation: &str, what: String) {
        self.failures.push(format!(
            "{} seed {} case {case} [{mutation}]: {what}",
            self.name, self.seed
        ));
    }

    /// Runs one read: Ok, or an error whose message names one of `paths` (when any are
    /// given) unless `known` says it is a known issue; a panic or an anonymous error is
    /// recorded as a failure.
    pub fn check<T>(
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
    pub fn no_panic(&mut self, case: usize, mutation: &str, what: &str, f: impl FnOnce()) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            let text = format!("{what} {}", panic_text(&*payload));
            self.fail(case, mutation, text);
        }
    }

    pub fn finish(self) {
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
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
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

// ---- what the readers' results must survive ------------------------------------------------

/// What a loaded set must satisfy, and what the training loop does with it first.
pub fn use_dataset(ds: &nasrs::data::Dataset) {
    assert!(ds.n > 0 && ds.sample_len() > 0, "{}: empty", ds.name);
    assert_eq!(ds.images.len(), ds.n * ds.sample_len(), "{}", ds.name);
    assert!(ds.labels.iter().all(|&l| (l as usize) < ds.classes));
    let (mean, std) = ds.channel_stats();
    assert!(mean.iter().chain(&std).all(|v| v.is_finite()));
    let seen: usize = SequentialBatches::new(ds, 4).unwrap().map(|b| b.n).sum();
    assert_eq!(seen, ds.n);
}

/// A small evaluation network of `genotype` on 1 x 8 x 8 images, 3 classes.
pub fn small_config(genotype: Genotype) -> EvalConfig {
    EvalConfig {
        genotype,
        channels: 2,
        layers: 2,
        classes: 3,
        in_channels: 1,
        auxiliary: false,
    }
}
