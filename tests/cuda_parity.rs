//! Parity of every device against the CPU reference, written once (`test_device!`): the CPU
//! case runs the harness CPU-vs-CPU (checks the harness itself and that it covers every op:
//! every error exactly zero), the CUDA simulation (feature `cuda-sim`) and GPU 0 (feature
//! `cuda`) run the same harness and must pass every row. Without a GPU the GPU case prints
//! "skipped: no GPU" and passes, unless `NASRS_REQUIRE_GPU=1`, which turns the skip into a
//! failure (for the GPU machine). Also: `--device` parsing and resolution return errors,
//! never panic.

mod common;

use common::{device_kind, DeviceKind};
use nasrs::backend::selftest::{all_passed, format_table, max_error, run_parity, ParityRow, TOL};
use nasrs::device::{resolve, DeviceChoice};
use nasrs::Backend;

/// Every trait method that computes something; each must appear in the parity rows.
const OPS: &[&str] = &[
    "add",
    "scale",
    "axpy",
    "scale_assign",
    "sum_squares",
    "dot",
    "relu_fwd",
    "relu_bwd",
    "sigmoid_fwd",
    "sigmoid_bwd",
    "tanh_fwd",
    "tanh_bwd",
    "silu_fwd",
    "silu_bwd",
    "mul",
    "copy_into",
    "zeros",
    "conv2d_fwd",
    "conv2d_bwd_data",
    "conv2d_bwd_data_into",
    "conv2d_bwd_weight",
    "max_pool2d_fwd",
    "max_pool2d_bwd",
    "max_pool2d_bwd_into",
    "avg_pool2d_fwd",
    "avg_pool2d_bwd",
    "avg_pool2d_bwd_into",
    "global_avg_pool_fwd",
    "global_avg_pool_bwd",
    "batch_norm_train_fwd",
    "batch_norm_eval_fwd",
    "batch_norm_bwd",
    "concat_channels",
    "split_channels",
    "shift_crop_fwd",
    "shift_crop_bwd",
    "linear_fwd",
    "linear_bwd",
    "softmax_cross_entropy_fwd",
    "softmax_cross_entropy_bwd",
    "drop_path",
    "channel_scale_fwd",
    "channel_scale_bwd",
    "to_bf16",
    "from_bf16",
    "mixed_op_fwd",
    "mixed_op_bwd",
    "mixed_op_bwd_into",
    "sgd_step",
    "adam_step",
    "sgd_step_many",
    "adam_step_many",
    "sum_squares_many",
    "grad_norm_scalars",
    "axpy_scaled",
    "fill",
    "upload_into",
    "upload_labels_into",
    "count_correct",
];

fn check_rows(rows: &[ParityRow]) {
    for op in OPS {
        let hit = rows.iter().any(|r| {
            r.op == *op
                || r.op.starts_with(&format!("{op}."))
                || r.op.starts_with(&format!("{op}["))
        });
        assert!(hit, "parity harness never checks {op}");
    }
    for needed in [
        "batch_norm_train_fwd.running_var",
        "batch_norm_bwd.dgamma",
        "mixed_op_bwd.dalpha",
        "mixed_op_bwd.dx[6]",
        "mixed_op_bwd_into.dx[6]",
        "mixed_op_bwd_into.dalpha",
        "linear_bwd.db",
        // The clip coefficient read on the device by the SGD update.
        "sgd_step.param (scaled)",
    ] {
        assert!(
            rows.iter().any(|r| r.op == needed),
            "parity harness never checks {needed}"
        );
    }
    for (what, needle) in [
        ("stride 2", " s2 "),
        ("dilation 2", " d2 "),
        ("kernel 5", " k5 "),
        ("K = 8", "K 8 "),
        ("an absent (none) MixedOp input", " none ["),
        ("batch 1", "x [1, "),
        // More tensors than one CUDA multi-tensor table holds (SGD 120, Adam 96, norm 240).
        ("several multi-tensor launches", "301 tensors"),
    ] {
        assert!(
            rows.iter().any(|r| r.shape.contains(needle)),
            "parity harness never covers {what}"
        );
    }
    if let Err(e) = all_passed(rows) {
        panic!("{}\n{e}", format_table(rows));
    }
}

