//! Parity of the CPU backend with PyTorch: every case of `tests/fixtures/ops.safetensors`
//! (written by `tools/make_fixtures.py`) is replayed through the `Backend` trait methods of
//! `Cpu<f32>` and `Cpu<f64>`, forward and backward, and compared with PyTorch's result.
//!
//! The fixtures hold float32 inputs and float64 PyTorch references rounded once to float32,
//! so the tolerance measures nasrs' own rounding. An element passes when
//! `|got - want| <= rtol * (|want| + 1e-3 * max|want|)` (the floor covers elements that
//! cancel to almost zero), with rtol = 1e-4 for f32 and 1e-6 for f64 (the stored reference
//! is itself only float32-exact). Optimizer updates are also checked as updates
//! (`param_out - param`), to 1e-3 of their size, so that a small learning-rate error cannot
//! hide under the size of the parameter.
//!
//! The fixture's reader and the comparison are in common/torch_fixture.rs; this file maps
//! each op of the fixture to the `Backend` calls that compute it.

mod common;

use common::torch_fixture::{Case, Checker, OPS_FIXTURE, R, RTOL_F32, RTOL_F64};
use nasrs::backend::prelude::*;
use nasrs::backend::{AdamStep, Element, RunningStats, SgdStep};
use nasrs::{Conv2dSpec, Cpu, Nchw, Pool2dSpec};
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeMap;

/// The ops the fixture must cover, so that a case dropped from the generator shows here.
const EXPECTED_OPS: &[&str] = &[
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "batch_norm_train",
    "batch_norm_eval",
    "relu",
    "linear",
    "cross_entropy",
    "global_avg_pool",
    "shift_crop",
    "concat_channels",
    "drop_path",
    "mixed_op",
    "sgd",
    "adam",
];

