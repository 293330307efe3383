//! Tests of `nasrs::data`: the readers on the bundled MNIST and on files written here (good,
//! truncated, malformed, missing), the synthetic task, normalisation, augmentation and the
//! batch iterators (coverage, reshuffling, determinism, exact resume).

use nasrs::data::augment::Augment;
use nasrs::data::loader::make_batch;
use nasrs::data::{
    default_data_dir, load, split_indices, synthetic, BatchIterator, BatchIteratorState, Dataset,
    DatasetKind, SequentialBatches, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN,
    FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD,
};
use nasrs::Rng;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir, unique to this test and process.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gunzip(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn idx_bytes(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Writes a small MNIST-layout directory: `n_train` / `n_test` images of 1 x h x w.
fn write_small_mnist(dir: &Path, n_train: usize, n_test: usize, h: usize, w: usize) {
    let mut rng = Rng::new(3);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let px: Vec<u8> = (0..n * h * w).map(|_| rng.below(256) as u8).collect();
        let lb: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx_bytes(8, &[n as u32, h as u32, w as u32], &px),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_bytes(8, &[n as u32], &lb),
        )
        .unwrap();
    }
}

fn err_text<T>(r: nasrs::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

// ---- MNIST / IDX ---------------------------------------------------------------------------

#[test]
fn bundled_mnist_loads_gzipped_and_uncompressed() {
    let dir = default_data_dir();
    let (train, test) = load(DatasetKind::Mnist, &dir).unwrap();
    assert_eq!((train.n, test.n), (7996, 2004));
    for ds in [&train, &test] {
        assert_eq!((ds.c, ds.h, ds.w, ds.classes), (1, 28, 28, 10));
        assert_eq!(ds.images.len(), ds.n * 28 * 28);
        assert_eq!(ds.labels.len(), ds.n);
        assert!(ds.labels.iter().all(|&l| l < 10));
        // About 800 / 200 digits of each class (the bundle is split 80/20 per class).
        let per_class = ds.n / 10;
        assert!(
            ds.class_counts()
                .iter()
                .all(|&k| k > per_class * 8 / 10 && k < per_class * 12 / 10),
            "{:?}",
            ds.class_counts()
        );
        assert_eq!(
            (ds.mean.clone(), ds.std.clone()),
            (vec![MNIST_MEAN], vec![MNIST_STD])
        );
    }
    // Real digits: mostly black background, so the pixel mean is near MNIST's 0.13.
    let (m, s) = train.channel_stats();
    assert!(
        (m[0] - 0.13).abs() < 0.04 && (s[0] - 0.31).abs() < 0.05,
        "mean {m:?} std {s:?}"
    );

    // The same files gunzipped load to the identical dataset.
    let plain = temp_dir("mnist-plain");
    for f in MNIST_FILES {
        std::fs::write(plain.join(f), gunzip(&dir.join(format!("{f}.gz")))).unwrap();
    }
    let (train2, test2) = load(DatasetKind::Mnist, &plain).unwrap();
    assert_eq!(train2, train);
    assert_eq!(test2, test);

    // Fashion-MNIST is the same layout with its own constants.
    let (ftrain, _) = load(DatasetKind::FashionMnist, &plain).unwrap();
    assert_eq!(ftrain.images, train.images);
    assert_eq!(
        (ftrain.mean[0], ftrain.std[0]),
        (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    );
    std::fs::remove_dir_all(plain).unwrap();
}

#[test]
fn idx_errors_name_the_file() {
    let dir = temp_dir("idx-errors");
    let images = dir.join("train-images-idx3-ubyte");
    let labels = dir.join("train-labels-idx1-ubyte");

    // Missing: every file absent, the error names the first one looked for.
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("not found"),
        "{e}"
    );

    // Truncated data.
    write_small_mnist(&dir, 6, 4, 5, 7);
    let full = std::fs::read(&images).unwrap();
    std::fs::write(&images, &full[..full.len() - 3]).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&images.display().to_string()) && e.contains("truncated"),
        "{e}"
    );

    // Truncated inside the header.
    std::fs::write(&images, &full[..9]).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&images.display().to_string()) && e.contains("header"),
        "{e}"
    );

    // Trailing garbage.
    let mut long = full.clone();
    long.push(0);
    std::fs::write(&images, &long).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&images.display().to_string()) && e.contains("1 bytes past"),
        "{e}"
    );

    // Bad magic (a type code that is not unsigned byte).
    let mut bad = full.clone();
    bad[2] = 0x0d;
    std::fs::write(&images, &bad).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&images.display().to_string()) && e.contains("bad magic 0x00000d03"),
        "{e}"
    );

    // Labels that are idx3 are rejected as images would be... and a label file with the
    // wrong count names the label file.
    std::fs::write(&images, &full).unwrap();
    std::fs::write(&labels, idx_bytes(8, &[5], &[1, 2, 3, 4, 5])).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&labels.display().to_string()) && e.contains("5 labels for the 6 images"),
        "{e}"
    );

    // A label that is not a class.
    std::fs::write(&labels, idx_bytes(8, &[6], &[1, 2, 3, 10, 5, 0])).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&labels.display().to_string()) && e.contains("label 10 at index 3"),
        "{e}"
    );

    // A corrupt gzip stream names the file too.
    std::fs::write(&labels, idx_bytes(8, &[6], &[1, 2, 3, 4, 5, 0])).unwrap();
    std::fs::remove_file(&images).unwrap();
    let gz = dir.join("train-images-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &full).unwrap();
    let zipped = enc.finish().unwrap();
    std::fs::write(&gz, &zipped[..zipped.len() / 2]).unwrap();
    let e = err_text(load(DatasetKind::Mnist, &dir));
    assert!(
        e.contains(&gz.display().to_string()) && e.contains("gzip"),
        "{e}"
    );
    // ...and the whole stream loads.
    std::fs::write(&gz, &zipped).unwrap();
    let (train, test) = load(DatasetKind::Mnist, &dir).unwrap();
    assert_eq!((train.n, train.h, train.w, test.n), (6, 5, 7, 4));
    assert_eq!(train.images, full[16..].to_vec());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idx4_images_give_channels() {
    let dir = temp_dir("idx4");
    write_small_mnist(&dir, 3, 2, 4, 4);
    let px: Vec<u8> = (0..3 * 2 * 5 * 4).map(|i| i as u8).collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(8, &[3, 2, 5, 4], &px),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(8, &[2, 2, 5, 4], &px[..80]),
    )
    .unwrap();
    let (train, test) = load(DatasetKind::Mnist, &dir).unwrap();
    assert_eq!((train.n, train.c, train.h, train.w), (3, 2, 5, 4));
    assert_eq!(train.images, px);
    assert_eq!(test.image(1), &px[40..80]);
    assert_eq!(train.mean, vec![MNIST_MEAN; 2]);
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- CIFAR-10 --------------------------------------------------------------------------------

fn cifar_records(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<u8>, Vec<u32>) {
    let mut file = Vec::new();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        let l = rng.below(10) as u8;
        let px: Vec<u8> = (0..3072).map(|_| rng.below(256) as u8).collect();
        file.push(l);
        file.extend_from_slice(&px);
        images.extend(px);
        labels.push(l as u32);
    }
    (file, images, labels)
}

