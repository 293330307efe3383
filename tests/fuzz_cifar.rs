//! Hostile CIFAR-10 binary batches never panic `data::load`: a valid set of the six files,
//! flat or in the archive's folder, with one file mutated (bytes, out-of-range labels, a
//! partial record, missing, a directory in its place), must load or give an error naming the
//! file. The harness, the allocation cap and the mutations are shared (common/fuzz.rs,
//! common/mutate.rs).

mod common;

use common::fuzz::{no_exception, use_dataset, CappedAlloc, Fuzz, TempDir};
use common::mutate::{mutate_bytes, pick, random_bytes};
use nasrs::data::{load, DatasetKind};
use nasrs::Rng;

// The allocation cap (common/fuzz.rs): a size taken from a header unchecked aborts the run.
#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

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
