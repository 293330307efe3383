//! `load_safetensors` converts other dtypes to f32 explicitly and refuses what f32 cannot
//! hold: F16/BF16 widen exactly, F64 rounds (beyond f32's range: refused), I64 only where
//! exact (|v| <= 2^24), other dtypes refused; each refusal names the tensor.

use nasrs::io::load_safetensors;
use safetensors::tensor::{serialize_to_file, Dtype, TensorView};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    let view = TensorView::new(dtype, shape, &bytes).expect("view");
    serialize_to_file(vec![(name.to_string(), view)], None, &path).expect("write");
    path
}

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-st-dtypes-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

#[test]
fn narrow_floats_widen_exactly() {
    let d = tmp();
    let h: Vec<u8> = [1.5f32, -0.25, 3.0e4]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let (t, _) = load_safetensors(&write(&d, "w_f16", Dtype::F16, vec![3], h)).expect("f16");
    assert_eq!(t["w_f16"].data, vec![1.5, -0.25, 3.0e4]);
    let b: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let (t, _) = load_safetensors(&write(&d, "w_bf16", Dtype::BF16, vec![2], b)).expect("bf16");
    assert_eq!(t["w_bf16"].data, vec![1.5, -2.0]);
}

#[test]
fn f64_rounds_but_never_overflows_silently() {
    let d = tmp();
    let ok: Vec<u8> = [0.1f64, -3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (t, _) = load_safetensors(&write(&d, "w_f64", Dtype::F64, vec![2], ok)).expect("f64");
    assert_eq!(t["w_f64"].data, vec![0.1f32, -3.0]);
    let big: Vec<u8> = [1.0f64, 1e300]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let err = load_safetensors(&write(&d, "w_big", Dtype::F64, vec![2], big))
        .expect_err("beyond f32")
        .to_string();
    assert!(
        err.contains("w_big") && err.contains("beyond f32's range"),
        "{err}"
    );
}

#[test]
fn i64_only_where_f32_is_exact() {
    let d = tmp();
    let ok: Vec<u8> = [7i64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let (t, _) = load_safetensors(&write(&d, "bn.num_batches_tracked", Dtype::I64, vec![], ok))
        .expect("counter");
    assert_eq!(t["bn.num_batches_tracked"].data, vec![7.0]);
    let big: Vec<u8> = [(1i64 << 24) + 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let err = load_safetensors(&write(&d, "counter", Dtype::I64, vec![1], big))
        .expect_err("inexact")
        .to_string();
    assert!(err.contains("counter") && err.contains("16777217"), "{err}");
}

#[test]
fn other_dtypes_are_refused_by_name() {
    let d = tmp();
    let err = load_safetensors(&write(&d, "mask", Dtype::U8, vec![2], vec![0, 1]))
        .expect_err("u8")
        .to_string();
    assert!(err.contains("mask") && err.contains("U8"), "{err}");
}
