//! What the device tests share: one test body, written once against `Backend<Elem = f32>`,
//! run on every device this build can reach (candle's `test_device!` is the model), and the
//! comparison of a device's results with the CPU backend's (the reference).
//!
//! This file owns:
//! - [`test_device!`]: `test_device!(name, body)` expands to a module `name` holding
//!   `#[test] fn cpu()`, `#[test] fn cuda_sim()` (feature `cuda-sim`: the CUDA backend on the
//!   host simulation of the GPU) and `#[test] fn cuda()` (feature `cuda`: GPU 0; without a GPU
//!   it prints "skipped: no GPU" and passes, unless `NASRS_REQUIRE_GPU=1`, which fails it).
//!   `body` is a generic `fn body<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()>`
//!   defined beside the macro call; an `Err` fails the test, naming the device.
//! - [`device_kind`]: which of the three devices a body runs on (a body that checks a
//!   device-specific property, such as graphs being captured, asks it).
//! - [`Outputs`], [`assert_close`] / [`assert_close_with`]: named f32 results of one
//!   computation and their comparison with the CPU's, on the parity harness's error measure
//!   (`nasrs::backend::selftest::max_error`, tolerance [`TOL`] = 1e-4 unless a test says why not); on
//!   the CPU itself the two runs must agree bit for bit. [`assert_reproduced`]: two results
//!   of one device (resumed vs uninterrupted, graphs vs none), bit for bit off a GPU.
//! - [`assert_close_values`]: any slice against a reference on that same measure (the PyTorch
//!   fixture checks keep `torch_fixture::compare`, whose floor scales with the tensor's
//!   largest value so f64 results are held to 1e-10 even where they are tiny).
//! - DARTS lockstep: [`darts_state`], [`load_darts_state`] / [`load_store`] (start a device
//!   step from the CPU's state, so multi-step comparisons do not compound drift; why in
//!   [`load_darts_state`]) and [`darts_tol`] (the second-order alpha gradient's tolerance).
//! - Small helpers: seeded normal draws ([`randn`]), host batches ([`host_batch`]), fresh
//!   temporary folders ([`tmp_dir`]), safetensors files as outputs ([`safetensors_outputs`]).
//!
//! Include it with `mod common;` before the first `test_device!` (every test file is its own
//! crate, so not every file uses every helper).
#![allow(dead_code, unused_macros, unused_imports)]

pub mod data;
pub mod fuzz;
pub mod library;
pub mod mutate;
pub mod nan;
pub mod torch_fixture;
pub mod train;

use nasrs::autograd::ParamStore;
use nasrs::backend::Element;
use nasrs::data::Batch;
use nasrs::nas::darts::Darts;
use nasrs::{Backend, Cpu, Rng};
use std::any::TypeId;

pub use nasrs::backend::selftest::TOL;

/// Runs `$body` on every device: `test_device!(name, body);` (see the module docs).
#[macro_export]
macro_rules! test_device {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                $crate::common::run_on(&::nasrs::Cpu::new(), super::$body);
            }

            #[cfg(feature = "cuda-sim")]
            #[test]
            fn cuda_sim() {
                let be =
                    ::nasrs::backend::cuda::Cuda::open_sim().expect("open the CUDA simulation");
                $crate::common::run_on(&be, super::$body);
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if let Some(be) = $crate::common::open_gpu() {
                    $crate::common::run_on(&be, super::$body);
                }
            }
        }
    };
}

/// Runs one body on `be`; an error fails the test, naming the device.
pub fn run_on<B: Backend<Elem = f32>>(be: &B, body: fn(&B) -> nasrs::Result<()>) {
    println!("device: {}", be.device_name());
    if let Err(e) = body(be) {
        panic!("on {}: {e}", be.device_name());
    }
}