fn run_case<T: Element>(cpu: &Cpu<T>, case: &Case<'_>, rtol: f64) -> R<f64> {
    let mut ck = Checker {
        case,
        rtol,
        worst: 0.0,
    };
    let op = case
        .params
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("case {}: metadata has no \"op\"", case.name))?;
    let e = |e: nasrs::Error| format!("case {}: nasrs error: {e}", case.name);
    match op {
        "conv2d" => {
            let spec = Conv2dSpec::new(
                case.usize("in_channels")?,
                case.usize("out_channels")?,
                case.usize("kernel")?,
            )
            .stride(case.usize("stride")?)
            .padding(case.usize("padding")?)
            .dilation(case.usize("dilation")?)
            .groups(case.usize("groups")?);
            let xd = case.nchw("x")?;
            let (x, w, dy) = (
                case.buf::<T>("x")?,
                case.buf::<T>("w")?,
                case.buf::<T>("dy")?,
            );
            ck.check("y", &cpu.conv2d_fwd(&x, xd, &w, &spec).map_err(e)?, "y")?;
            ck.check(
                "dx",
                &cpu.conv2d_bwd_data(&x, &dy, &w, xd, &spec).map_err(e)?,
                "dx",
            )?;
            ck.check(
                "dw",
                &cpu.conv2d_bwd_weight(&x, &dy, xd, &spec).map_err(e)?,
                "dw",
            )?;
        }
        "max_pool2d" | "avg_pool2d" => {
            let spec = Pool2dSpec {
                kernel: case.usize("kernel")?,
                stride: case.usize("stride")?,
                padding: case.usize("padding")?,
            };
            let xd = case.nchw("x")?;
            let (x, dy) = (case.buf::<T>("x")?, case.buf::<T>("dy")?);
            let (y, dx) = if op == "max_pool2d" {
                (
                    cpu.max_pool2d_fwd(&x, xd, &spec).map_err(e)?,
                    cpu.max_pool2d_bwd(&x, &dy, xd, &spec).map_err(e)?,
                )
            } else {
                (
                    cpu.avg_pool2d_fwd(&x, xd, &spec).map_err(e)?,
                    cpu.avg_pool2d_bwd(&dy, xd, &spec).map_err(e)?,
                )
            };
            ck.check("y", &y, "y")?;
            ck.check("dx", &dx, "dx")?;
        }
        "batch_norm_train" => {
            let affine = case.bool("affine")?;
            let xd = case.nchw("x")?;
            let (x, dy) = (case.buf::<T>("x")?, case.buf::<T>("dy")?);
            let gb = if affine {
                Some((case.buf::<T>("gamma")?, case.buf::<T>("beta")?))
            } else {
                None
            };
            // The fixture's running statistics start from zeros / ones, as a fresh BatchNorm2d.
            let (mut rm, mut rv) = (vec![T::ZERO; xd.c], vec![T::ONE; xd.c]);
            let running = RunningStats {
                mean: &mut rm,
                var: &mut rv,
                momentum: case.f64("momentum")?,
            };
            let (y, saved) = cpu
                .batch_norm_train_fwd(
                    &x,
                    xd,
                    gb.as_ref().map(|(g, b)| (g, b)),
                    Some(running),
                    case.f64("eps")?,
                )
                .map_err(e)?;
            ck.check("y", &y, "y")?;
            ck.check("saved.mean", &saved.mean, "mean")?;
            ck.check("saved.invstd", &saved.invstd, "invstd")?;
            ck.check("running_mean", &rm, "running_mean")?;
            ck.check("running_var", &rv, "running_var")?;
            let (dx, dgb) = cpu
                .batch_norm_bwd(&x, &dy, xd, gb.as_ref().map(|(g, _)| g), &saved)
                .map_err(e)?;
            ck.check("dx", &dx, "dx")?;
            match (affine, dgb) {
                (true, Some((dg, db))) => {
                    ck.check("dgamma", &dg, "dgamma")?;
                    ck.check("dbeta", &db, "dbeta")?;
                }
                (false, None) => {}
                (a, d) => {
                    return Err(format!(
                        "case {}: affine {a} but batch_norm_bwd returned dgamma/dbeta: {}",
                        case.name,
                        d.is_some()
                    ))
                }
            }
        }
        "batch_norm_eval" => {
            let xd = case.nchw("x")?;
            let (x, g, b) = (
                case.buf::<T>("x")?,
                case.buf::<T>("gamma")?,
                case.buf::<T>("beta")?,
            );
            let (rm, rv) = (
                case.buf::<T>("running_mean")?,
                case.buf::<T>("running_var")?,
            );
            ck.check(
                "y",
                &cpu.batch_norm_eval_fwd(&x, xd, Some((&g, &b)), &rm, &rv, case.f64("eps")?)
                    .map_err(e)?,
                "y",
            )?;
        }
        "relu" => {
            let (x, dy) = (case.buf::<T>("x")?, case.buf::<T>("dy")?);
            let y = cpu.relu_fwd(&x).map_err(e)?;
            ck.check("y", &y, "y")?;
            ck.check("dx", &cpu.relu_bwd(&y, &dy).map_err(e)?, "dx")?;
        }
        "linear" => {
            let (n, fi, fo) = (
                case.usize("n")?,
                case.usize("in_features")?,
                case.usize("out_features")?,
            );
            let (x, w, b, dy) = (
                case.buf::<T>("x")?,
                case.buf::<T>("w")?,
                case.buf::<T>("b")?,
                case.buf::<T>("dy")?,
            );
            ck.check(
                "y",
                &cpu.linear_fwd(&x, &w, Some(&b), n, fi, fo).map_err(e)?,
                "y",
            )?;
            let (dx, dw, db) = cpu.linear_bwd(&x, &w, &dy, n, fi, fo, true).map_err(e)?;
            ck.check("dx", &dx, "dx")?;
            ck.check("dw", &dw, "dw")?;
            let db = db.ok_or_else(|| {
                format!(
                    "case {}: linear_bwd(with_bias = true) returned no db",
                    case.name
                )
            })?;
            ck.check("db", &db, "db")?;
        }
        "cross_entropy" => {
            let (n, k) = (case.usize("n")?, case.usize("classes")?);
            let logits = case.buf::<T>("logits")?;
            let labels: Vec<u32> = case
                .values("labels")?
                .into_iter()
                .map(|v| v as u32)
                .collect();
            let labels = cpu.upload_labels(&labels, k).map_err(e)?;
            let (loss, probs) = cpu
                .softmax_cross_entropy_fwd(&logits, n, k, &labels)
                .map_err(e)?;
            ck.check("loss", &loss, "loss")?;
            ck.check("probs", &probs, "probs")?;
            let dloss = case.buf::<T>("dloss")?;
            ck.check(
                "dlogits",
                &cpu.softmax_cross_entropy_bwd(&probs, &dloss, n, k, &labels)
                    .map_err(e)?,
                "dlogits",
            )?;
        }
        "global_avg_pool" => {
            let xd = case.nchw("x")?;
            let (x, dy) = (case.buf::<T>("x")?, case.buf::<T>("dy")?);
            ck.check("y", &cpu.global_avg_pool_fwd(&x, xd).map_err(e)?, "y")?;
            ck.check("dx", &cpu.global_avg_pool_bwd(&dy, xd).map_err(e)?, "dx")?;
        }
        "shift_crop" => {
            let xd = case.nchw("x")?;
            let (x, dy) = (case.buf::<T>("x")?, case.buf::<T>("dy")?);
            ck.check("y", &cpu.shift_crop_fwd(&x, xd).map_err(e)?, "y")?;
            ck.check("dx", &cpu.shift_crop_bwd(&dy, xd).map_err(e)?, "dx")?;
        }
        "concat_channels" => {
            let channels: Vec<usize> = case
                .params
                .get("channels")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|v| v as usize)
                        .collect()
                })
                .unwrap_or_default();
            let mut parts = Vec::new();
            for i in 0..channels.len() {
                parts.push((
                    case.buf::<T>(&format!("x{i}"))?,
                    case.nchw(&format!("x{i}"))?,
                ));
            }
            let refs: Vec<(&Vec<T>, Nchw)> = parts.iter().map(|(b, d)| (b, *d)).collect();
            ck.check("y", &cpu.concat_channels(&refs).map_err(e)?, "y")?;
            let (dy, dyd) = (case.buf::<T>("dy")?, case.nchw("dy")?);
            let dxs = cpu.split_channels(&dy, dyd, &channels).map_err(e)?;
            if dxs.len() != channels.len() || channels.is_empty() {
                return Err(format!(
                    "case {}: split_channels returned {} parts for {channels:?}",
                    case.name,
                    dxs.len()
                ));
            }
            for (i, dx) in dxs.iter().enumerate() {
                ck.check(&format!("dx{i}"), dx, &format!("dx{i}"))?;
            }
        }
        "drop_path" => {
            let n = case.usize("n")?;
            let (x, dy, scale) = (
                case.buf::<T>("x")?,
                case.buf::<T>("dy")?,
                case.buf::<T>("scale")?,
            );
            ck.check("y", &cpu.drop_path(&x, n, &scale).map_err(e)?, "y")?;
            ck.check("dx", &cpu.drop_path(&dy, n, &scale).map_err(e)?, "dx")?;
        }
        "mixed_op" => {
            let k = case.usize("k")?;
            let (xs_all, alpha, dy) = (
                case.buf::<T>("xs")?,
                case.buf::<T>("alpha")?,
                case.buf::<T>("dy")?,
            );
            let len = dy.len();
            let xs: Vec<Vec<T>> = xs_all.chunks(len).map(<[T]>::to_vec).collect();
            let refs: Vec<Option<&Vec<T>>> = xs.iter().map(Some).collect();
            if xs.len() != k {
                return Err(format!(
                    "case {}: xs splits into {} inputs, metadata says k = {k}",
                    case.name,
                    xs.len()
                ));
            }
            ck.check("y", &cpu.mixed_op_fwd(&refs, &alpha, len).map_err(e)?, "y")?;
            let (dxs, dalpha) = cpu
                .mixed_op_bwd(&dy, &refs, &alpha, len, &vec![true; k])
                .map_err(e)?;
            let mut flat = Vec::with_capacity(k * len);
            for (i, dx) in dxs.into_iter().enumerate() {
                flat.extend(dx.ok_or_else(|| {
                    format!(
                        "case {}: mixed_op_bwd skipped dx{i} although asked for it",
                        case.name
                    )
                })?);
            }
            ck.check("dxs", &flat, "dxs")?;
            ck.check("dalpha", &dalpha, "dalpha")?;
            // Asking for no input gradient must still give the same dalpha and no dx.
            let (none, dalpha2) = cpu
                .mixed_op_bwd(&dy, &refs, &alpha, len, &vec![false; k])
                .map_err(e)?;
            if none.iter().any(Option::is_some) {
                return Err(format!(
                    "case {}: mixed_op_bwd returned a dx nobody asked for",
                    case.name
                ));
            }
            ck.check("dalpha (need_dx all false)", &dalpha2, "dalpha")?;
        }
        "sgd" => {
            let hp = SgdStep {
                lr: case.f64("lr")?,
                momentum: case.f64("momentum")?,
                weight_decay: case.f64("weight_decay")?,
            };
            let before = case.values("param")?;
            let (mut p, grad, mut buf) = (
                case.buf::<T>("param")?,
                case.buf::<T>("grad")?,
                case.buf::<T>("momentum_buffer")?,
            );
            cpu.sgd_step(&mut p, &grad, &mut buf, &hp, None)
                .map_err(e)?;
            ck.check("param", &p, "param_out")?;
            ck.check("momentum_buffer", &buf, "momentum_buffer_out")?;
            ck.check_update("param update", &p, &before, &case.values("param_out")?)?;
        }
        "adam" => {
            let mut p = case.buf::<T>("param")?;
            let (mut m, mut v) = (vec![T::ZERO; p.len()], vec![T::ZERO; p.len()]);
            let mut before = case.values("param")?;
            for step in 1..=case.usize("steps")? as u64 {
                let hp = AdamStep {
                    lr: case.f64("lr")?,
                    beta1: case.f64("beta1")?,
                    beta2: case.f64("beta2")?,
                    eps: case.f64("eps")?,
                    weight_decay: case.f64("weight_decay")?,
                    step,
                };
                cpu.adam_step(
                    &mut p,
                    &case.buf::<T>(&format!("grad_step{step}"))?,
                    &mut m,
                    &mut v,
                    &hp,
                )
                .map_err(e)?;
                ck.check(
                    &format!("param after step {step}"),
                    &p,
                    &format!("param_step{step}"),
                )?;
                ck.check(
                    &format!("exp_avg after step {step}"),
                    &m,
                    &format!("exp_avg_step{step}"),
                )?;
                ck.check(
                    &format!("exp_avg_sq after step {step}"),
                    &v,
                    &format!("exp_avg_sq_step{step}"),
                )?;
                let after = case.values(&format!("param_step{step}"))?;
                ck.check_update(&format!("update of step {step}"), &p, &before, &after)?;
                // The next step starts from PyTorch's parameters, so one error is not counted twice.
                before = after;
                p = before.iter().map(|&x| T::from_f64(x)).collect();
            }
        }
        other => {
            return Err(format!(
                "case {}: unknown op {other:?} (add its mapping to tests/torch_parity.rs)",
                case.name
            ))
        }
    }
    Ok(ck.worst)
}

