//! Tests of `nasrs::data`'s batches: the DARTS train/validation split and the batch
//! iterators (coverage, reshuffling, determinism, exact resume, sequential batches).

mod common;

use common::data::err_text;
use nasrs::data::augment::Augment;
use nasrs::data::{
    split_indices, synthetic, BatchIterator, BatchIteratorState, Dataset, SequentialBatches,
};
use nasrs::Rng;
use std::collections::HashSet;

// ---- iterators ----------------------------------------------------------------------------------

/// A dataset whose sample `i` stores `i` in its two pixels, so a batch tells which samples
/// it holds (mean 0, std 1: the normalised value is p / 255).
fn indexed(n: usize) -> Dataset {
    let images = (0..n)
        .flat_map(|i| [(i % 256) as u8, (i / 256) as u8])
        .collect();
    Dataset::new(
        "indexed",
        images,
        vec![0; n],
        (1, 1, 2),
        1,
        vec![0.0],
        vec![1.0],
    )
    .unwrap()
}

fn ids(b: &nasrs::data::Batch) -> Vec<usize> {
    b.images
        .chunks(2)
        .map(|p| (p[0] * 255.0).round() as usize + 256 * (p[1] * 255.0).round() as usize)
        .collect()
}

#[test]
fn split_indices_is_darts_split() {
    assert_eq!(
        split_indices(10, 0.5).unwrap(),
        ((0..5).collect(), (5..10).collect())
    );
    assert_eq!(
        split_indices(7, 0.5).unwrap(),
        ((0..3).collect(), (3..7).collect())
    );
    assert_eq!(split_indices(4, 1.0).unwrap(), ((0..4).collect(), vec![]));
    assert!(err_text(split_indices(4, 1.5)).contains("1.5"));
    assert!(split_indices(4, f64::NAN).is_err());
}

#[test]
fn batch_iterator_covers_reshuffles_and_drops_the_tail() {
    let ds = indexed(300);
    let pool: Vec<usize> = (100..200).collect();
    let mut it = BatchIterator::new(pool.clone(), Rng::new(42), Augment::none()).unwrap();
    assert_eq!(
        (it.len(), it.steps_per_epoch(10), it.steps_per_epoch(30)),
        (100, 10, 3)
    );
    let mut epochs = Vec::new();
    for e in 0..3u64 {
        let mut seen = Vec::new();
        for _ in 0..10 {
            let b = it.next_batch(&ds, 10).unwrap();
            assert_eq!(it.epoch(), e);
            assert_eq!(b.n, 10);
            seen.extend(ids(&b));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(
            sorted, pool,
            "epoch {e} does not cover the pool exactly once"
        );
        assert_ne!(seen, pool, "epoch {e} is not shuffled");
        epochs.push(seen);
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);

    // 25 samples, batch 10: two full batches an epoch, the 5 left over are dropped.
    let mut it = BatchIterator::new((0..25).collect(), Rng::new(1), Augment::none()).unwrap();
    let a: Vec<usize> = (0..2)
        .flat_map(|_| ids(&it.next_batch(&ds, 10).unwrap()))
        .collect();
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), 20);
    assert_eq!(it.epoch(), 0);
    let b = it.next_batch(&ds, 10).unwrap();
    assert_eq!((it.epoch(), b.n), (1, 10));
    assert!(err_text(it.next_batch(&ds, 26)).contains("26"));
    assert!(it.next_batch(&ds, 0).is_err());
    // Indices beyond the dataset are refused without moving the iterator.
    let small = indexed(20);
    let mut it2 = BatchIterator::new((0..25).collect(), Rng::new(1), Augment::none()).unwrap();
    let before = it2.state();
    assert!(err_text(it2.next_batch(&small, 25)).contains("out of range"));
    assert_eq!(it2.state(), before);
    assert!(BatchIterator::new(vec![], Rng::new(1), Augment::none()).is_err());
}

#[test]
fn batch_iterator_is_deterministic_and_resumes_exactly() {
    let ds = synthetic(64, 3, 8, 8, 4, 7).unwrap();
    let aug = Augment::cifar(Some(4));
    let make = |seed| BatchIterator::new((0..64).collect(), Rng::new(seed), aug).unwrap();
    let run = |it: &mut BatchIterator, k: usize| {
        (0..k)
            .map(|_| it.next_batch(&ds, 12).unwrap())
            .collect::<Vec<_>>()
    };
    let (mut a, mut b, mut c) = (make(3), make(3), make(4));
    let ra = run(&mut a, 12);
    assert_eq!(ra, run(&mut b, 12));
    assert_ne!(ra, run(&mut c, 12));

    // Stop after 7 batches (mid-epoch 1), save through JSON, continue: same batches as an
    // uninterrupted iterator, augmentation included.
    let mut whole = make(5);
    let mut first = make(5);
    let _ = run(&mut whole, 7);
    let _ = run(&mut first, 7);
    let json = serde_json::to_string(&first.state()).unwrap();
    let state: BatchIteratorState = serde_json::from_str(&json).unwrap();
    let mut resumed = BatchIterator::from_state(state).unwrap();
    assert_eq!((resumed.epoch(), resumed.augment()), (whole.epoch(), &aug));
    assert_eq!(run(&mut resumed, 15), run(&mut whole, 15));
    assert_eq!(resumed.epoch(), whole.epoch());

    let mut bad = first.state();
    bad.pos = bad.order.len() + 1;
    assert!(BatchIterator::from_state(bad).is_err());
}

#[test]
fn sequential_batches_cover_everything_once() {
    let ds = indexed(23);
    let it = SequentialBatches::new(&ds, 5).unwrap();
    assert_eq!(it.num_batches(), 5);
    let batches: Vec<_> = it.collect();
    assert_eq!(
        batches.iter().map(|b| b.n).collect::<Vec<_>>(),
        vec![5, 5, 5, 5, 3]
    );
    assert_eq!(
        batches.iter().flat_map(ids).collect::<Vec<_>>(),
        (0..23).collect::<Vec<_>>()
    );
    let sub: Vec<usize> = SequentialBatches::over(&ds, vec![4, 2, 9], 2)
        .unwrap()
        .flat_map(|b| ids(&b))
        .collect();
    assert_eq!(sub, vec![4, 2, 9]);
    assert!(SequentialBatches::new(&ds, 0).is_err());
    assert!(err_text(SequentialBatches::over(&ds, vec![23], 2)).contains("23 is out of range"));
}