/// The parity harness on one device: every row within its tolerance, every op covered; on
/// the CPU against itself, every error exactly zero (the run is deterministic).
fn parity<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let rows = run_parity(be, 7)?;
    assert!(rows.len() > 100, "only {} rows", rows.len());
    if device_kind(be) == DeviceKind::Cpu {
        assert!(
            rows.iter().all(|r| r.max_err == 0.0),
            "{}",
            format_table(&rows)
        );
    } else {
        println!("{}", format_table(&rows));
    }
    check_rows(&rows);
    Ok(())
}

test_device!(parity_harness_covers_every_op_and_passes, parity);

#[test]
fn error_measure_flags_real_differences() {
    assert_eq!(max_error(&[1.0, -2.0], &[1.0, -2.0]), 0.0);
    // A 1e-3 relative error on a typical element is ~9x the tolerance (the floor adds 0.1 rms).
    assert!(max_error(&[1.001, 1.0], &[1.0, 1.0]) > 5.0 * TOL);
    assert!(max_error(&[f32::NAN], &[0.0]).is_infinite());
    assert!(max_error(&[1.0], &[1.0, 2.0]).is_infinite());
    // Rounding-sized noise on a near-zero element of data of scale ~1 passes.
    assert!(max_error(&[1e-7, 1.0, -1.0], &[0.0, 1.0, -1.0]) <= TOL);
}

#[test]
fn device_flag_parsing() {
    assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
    assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
    assert_eq!(
        "cuda".parse::<DeviceChoice>().unwrap(),
        DeviceChoice::Cuda(0)
    );
    assert_eq!(
        "CUDA:3".parse::<DeviceChoice>().unwrap(),
        DeviceChoice::Cuda(3)
    );
    assert_eq!(
        "cuda-sim".parse::<DeviceChoice>().unwrap(),
        DeviceChoice::CudaSim
    );
    assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
    assert_eq!(DeviceChoice::CudaSim.to_string(), "cuda-sim");
    let e = "gpu".parse::<DeviceChoice>().unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid --device 'gpu': expected auto, cpu, cuda, cuda:N or cuda-sim"
    );
    for bad in ["", "cuda:", "cuda:x", "cuda:-1", "cpu0", "cuda-sim:0"] {
        let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(e.contains(&format!("'{bad}'")), "{e}");
    }
}

#[test]
fn cuda_resolution_errors_instead_of_panicking() {
    // No machine has GPU 999: the error path runs with or without a GPU or driver.
    let e = resolve(DeviceChoice::Cuda(999))
        .err()
        .expect("cuda:999 must not resolve")
        .to_string();
    assert!(!e.is_empty() && !e.contains('\n'), "not one line: {e:?}");
    if !nasrs::device::cuda_compiled() {
        assert_eq!(
            e,
            "nasrs was built without CUDA support; rebuild with --features cuda"
        );
    }
    let (dev, notice) = resolve(DeviceChoice::Auto).expect("auto always resolves");
    // auto falls back to the CPU only with a one-line notice saying why.
    assert_eq!(dev.is_cuda(), notice.is_none());
    if let Some(n) = notice {
        assert!(!n.contains('\n'), "{n:?}");
    }
    let (cpu, notice) = resolve(DeviceChoice::Cpu).unwrap();
    assert!(!cpu.is_cuda() && notice.is_none());
    // cuda-sim resolves exactly when the simulation is compiled in; otherwise one line.
    match resolve(DeviceChoice::CudaSim) {
        Ok((sim, notice)) => {
            assert!(nasrs::device::cuda_sim_compiled());
            assert!(sim.is_cuda() && notice.is_none());
            assert!(sim.name().starts_with("cuda-sim"), "{}", sim.name());
        }
        Err(e) => {
            assert!(!nasrs::device::cuda_sim_compiled());
            assert_eq!(
                e.to_string(),
                "nasrs was built without the CUDA simulation; rebuild with --features cuda-sim"
            );
        }
    }
}