/// Loads the fixture, runs every case on `Cpu<T>` and fails listing every disagreement.
fn run_all<T: Element>(rtol: f64) -> R<()> {
    let bytes = std::fs::read(OPS_FIXTURE)
        .map_err(|e| format!("{OPS_FIXTURE}: {e} (regenerate with tools/make_fixtures.py)"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{OPS_FIXTURE}: {e}"))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| format!("{OPS_FIXTURE}: {e}"))?;
    let meta = header
        .metadata()
        .as_ref()
        .ok_or_else(|| format!("{OPS_FIXTURE}: no metadata"))?;
    // Case names are every metadata key but the "__generator__" note.
    let cases: BTreeMap<&str, Value> = meta
        .iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .map(|(k, v)| {
            serde_json::from_str(v)
                .map(|v| (k.as_str(), v))
                .map_err(|e| format!("{OPS_FIXTURE}: metadata of {k}: {e}"))
        })
        .collect::<R<_>>()?;
    let covered: Vec<&str> = cases
        .values()
        .filter_map(|v| v.get("op").and_then(Value::as_str))
        .collect();
    let missing: Vec<&&str> = EXPECTED_OPS
        .iter()
        .filter(|op| !covered.contains(op))
        .collect();
    if !missing.is_empty() {
        return Err(format!("{OPS_FIXTURE} has no case for {missing:?}"));
    }
    let cpu = Cpu::<T>::with_element();
    let mut failures = Vec::new();
    for (name, params) in &cases {
        let case = Case {
            name,
            params,
            st: &st,
        };
        match run_case(&cpu, &case, rtol) {
            Ok(worst) => println!(
                "{:>4} {name:<20} ok (worst error {worst:.3} of the tolerance)",
                T::NAME
            ),
            Err(msg) => failures.push(msg),
        }
    }
    if failures.is_empty() {
        println!("{}: {} cases match PyTorch", T::NAME, cases.len());
        Ok(())
    } else {
        Err(format!(
            "{} of {} cases disagree with PyTorch:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        ))
    }
}

#[test]
fn cpu_f32_matches_pytorch() -> R<()> {
    run_all::<f32>(RTOL_F32)
}

#[test]
fn cpu_f64_matches_pytorch() -> R<()> {
    run_all::<f64>(RTOL_F64)
}
