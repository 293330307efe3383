//! The MixedOp's absent (`none`) inputs: declaring an input zero without a buffer gives
//! exactly what a materialised zeros input gave (forward, every dx, every dalpha, on the CPU
//! in f32 and f64, through the backend and through the tape), an absent input gets no dx but
//! a nonzero alpha gradient, and the counting backend reads nothing for it.
//!
//! On every device (`test_device!`): the same, through the backend and the tape, bit for bit
//! against a zeros input on the same device, and every result equal to the CPU's (1e-4 on
//! the selftest measure).

mod common;

use common::{assert_close, Outputs, TOL};
use nasrs::autograd::{Tape, Var};
use nasrs::backend::counting::{Counting, ELEM_BYTES};
use nasrs::backend::prelude::*;
use nasrs::backend::{Backend, Element};
use nasrs::{Cpu, Rng, Shape, Tensor};

fn randn<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.normal())).collect()
}

/// Backend level: `None` at `zero` slots against a zeros buffer there, at an odd length
/// bigger than one CPU chunk (so several chunk partials are summed).
fn backend_equals_materialised_zeros<T: Element>() {
    let be = Cpu::<T>::with_element();
    let mut rng = Rng::new(11);
    let (k, len) = (8, (1 << 14) * 2 + 37);
    let zero = [0usize, 5];
    let xs: Vec<Vec<T>> = (0..k)
        .map(|i| {
            if zero.contains(&i) {
                vec![T::ZERO; len]
            } else {
                randn(&mut rng, len)
            }
        })
        .collect();
    let alpha: Vec<T> = randn(&mut rng, k);
    let dy: Vec<T> = randn(&mut rng, len);
    let old: Vec<Option<&Vec<T>>> = xs.iter().map(Some).collect();
    let new: Vec<Option<&Vec<T>>> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| (!zero.contains(&i)).then_some(x))
        .collect();

    assert_eq!(
        be.mixed_op_fwd(&new, &alpha, len).unwrap(),
        be.mixed_op_fwd(&old, &alpha, len).unwrap(),
        "forward"
    );
    let need = vec![true; k];
    let (dx_old, da_old) = be.mixed_op_bwd(&dy, &old, &alpha, len, &need).unwrap();
    let (dx_new, da_new) = be.mixed_op_bwd(&dy, &new, &alpha, len, &need).unwrap();
    assert_eq!(da_new, da_old, "dalpha");
    for i in 0..k {
        if zero.contains(&i) {
            assert!(dx_new[i].is_none(), "dx[{i}] of an absent input");
            assert!(
                da_new[i].to_f64() != 0.0,
                "dalpha[{i}] of an absent input is 0"
            );
        } else {
            assert_eq!(dx_new[i], dx_old[i], "dx[{i}]");
        }
    }
    // Only absent inputs: an error, not a panic.
    let err = be
        .mixed_op_fwd(&[None, None], &alpha[..2].to_vec(), len)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixed_op") && err.contains("absent"), "{err}");
}

#[test]
fn backend_none_equals_zeros_buffer_f32() {
    backend_equals_materialised_zeros::<f32>();
}

#[test]
fn backend_none_equals_zeros_buffer_f64() {
    backend_equals_materialised_zeros::<f64>();
}