#[test]
fn cifar_binary_round_trips() {
    let root = temp_dir("cifar");
    // In the sub-directory the official archive unpacks to.
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(11);
    let (mut want_images, mut want_labels) = (Vec::new(), Vec::new());
    for b in 1..=5 {
        let (file, im, lb) = cifar_records(&mut rng, b % 3 + 1);
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), file).unwrap();
        want_images.extend(im);
        want_labels.extend(lb);
    }
    let (test_file, test_images, test_labels) = cifar_records(&mut rng, 3);
    std::fs::write(dir.join("test_batch.bin"), &test_file).unwrap();

    let (train, test) = load(DatasetKind::Cifar10, &root).unwrap();
    assert_eq!(
        (train.n, train.c, train.h, train.w, train.classes),
        (want_labels.len(), 3, 32, 32, 10)
    );
    assert_eq!(train.images, want_images);
    assert_eq!(train.labels, want_labels);
    assert_eq!(
        (test.images.clone(), test.labels.clone()),
        (test_images, test_labels)
    );
    assert_eq!(train.mean, CIFAR10_MEAN.to_vec());
    assert_eq!(test.std, CIFAR10_STD.to_vec());
    // The directory itself works as well as its parent.
    assert_eq!(load(DatasetKind::Cifar10, &dir).unwrap().0, train);

    // Truncated record, bad label, missing file: each names the file.
    let tb = dir.join("test_batch.bin");
    std::fs::write(&tb, &test_file[..test_file.len() - 1]).unwrap();
    let e = err_text(load(DatasetKind::Cifar10, &dir));
    assert!(
        e.contains(&tb.display().to_string()) && e.contains("3072 bytes over"),
        "{e}"
    );
    let mut bad = test_file.clone();
    bad[3073] = 10;
    std::fs::write(&tb, &bad).unwrap();
    let e = err_text(load(DatasetKind::Cifar10, &dir));
    assert!(
        e.contains(&tb.display().to_string()) && e.contains("record 1 has label 10"),
        "{e}"
    );
    let b3 = dir.join("data_batch_3.bin");
    std::fs::remove_file(&b3).unwrap();
    let e = err_text(load(DatasetKind::Cifar10, &dir));
    assert!(e.contains(&b3.display().to_string()), "{e}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn dataset_kind_parses_and_rejects() {
    for k in DatasetKind::ALL {
        assert_eq!(k.name().parse::<DatasetKind>().unwrap(), k);
        assert_eq!(k.to_string(), k.name());
    }
    assert_eq!(
        "CIFAR10".parse::<DatasetKind>().unwrap(),
        DatasetKind::Cifar10
    );
    assert_eq!(
        "fashion-mnist".parse::<DatasetKind>().unwrap(),
        DatasetKind::FashionMnist
    );
    let e = "imagenet".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(e.contains("\"imagenet\"") && e.contains("cifar10"), "{e}");
}