/// `NASRS_REQUIRE_GPU=1`: a missing GPU fails the GPU tests instead of skipping them (for the
/// GPU machine, where a skip would hide a broken driver setup).
pub fn require_gpu() -> bool {
    std::env::var("NASRS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// GPU 0 through `--device cuda:0`'s resolution, or None after printing why it was skipped
/// (a panic instead when [`require_gpu`]).
#[cfg(feature = "cuda")]
pub fn open_gpu() -> Option<nasrs::backend::cuda::Cuda> {
    use nasrs::device::{resolve, DeviceChoice, Resolved};
    match resolve(DeviceChoice::Cuda(0)) {
        Ok((Resolved::Cuda(gpu), _)) => Some(gpu),
        Ok((Resolved::Cpu(_), _)) => panic!("cuda:0 resolved to the CPU"),
        Err(e) => {
            assert!(!require_gpu(), "NASRS_REQUIRE_GPU=1 but no GPU: {e}");
            println!("skipped: no GPU ({e})");
            None
        }
    }
}

/// The device a body runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// `Cpu<f32>`: the reference itself.
    Cpu,
    /// The CUDA backend on the host simulation (deterministic, run thread by thread).
    CudaSim,
    /// The CUDA backend on a GPU.
    Gpu,
}

/// Which device `be` is: the CPU by type, the simulation by its device name.
pub fn device_kind<B: Backend>(be: &B) -> DeviceKind {
    if TypeId::of::<B>() == TypeId::of::<Cpu<f32>>() {
        DeviceKind::Cpu
    } else if be.device_name().starts_with("cuda-sim") {
        DeviceKind::CudaSim
    } else {
        DeviceKind::Gpu
    }
}

/// Named f32 results of one computation, in the order they were produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs(pub Vec<(String, Vec<f32>)>);

impl Outputs {
    pub fn push(&mut self, name: impl Into<String>, values: Vec<f32>) {
        self.0.push((name.into(), values));
    }
    /// A host scalar (a loss), compared as a one-element output.
    pub fn scalar(&mut self, name: impl Into<String>, value: f64) {
        self.push(name, vec![value as f32]);
    }
    /// Every tensor of a parameter store, as `prefix.name`.
    pub fn store<B: Backend<Elem = f32>>(
        &mut self,
        be: &B,
        prefix: &str,
        store: &ParamStore<B>,
    ) -> nasrs::Result<()> {
        for id in store.ids() {
            let values = store.get(id).to_host(be)?;
            self.push(format!("{prefix}.{}", store.name(id)), values);
        }
        Ok(())
    }
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Per output: (name, error on the selftest measure). Outputs missing on either side, or
/// of another length, have an infinite error.
pub fn errors(got: &Outputs, want: &Outputs) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = want
        .0
        .iter()
        .map(|(name, w)| {
            let err = match got.get(name) {
                Some(g) => nasrs::backend::selftest::max_error(g, w),
                None => f64::INFINITY,
            };
            (name.clone(), err)
        })
        .collect();
    for (name, _) in &got.0 {
        if want.get(name).is_none() {
            rows.push((format!("{name} (not in the reference)"), f64::INFINITY));
        }
    }
    rows
}

/// Asserts `got` (computed on `be`) agrees with `want` (computed on the CPU): every output
/// within `tol` on the selftest error measure, or bit for bit when `be` is the CPU. Prints
/// the worst output; on failure lists every output over the tolerance.
pub fn assert_close<B: Backend>(be: &B, what: &str, got: &Outputs, want: &Outputs, tol: f64) {
    assert_close_with(be, what, got, want, |_| tol);
}

/// [`assert_close`] with a tolerance per output name (for the few outputs a documented
/// numerical effect makes noisier than the rest).
pub fn assert_close_with<B: Backend>(
    be: &B,
    what: &str,
    got: &Outputs,
    want: &Outputs,
    tol: impl Fn(&str) -> f64,
) {
    assert!(!want.0.is_empty(), "{what}: nothing to compare");
    if device_kind(be) == DeviceKind::Cpu {
        assert!(got == want, "{what}: the CPU is not deterministic");
        return;
    }
    let rows = errors(got, want);
    // The worst output relative to its tolerance.
    let worst = rows
        .iter()
        .max_by(|a, b| (a.1 / tol(&a.0)).total_cmp(&(b.1 / tol(&b.0))))
        .expect("at least one output");
    println!(
        "{what} on {}: {} outputs, worst {} at {:.3e} (tolerance {:e})",
        be.device_name(),
        rows.len(),
        worst.0,
        worst.1,
        tol(&worst.0)
    );
    let bad: Vec<String> = rows
        .iter()
        .filter(|(n, e)| e.is_nan() || *e > tol(n))
        .map(|(n, e)| format!("  {n}: {e:.3e} (tolerance {:e})", tol(n)))
        .collect();
    assert!(
        bad.is_empty(),
        "{what} on {} differs from the CPU:\n{}",
        be.device_name(),
        bad.join("\n")
    );
}

/// The one slice comparison of the tests (llm.c's `validate_result`): `got` against the
/// reference `want` on the parity harness's measure (`nasrs::backend::selftest::max_error_f64`:
/// `|got - want| / (|want| + 1e-3 + 0.1 rms(want))`, NaN equal to NaN, an infinity only to
/// itself), at most `tol`; a failure names the worst element and both values.
pub fn assert_close_values<G: Element, W: Element>(what: &str, got: &[G], want: &[W], tol: f64) {
    let got: Vec<f64> = got.iter().map(|v| v.to_f64()).collect();
    let want: Vec<f64> = want.iter().map(|v| v.to_f64()).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, the reference has {}",
        got.len(),
        want.len()
    );
    let err = nasrs::backend::selftest::max_error_f64(&got, &want);
    if err <= tol {
        return;
    }
    // The worst element, scaled as the measure scales it.
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len().max(1) as f64).sqrt();
    let floor = 1e-3 + 0.1 * rms;
    let i = (0..got.len())
        .max_by(|&a, &b| {
            let e = |k: usize| (got[k] - want[k]).abs() / (want[k].abs() + floor);
            e(a).total_cmp(&e(b))
        })
        .unwrap_or(0);
    panic!(
        "{what}: error {err:.3e} over the tolerance {tol:e} (worst at element {i}: {} vs {})",
        got[i], want[i]
    );
}