/// Tape level: an edge `[none, x, relu(x), x]` against the same edge with a zeros constant,
/// values and gradients of x and alpha equal.
#[test]
fn tape_none_equals_zeros_constant() {
    let be = Cpu::new();
    let mut rng = Rng::new(12);
    let shape = Shape::new(&[2, 3, 5, 7]);
    let x: Vec<f32> = randn(&mut rng, shape.numel());
    let alpha: Vec<f32> = randn(&mut rng, 4);
    let dy: Vec<f32> = randn(&mut rng, shape.numel());
    let run = |materialise: bool| {
        let mut tape = Tape::new(be.clone());
        let xv = tape.leaf(Tensor::from_host(&be, &x, shape.clone()).unwrap(), true);
        let av = tape.leaf(Tensor::from_host(&be, &alpha, [4]).unwrap(), true);
        let r = tape.relu(xv).unwrap();
        let z: Option<Var> =
            materialise.then(|| tape.constant(Tensor::zeros(&be, shape.clone()).unwrap()));
        let y = tape
            .mixed_op(&[z, Some(xv), Some(r), Some(xv)], av)
            .unwrap();
        let yh = tape.value(y).unwrap().to_host(&be).unwrap();
        let g = tape.backward_with(y, dy.clone()).unwrap();
        (
            yh,
            g.get(xv).unwrap().to_host(&be).unwrap(),
            g.get(av).unwrap().to_host(&be).unwrap(),
        )
    };
    let (old, new) = (run(true), run(false));
    assert_eq!(new.0, old.0, "y");
    assert_eq!(new.1, old.1, "dx");
    assert_eq!(new.2, old.2, "dalpha");
    assert!(new.2[0] != 0.0, "the none slot's alpha gets a gradient");
}

/// The counting backend reads and multiplies only the present inputs and allocates no dx
/// for an absent one.
#[test]
fn counting_skips_the_absent_input() {
    let be = Counting::new();
    let (k, len) = (8usize, 1000usize);
    let xs: Vec<_> = (0..k)
        .map(|_| be.upload(&vec![0.0; len]).unwrap())
        .collect();
    let alpha = be.upload(&[0.0; 8]).unwrap();
    let dy = be.upload(&vec![0.0; len]).unwrap();
    let mut refs: Vec<Option<_>> = xs.iter().map(Some).collect();
    refs[0] = None;
    be.reset().unwrap();
    let y = be.mixed_op_fwd(&refs, &alpha, len).unwrap();
    let (dxs, _da) = be
        .mixed_op_bwd(&dy, &refs, &alpha, len, &[true; 8])
        .unwrap();
    let c = be.snapshot().unwrap();
    let (fwd, bwd) = (c.ops["mixed_op_fwd"], c.ops["mixed_op_bwd"]);
    let e = ELEM_BYTES;
    // Forward: 7 inputs and alpha read, y written, a multiply-add per present element.
    assert_eq!(fwd.bytes_read, (7 * len as u64 + 8) * e);
    assert_eq!(fwd.bytes_written, len as u64 * e);
    assert_eq!(fwd.flops, 2 * 7 * len as u64);
    // Backward: dy, alpha and 7 inputs read; 7 dx and dalpha written.
    assert_eq!(bwd.bytes_read, (8 * len as u64 + 8) * e);
    assert_eq!(bwd.bytes_written, (7 * len as u64 + 8) * e);
    assert_eq!(bwd.flops, 2 * 7 * len as u64 + 7 * len as u64);
    assert!(dxs[0].is_none() && dxs[1..].iter().all(Option::is_some));
    drop(y);
}

