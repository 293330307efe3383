//! Tests of `nasrs::data`'s readers: the bundled MNIST and files written here (good,
//! truncated, malformed, missing), IDX and CIFAR-10 binary, dataset kinds, and the
//! consistency checks of `Dataset::new`.

mod common;

use common::data::err_text;
use nasrs::data::{
    default_data_dir, load, Dataset, DatasetKind, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN,
    FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD,
};
use nasrs::Rng;
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
