//! Resizing a dataset's images to a square side (`--resolution`, a trial's `resolution`):
//! bilinear interpolation on the raw u8 pixels with half-pixel centres (PyTorch's
//! `F.interpolate(mode="bilinear", align_corners=False)` without antialiasing), rounded to
//! the nearest byte. It runs once, when the data is loaded, so training and augmentation see
//! images of the new size; the same input gives the same bytes on every machine (integer
//! source indices and f64 weights, no threads).

use super::Dataset;
use crate::error::{Error, Result};

/// The largest side `--resolution` accepts (EfficientNet-B7 trains at 600).
pub const MAX_RESOLUTION: usize = 1024;
/// The most pixel bytes a resized set may hold (8 GiB): more is a mistake, not a run.
pub const MAX_RESIZED_BYTES: u64 = 8 << 30;

/// Refuses a side outside `1..=MAX_RESOLUTION`, naming `--resolution`.
pub fn check_resolution(side: usize) -> Result<()> {
    if side == 0 || side > MAX_RESOLUTION {
        return Err(Error::invalid(
            "--resolution",
            format!("{side} is not an image side in 1..={MAX_RESOLUTION}"),
        ));
    }
    Ok(())
}

/// For each output coordinate along one axis of `src` -> `dst` pixels: the two source
/// indices and the weight of the second (half-pixel centres, clamped at the borders).
fn axis_taps(src: usize, dst: usize) -> Vec<(usize, usize, f64)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| {
            let x = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (x.floor() as usize).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            (i0, i1, x - i0 as f64)
        })
        .collect()
}

/// One `h`x`w` plane resized bilinearly to `oh`x`ow` (all sides at least 1).
pub fn resize_plane(src: &[u8], h: usize, w: usize, oh: usize, ow: usize) -> Vec<u8> {
    let (ys, xs) = (axis_taps(h, oh), axis_taps(w, ow));
    let px = |y: usize, x: usize| f64::from(src[y * w + x]);
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = px(y0, x0) * (1.0 - fx) + px(y0, x1) * fx;
            let bottom = px(y1, x0) * (1.0 - fx) + px(y1, x1) * fx;
            let v = top * (1.0 - fy) + bottom * fy;
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// `data` with every image resized to `side`x`side` (the same set when it already is);
/// labels, classes and normalisation constants unchanged.
pub fn resize_dataset(data: &Dataset, side: usize) -> Result<Dataset> {
    check_resolution(side)?;
    if data.h == side && data.w == side {
        return Ok(data.clone());
    }
    let bytes = (data.n as u64)
        .saturating_mul(data.c as u64)
        .saturating_mul((side * side) as u64);
    if bytes > MAX_RESIZED_BYTES {
        return Err(Error::invalid(
            "--resolution",
            format!(
                "{side}x{side} makes {} images of {} channel(s) {bytes} bytes, over the \
                 {MAX_RESIZED_BYTES} this accepts (use fewer images or a smaller side)",
                data.n, data.c
            ),
        ));
    }
    let plane = data.h * data.w;
    let mut images = Vec::with_capacity(bytes as usize);
    for src in data.images.chunks_exact(plane) {
        images.extend(resize_plane(src, data.h, data.w, side, side));
    }
    Dataset::new(
        data.name.clone(),
        images,
        data.labels.clone(),
        (data.c, side, side),
        data.classes,
        data.mean.clone(),
        data.std.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(images: Vec<u8>, c: usize, h: usize, w: usize) -> Dataset {
        let n = images.len() / (c * h * w);
        Dataset::new(
            "t",
            images,
            vec![0; n],
            (c, h, w),
            1,
            vec![0.5; c],
            vec![0.5; c],
        )
        .unwrap()
    }

    #[test]
    fn the_same_size_is_the_identity() {
        let d = set((0..=255).collect(), 1, 16, 16);
        assert_eq!(resize_dataset(&d, 16).unwrap(), d);
        // Resampling at the same size is the identity too (every tap lands on a pixel).
        assert_eq!(resize_plane(&d.images, 16, 16, 16, 16), d.images);
    }

    #[test]
    fn known_values_of_a_2x2_upsampled_to_4x4() {
        // PyTorch's align_corners=False taps worked by hand: source x = (o + 0.5) / 2 - 0.5,
        // clamped at 0, so row 1 is 0.75 * row 0 + 0.25 * row 3 of the width-resized rows.
        let got = resize_plane(&[0, 100, 200, 40], 2, 2, 4, 4);
        let want = [
            0, 25, 75, 100, //
            50, 59, 76, 85, //
            150, 126, 79, 55, //
            200, 160, 80, 40,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn downsampling_by_two_averages_pairs() {
        // Half-pixel centres: each output pixel is the mean of a 2x2 block.
        let got = resize_plane(&[0, 10, 20, 30, 40, 50, 60, 70], 1, 8, 1, 4);
        assert_eq!(got, [5, 25, 45, 65]);
    }

    #[test]
    fn channels_and_images_are_resized_one_plane_each() {
        let d = set(vec![10, 10, 10, 10, 200, 200, 200, 200], 2, 2, 2);
        let r = resize_dataset(&d, 3).unwrap();
        assert_eq!((r.n, r.c, r.h, r.w), (1, 2, 3, 3));
        assert_eq!(&r.images[..9], &[10; 9]);
        assert_eq!(&r.images[9..], &[200; 9]);
    }

    #[test]
    fn bad_sides_are_refused_naming_the_flag() {
        let d = set(vec![0; 4], 1, 2, 2);
        for side in [0, MAX_RESOLUTION + 1, 100_000] {
            let e = resize_dataset(&d, side).unwrap_err().to_string();
            assert!(
                e.contains("--resolution") && e.contains(&side.to_string()),
                "{e}"
            );
        }
        let big = set(vec![0; 64 * 4], 1, 2, 2);
        // 64 images are small at any accepted side: only the byte limit could refuse them.
        assert!(resize_dataset(&big, MAX_RESOLUTION).is_ok());
    }
}