/// `n` standard normal draws as f32.
pub fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// An empty temporary folder unique to this process, test file and `name`.
pub fn tmp_dir(file: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nasrs-{file}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A host batch of `n` images `[c, hw, hw]` of normal noise with uniform labels below
/// `classes` (the DARTS step tests' input).
pub fn host_batch(rng: &mut Rng, n: usize, c: usize, hw: usize, classes: usize) -> Batch {
    Batch {
        images: randn(rng, n * c * hw * hw),
        labels: (0..n).map(|_| rng.below(classes) as u32).collect(),
        n,
        c,
        h: hw,
        w: hw,
    }
}

/// Overwrites every tensor of `dst` (on `be`) with the same-named one of `src` (on the CPU),
/// in place: the buffers keep their device addresses, so a captured graph stays valid.
pub fn load_store<B: Backend<Elem = f32>>(
    be: &B,
    dst: &mut ParamStore<B>,
    src: &ParamStore<Cpu<f32>>,
) -> nasrs::Result<()> {
    assert_eq!(dst.names(), src.names(), "stores of different layouts");
    let cpu = Cpu::new();
    for (d, s) in dst.tensors_mut().iter_mut().zip(src.tensors()) {
        be.upload_into(d.buf_mut("loaded state")?, &s.to_host(&cpu)?)?;
    }
    Ok(())
}

/// Everything a DARTS search carries from one step to the next: weights, alphas, BN running
/// statistics, SGD momentum and Adam's moments.
pub fn darts_state<B: Backend<Elem = f32>>(be: &B, d: &Darts<B>) -> nasrs::Result<Outputs> {
    let mut out = Outputs::default();
    out.store(be, "weights", &d.net.weights)?;
    out.store(be, "alphas", &d.net.arch)?;
    out.store(be, "bn", &d.net.buffers)?;
    out.store(be, "momentum", &d.weight_opt.state)?;
    out.store(be, "adam.m", &d.arch_opt.exp_avg)?;
    out.store(be, "adam.v", &d.arch_opt.exp_avg_sq)?;
    Ok(out)
}

/// Puts `src`'s state (see [`darts_state`]) into `dst` in place, so that the next step on
/// the device starts from exactly the CPU's state. Multi-step comparisons need this: a few
/// steps of rounding-level drift move some pre-activation of these small networks across
/// zero, and one ReLU mask element that flips moves a depthwise weight's gradient (a sum of
/// a few hundred terms) by percents. Measured: perturbing the CPU's own weights by 1e-5
/// relative before the third first-order step changes its momentum by 0.5; by 1e-6, by 6e-5.
pub fn load_darts_state<B: Backend<Elem = f32>>(
    be: &B,
    dst: &mut Darts<B>,
    src: &Darts<Cpu<f32>>,
) -> nasrs::Result<()> {
    load_store(be, &mut dst.net.weights, &src.net.weights)?;
    load_store(be, &mut dst.net.arch, &src.net.arch)?;
    load_store(be, &mut dst.net.buffers, &src.net.buffers)?;
    load_store(be, &mut dst.weight_opt.state, &src.weight_opt.state)?;
    load_store(be, &mut dst.arch_opt.exp_avg, &src.arch_opt.exp_avg)?;
    load_store(be, &mut dst.arch_opt.exp_avg_sq, &src.arch_opt.exp_avg_sq)?;
    dst.arch_opt.step = src.arch_opt.step;
    Ok(())
}

/// The tolerance of a DARTS step's output (named as [`darts_state`] and the step tests name
/// them) against the CPU's: [`TOL`], except at order 2 for the alpha gradient (`dalpha*`) and
/// Adam's moments (`adam.*`), which get 5e-4. The second-order gradient's Hessian term is a
/// central difference of two alpha gradients divided by 2 eps (eps ||v|| = hvp_radius =
/// 0.01), which multiplies their f32 rounding noise by ~50 relative to a first-order
/// gradient (measured on cuda-sim: 6.4e-5; every first-order output stays below 1.4e-5).
pub fn darts_tol(order: u8) -> impl Fn(&str) -> f64 {
    move |name: &str| {
        let from_dalpha = name.starts_with("dalpha") || name.starts_with("adam.");
        if order == 2 && from_dalpha {
            5e-4
        } else {
            TOL
        }
    }
}

/// Two results of the same computation on the same device (a run resumed against the
/// uninterrupted one, a graph replay against direct launches): bit for bit on the CPU and
/// the simulation, which are deterministic; within [`TOL`] on a GPU, where cuBLAS may pick
/// another algorithm (inside a capture, after a restart).
pub fn assert_reproduced<B: Backend>(be: &B, what: &str, got: &Outputs, want: &Outputs) {
    assert!(!want.0.is_empty(), "{what}: nothing to compare");
    if device_kind(be) == DeviceKind::Gpu {
        let bad: Vec<_> = errors(got, want)
            .into_iter()
            .filter(|(_, e)| e.is_nan() || *e > TOL)
            .collect();
        assert!(bad.is_empty(), "{what} on {}: {bad:?}", be.device_name());
    } else {
        for (name, w) in &want.0 {
            let g = got.get(name);
            assert!(
                g.is_some_and(|g| g.len() == w.len()
                    && g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits())),
                "{what} on {}: {name} differs",
                be.device_name()
            );
        }
        assert_eq!(
            got.0.len(),
            want.0.len(),
            "{what}: outputs differ in number"
        );
    }
}

/// Every tensor of a safetensors file (checkpoints, models), by name.
pub fn safetensors_outputs(path: &std::path::Path) -> Outputs {
    let (tensors, _) = nasrs::io::load_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = Outputs::default();
    for (name, t) in tensors {
        out.push(name, t.data);
    }
    out
}