#[test]
fn dataset_new_checks_consistency() {
    let ok = Dataset::new(
        "t",
        vec![0; 12],
        vec![0, 1, 2],
        (1, 2, 2),
        3,
        vec![0.5],
        vec![0.25],
    );
    assert!(ok.is_ok());
    let e = err_text(Dataset::new(
        "t",
        vec![0; 11],
        vec![0, 1, 2],
        (1, 2, 2),
        3,
        vec![0.5],
        vec![0.25],
    ));
    assert!(e.contains("11 pixel bytes"), "{e}");
    let e = err_text(Dataset::new(
        "t",
        vec![0; 12],
        vec![0, 1, 3],
        (1, 2, 2),
        3,
        vec![0.5],
        vec![0.25],
    ));
    assert!(e.contains("label 3 of sample 2"), "{e}");
    let e = err_text(Dataset::new(
        "t",
        vec![0; 12],
        vec![0, 1, 2],
        (1, 2, 2),
        3,
        vec![0.5],
        vec![0.0],
    ));
    assert!(e.contains("not positive"), "{e}");
    let e = err_text(Dataset::new(
        "t",
        vec![0; 12],
        vec![0, 1, 2],
        (1, 2, 2),
        3,
        vec![0.5, 0.5],
        vec![0.25],
    ));
    assert!(e.contains("2 means and 1 stds"), "{e}");
    let sub = ok.unwrap().subset(&[2, 0]).unwrap();
    assert_eq!(sub.labels, vec![2, 0]);
    assert!(err_text(
        Dataset::new("t", vec![0; 4], vec![0], (1, 2, 2), 1, vec![0.0], vec![1.0])
            .unwrap()
            .subset(&[1])
    )
    .contains("1 is out of range"));
}

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
