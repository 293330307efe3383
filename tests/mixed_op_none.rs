//! The MixedOp's absent (`none`) inputs: declaring an input zero without a buffer gives
//! exactly what a materialised zeros input gave (forward, every dx, every dalpha, on the CPU
//! in f32 and f64, through the backend and through the tape), an absent input gets no dx but
//! a nonzero alpha gradient, and the counting backend reads nothing for it.

use nasrs::autograd::{Tape, Var};
use nasrs::backend::counting::{Counting, ELEM_BYTES};
use nasrs::backend::{Backend, Element};
use nasrs::{Cpu, Rng, Shape, Tensor};

fn randn<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.normal())).collect()
}

/// Backend level: `None` at `zero` slots against a zeros buffer there, at an odd length
/// bigger than one CPU chunk (so several chunk partials are summed).
fn backend_equals_materialised_zeros<T: Element>() {
    let be = Cpu::<T>::new();
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
    let be = Cpu::<f32>::new();
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
