//! Tests of `nasrs::data` between the readers and the batches: the synthetic task,
//! normalisation with the dataset's constants, and augmentation (crop, flip, cutout,
//! deterministic).

mod common;

use common::data::err_text;
use nasrs::data::augment::Augment;
use nasrs::data::loader::make_batch;
use nasrs::data::{load, synthetic, Dataset, DatasetKind};
use nasrs::Rng;
use std::collections::HashSet;
use std::path::Path;

// ---- synthetic --------------------------------------------------------------------------------

#[test]
fn synthetic_is_deterministic_normalised_and_learnable() {
    let a = synthetic(400, 3, 16, 16, 10, 0).unwrap();
    assert_eq!(a, synthetic(400, 3, 16, 16, 10, 0).unwrap());
    let test = synthetic(200, 3, 16, 16, 10, 1).unwrap();
    assert_ne!(a.images[..768], test.images[..768]);
    assert!(a.class_counts().iter().all(|&k| k == 40));

    // The carried mean/std are the data's: a normalised full pass has mean 0 and std 1.
    assert_eq!((a.mean.clone(), a.std.clone()), a.channel_stats());
    let all = make_batch(
        &a,
        &(0..a.n).collect::<Vec<_>>(),
        &Augment::none(),
        &mut Rng::new(0),
    )
    .unwrap();
    for ch in 0..3 {
        let vals: Vec<f64> = (0..a.n)
            .flat_map(|i| {
                all.images[(i * 3 + ch) * 256..(i * 3 + ch + 1) * 256]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let s = (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64).sqrt();
        assert!(
            m.abs() < 1e-4 && (s - 1.0).abs() < 1e-4,
            "channel {ch}: mean {m} std {s}"
        );
    }

    // Learnable: class centroids of the seed-0 set classify the seed-1 set far above chance.
    let len = a.sample_len();
    let mut centroids = vec![vec![0f64; len]; 10];
    for i in 0..a.n {
        for (c, &p) in centroids[a.labels[i] as usize].iter_mut().zip(a.image(i)) {
            *c += p as f64 / 40.0;
        }
    }
    let correct = (0..test.n)
        .filter(|&i| {
            let d = |c: &Vec<f64>| {
                c.iter()
                    .zip(test.image(i))
                    .map(|(c, &p)| (c - p as f64).powi(2))
                    .sum::<f64>()
            };
            let best = (0..10)
                .min_by(|&x, &y| d(&centroids[x]).total_cmp(&d(&centroids[y])))
                .unwrap();
            best as u32 == test.labels[i]
        })
        .count();
    assert!(
        correct as f64 / test.n as f64 > 0.9,
        "nearest-centroid accuracy {correct}/{}",
        test.n
    );

    // One channel and odd sizes work; zero sizes are errors naming the value.
    let g = synthetic(10, 1, 5, 9, 4, 2).unwrap();
    assert_eq!((g.c, g.h, g.w, g.images.len()), (1, 5, 9, 450));
    assert!(err_text(synthetic(10, 1, 5, 9, 0, 2)).contains("classes 0"));
    let (tr, te) = load(DatasetKind::Synthetic, Path::new("/nonexistent")).unwrap();
    assert_eq!((tr.c, tr.h, tr.w, tr.classes), (3, 32, 32, 10));
    assert!(tr.n > te.n && te.n > 0);
}

// ---- normalisation and augmentation --------------------------------------------------------------

/// A dataset whose sample `i` is a 2 x h x w image with pixel values from a fixed generator,
/// label `i % 10`, and the given normalisation.
fn random_images(n: usize, h: usize, w: usize, mean: [f32; 2], std: [f32; 2]) -> Dataset {
    let mut rng = Rng::new(5);
    // Pixels start at 1 so a padded (raw 0) pixel is distinguishable.
    let images = (0..n * 2 * h * w)
        .map(|_| 1 + rng.below(255) as u8)
        .collect();
    Dataset::new(
        "random",
        images,
        (0..n).map(|i| (i % 10) as u32).collect(),
        (2, h, w),
        10,
        mean.to_vec(),
        std.to_vec(),
    )
    .unwrap()
}

#[test]
fn normalisation_uses_the_dataset_constants() {
    let ds = random_images(4, 3, 5, [0.25, 0.5], [0.5, 0.125]);
    let b = make_batch(&ds, &[3, 1], &Augment::none(), &mut Rng::new(0)).unwrap();
    assert_eq!(
        (b.n, b.c, b.h, b.w, b.labels.clone()),
        (2, 2, 3, 5, vec![3, 1])
    );
    for (k, &i) in [3usize, 1].iter().enumerate() {
        for (j, &p) in ds.image(i).iter().enumerate() {
            let ch = j / 15;
            let want = (p as f32 / 255.0 - ds.mean[ch]) / ds.std[ch];
            assert!((b.images[k * 30 + j] - want).abs() < 1e-6);
        }
    }
    let e = err_text(make_batch(&ds, &[4], &Augment::none(), &mut Rng::new(0)));
    assert!(e.contains("4 is out of range"), "{e}");
}

/// The unaugmented normalised value of sample `i`, channel `ch`, at (y, x), or the padding
/// value where (y, x) is outside the image.
fn plain_value(ds: &Dataset, i: usize, ch: usize, y: isize, x: isize) -> f32 {
    let p = if y < 0 || x < 0 || y >= ds.h as isize || x >= ds.w as isize {
        0
    } else {
        ds.image(i)[(ch * ds.h + y as usize) * ds.w + x as usize]
    };
    ((p as f64 / 255.0 - ds.mean[ch] as f64) / ds.std[ch] as f64) as f32
}

#[test]
fn augmentation_is_crop_flip_cutout_and_deterministic() {
    let (h, w) = (8, 10);
    let ds = random_images(40, h, w, [0.4, 0.6], [0.3, 0.2]);
    let idx: Vec<usize> = (0..40).collect();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-5;

    // Crop + flip: every output is the input shifted by (dy, dx) in [-4, 4]^2, maybe mirrored,
    // with padding outside; several distinct choices occur.
    let aug = Augment {
        crop_pad: Some(4),
        flip: true,
        cutout: None,
    };
    let b = make_batch(&ds, &idx, &aug, &mut Rng::new(9)).unwrap();
    assert_eq!(
        (b.n, b.c, b.h, b.w, b.images.len()),
        (40, 2, h, w, 40 * 2 * h * w)
    );
    let mut seen = HashSet::new();
    for i in 0..40 {
        let out = &b.images[i * 2 * h * w..(i + 1) * 2 * h * w];
        let found = (-4isize..=4)
            .flat_map(|dy| (-4isize..=4).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
            .find(|&(dy, dx, flip)| {
                (0..2).all(|ch| {
                    (0..h).all(|y| {
                        (0..w).all(|x| {
                            let cx = if flip { w - 1 - x } else { x };
                            close(
                                out[(ch * h + y) * w + x],
                                plain_value(&ds, i, ch, y as isize + dy, cx as isize + dx),
                            )
                        })
                    })
                })
            });
        let f = found.unwrap_or_else(|| panic!("sample {i} is no crop/flip of its input"));
        seen.insert(f);
    }
    assert!(
        seen.len() > 10 && seen.iter().any(|s| s.2) && seen.iter().any(|s| !s.2),
        "{seen:?}"
    );
    // Same generator state, same batch; a different one, a different batch.
    assert_eq!(make_batch(&ds, &idx, &aug, &mut Rng::new(9)).unwrap(), b);
    assert_ne!(make_batch(&ds, &idx, &aug, &mut Rng::new(10)).unwrap(), b);

    // Cutout alone: the input except an axis-aligned rectangle of zeros of side <= 4 (L = 5:
    // L/2 = 2 each side of the centre, as DARTS' Cutout), clipped at borders.
    let aug = Augment {
        crop_pad: None,
        flip: false,
        cutout: Some(5),
    };
    let b = make_batch(&ds, &idx, &aug, &mut Rng::new(1)).unwrap();
    let mut full_squares = 0;
    for i in 0..40 {
        let out = &b.images[i * 2 * h * w..(i + 1) * 2 * h * w];
        let zeroed: Vec<(usize, usize)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (y, x)))
            .filter(|&(y, x)| out[y * w + x] == 0.0)
            .collect();
        assert!(!zeroed.is_empty(), "sample {i} has no cutout");
        let (y1, y2) = (
            zeroed.iter().map(|p| p.0).min().unwrap(),
            zeroed.iter().map(|p| p.0).max().unwrap(),
        );
        let (x1, x2) = (
            zeroed.iter().map(|p| p.1).min().unwrap(),
            zeroed.iter().map(|p| p.1).max().unwrap(),
        );
        assert_eq!(
            zeroed.len(),
            (y2 - y1 + 1) * (x2 - x1 + 1),
            "sample {i}: cutout is not a rectangle"
        );
        assert!(y2 - y1 < 4 && x2 - x1 < 4);
        full_squares += usize::from(y2 - y1 == 3 && x2 - x1 == 3);
        for ch in 0..2 {
            for y in 0..h {
                for x in 0..w {
                    let v = out[(ch * h + y) * w + x];
                    let inside = (y1..=y2).contains(&y) && (x1..=x2).contains(&x);
                    assert!(if inside {
                        v == 0.0
                    } else {
                        close(v, plain_value(&ds, i, ch, y as isize, x as isize))
                    });
                }
            }
        }
    }
    assert!(
        full_squares > 0 && full_squares < 40,
        "{full_squares} full 4x4 squares"
    );
}