/// Backend level on a device: `None` at slots 0 and 5 against zeros buffers there; returns
/// the forward, every dx and dalpha (as computed with `None`).
fn backend_none<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Outputs> {
    let mut rng = Rng::new(11);
    let (k, len) = (8, (1 << 14) * 2 + 37);
    let zero = [0usize, 5];
    let host: Vec<Vec<f32>> = (0..k)
        .map(|i| {
            if zero.contains(&i) {
                vec![0.0; len]
            } else {
                randn::<f32>(&mut rng, len)
            }
        })
        .collect();
    let xs = host
        .iter()
        .map(|x| be.upload(x))
        .collect::<nasrs::Result<Vec<_>>>()?;
    let alpha = be.upload(&randn::<f32>(&mut rng, k))?;
    let dy = be.upload(&randn::<f32>(&mut rng, len))?;
    let old: Vec<Option<&B::Storage>> = xs.iter().map(Some).collect();
    let new: Vec<Option<&B::Storage>> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| (!zero.contains(&i)).then_some(x))
        .collect();
    let mut out = Outputs::default();
    let y = be.download(&be.mixed_op_fwd(&new, &alpha, len)?)?;
    assert_eq!(
        y,
        be.download(&be.mixed_op_fwd(&old, &alpha, len)?)?,
        "forward"
    );
    out.push("y", y);
    let need = vec![true; k];
    let (dx_old, da_old) = be.mixed_op_bwd(&dy, &old, &alpha, len, &need)?;
    let (dx_new, da_new) = be.mixed_op_bwd(&dy, &new, &alpha, len, &need)?;
    let da = be.download(&da_new)?;
    assert_eq!(da, be.download(&da_old)?, "dalpha");
    for i in 0..k {
        if zero.contains(&i) {
            assert!(dx_new[i].is_none(), "dx[{i}] of an absent input");
            assert!(da[i] != 0.0, "dalpha[{i}] of an absent input is 0");
        } else {
            let (n, o) = (dx_new[i].as_ref(), dx_old[i].as_ref());
            let n = be.download(n.expect("dx of a present input"))?;
            assert_eq!(
                n,
                be.download(o.expect("dx of a present input"))?,
                "dx[{i}]"
            );
            out.push(format!("dx[{i}]"), n);
        }
    }
    out.push("dalpha", da);
    // Only absent inputs: an error, not a panic.
    let two = be.upload(&[0.1, 0.2])?;
    let err = be
        .mixed_op_fwd(&[None, None], &two, len)
        .err()
        .expect("only absent inputs must be an error")
        .to_string();
    assert!(err.contains("mixed_op") && err.contains("absent"), "{err}");
    Ok(out)
}

/// Tape level on a device: the edge `[none, x, relu(x), x]` against the same edge with a
/// zeros constant; returns y and the gradients of x and alpha.
fn tape_none<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Outputs> {
    let mut rng = Rng::new(12);
    let shape = Shape::new(&[2, 3, 5, 7]);
    let x: Vec<f32> = randn(&mut rng, shape.numel());
    let alpha: Vec<f32> = randn(&mut rng, 4);
    let dy: Vec<f32> = randn(&mut rng, shape.numel());
    let run = |materialise: bool| -> nasrs::Result<Outputs> {
        let mut tape = Tape::new(be.clone());
        let xv = tape.leaf(Tensor::from_host(be, &x, shape.clone())?, true);
        let av = tape.leaf(Tensor::from_host(be, &alpha, [4])?, true);
        let r = tape.relu(xv)?;
        let z: Option<Var> = match materialise {
            true => Some(tape.constant(Tensor::zeros(be, shape.clone())?)),
            false => None,
        };
        let y = tape.mixed_op(&[z, Some(xv), Some(r), Some(xv)], av)?;
        let mut out = Outputs::default();
        out.push("y", tape.value(y)?.to_host(be)?);
        let g = tape.backward_with(y, be.upload(&dy)?)?;
        let grad = |v: Var| g.get(v).expect("a leaf's gradient").to_host(be);
        out.push("dx", grad(xv)?);
        out.push("dalpha", grad(av)?);
        Ok(out)
    };
    let (old, new) = (run(true)?, run(false)?);
    assert_eq!(new, old, "none against a zeros constant");
    assert!(new.get("dalpha").expect("dalpha")[0] != 0.0);
    Ok(new)
}

fn none_matches_zeros_and_the_cpu<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let cpu = Cpu::new();
    assert_close(
        be,
        "MixedOp none (backend)",
        &backend_none(be)?,
        &backend_none(&cpu)?,
        TOL,
    );
    assert_close(
        be,
        "MixedOp none (tape)",
        &tape_none(be)?,
        &tape_none(&cpu)?,
        TOL,
    );
    Ok(())
}

test_device!(
    none_equals_zeros_and_the_cpu,
    none_matches_zeros_and_the_cpu
);
