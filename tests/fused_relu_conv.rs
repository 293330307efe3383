//! The fused pre-activation convolution (`Conv2dSpec::relu_input`) equals the unfused
//! composition on the CPU: `conv2d_fwd(relu_fwd(x))`, `relu_bwd(relu_fwd(x),
//! conv2d_bwd_data(dy))` and `conv2d_bwd_weight(relu_fwd(x), dy)`, in f64 to 1e-6 and in f32
//! tightly, on every conv path (depthwise, dilated, strided, 1x1 direct and im2col, grouped,
//! dense). Also: the DARTS networks store no ReLU output any more, and the counting backend
//! charges the fused data gradient for reading x.
//!
//! On every device (`test_device!`): the same cases, fused against the unfused composition
//! on that device (1e-4 absolute, the masked data gradient exactly zero), and the fused
//! results equal to the CPU's (1e-4 on the selftest measure).

mod common;

use common::{assert_close, Outputs, TOL};
use nasrs::autograd::Tape;
use nasrs::backend::counting::{Counting, ELEM_BYTES};
use nasrs::backend::prelude::*;
use nasrs::nas::{Mode, SearchConfig, SearchNetwork};
use nasrs::{Backend, Conv2dSpec, Cpu, Element, Nchw, Rng, Tensor};

fn spec(cin: usize, cout: usize, k: usize, s: usize, p: usize, d: usize, g: usize) -> Conv2dSpec {
    Conv2dSpec::new(cin, cout, k)
        .stride(s)
        .padding(p)
        .dilation(d)
        .groups(g)
}

/// (input, spec) pairs covering every path of the CPU conv, at odd shapes.
fn cases() -> Vec<(Nchw, Conv2dSpec)> {
    let x = |n, c, h, w| Nchw { n, c, h, w };
    vec![
        (x(2, 6, 13, 11), spec(6, 6, 3, 1, 1, 1, 6)),
        (x(1, 4, 13, 11), spec(4, 4, 3, 2, 1, 1, 4)),
        (x(3, 5, 9, 7), spec(5, 5, 5, 1, 4, 2, 5)),
        (x(2, 3, 13, 11), spec(3, 3, 5, 2, 4, 2, 3)),
        (x(9, 8, 16, 16), spec(8, 8, 3, 1, 1, 1, 8)),
        (x(3, 6, 5, 7), spec(6, 10, 1, 1, 0, 1, 1)),
        (x(2, 6, 13, 11), spec(6, 4, 1, 2, 0, 1, 1)),
        (x(2, 6, 12, 12), spec(6, 4, 1, 2, 0, 1, 1)),
        (x(2, 3, 13, 11), spec(3, 8, 3, 1, 1, 1, 1)),
        (x(2, 6, 9, 9), spec(6, 4, 3, 2, 1, 1, 2)),
        (x(1, 4, 13, 11), spec(4, 3, 5, 1, 4, 2, 1)),
        (x(3, 7, 2, 2), spec(7, 5, 2, 1, 0, 1, 1)),
    ]
}

fn max_abs_diff<T: Element>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64() - y.to_f64()).abs())
        .fold(0.0, f64::max)
}

/// Fused vs unfused for every case; returns the worst absolute difference per pass.
fn compare<T: Element>(tol: f64) {
    let cpu = Cpu::<T>::with_element();
    let mut rng = Rng::new(17);
    for (xd, plain) in cases() {
        let fused = plain.relu_input();
        let yd = plain.output(xd).unwrap();
        let mut draw = |n: usize| -> Vec<T> { (0..n).map(|_| T::from_f64(rng.normal())).collect() };
        let (x, w, dy) = (
            draw(xd.numel()),
            draw(plain.weight_shape().numel()),
            draw(yd.numel()),
        );
        let negatives = x.iter().filter(|v| v.to_f64() < 0.0).count();
        assert!(
            negatives * 3 > x.len(),
            "{plain:?}: too few negative inputs"
        );
        let rx = cpu.relu_fwd(&x).unwrap();

        let got = cpu.conv2d_fwd(&x, xd, &w, &fused).unwrap();
        let want = cpu.conv2d_fwd(&rx, xd, &w, &plain).unwrap();
        let e = max_abs_diff(&got, &want);
        assert!(e <= tol, "fwd {plain:?} on {xd:?}: {e}");
        // The unfused forward output differs from a plain conv of x: the ReLU did something.
        let raw = cpu.conv2d_fwd(&x, xd, &w, &plain).unwrap();
        assert!(
            max_abs_diff(&raw, &want) > 1e-2,
            "{plain:?}: ReLU had no effect"
        );

        let got = cpu.conv2d_bwd_data(&x, &dy, &w, xd, &fused).unwrap();
        let dh = cpu.conv2d_bwd_data(&rx, &dy, &w, xd, &plain).unwrap();
        let want = cpu.relu_bwd(&rx, &dh).unwrap();
        let e = max_abs_diff(&got, &want);
        assert!(e <= tol, "bwd_data {plain:?} on {xd:?}: {e}");
        for (g, &v) in got.iter().zip(&x) {
            if v.to_f64() <= 0.0 {
                assert_eq!(g.to_f64(), 0.0, "bwd_data {plain:?}: unmasked gradient");
            }
        }

        let got = cpu.conv2d_bwd_weight(&x, &dy, xd, &fused).unwrap();
        let want = cpu.conv2d_bwd_weight(&rx, &dy, xd, &plain).unwrap();
        let e = max_abs_diff(&got, &want);
        assert!(e <= tol, "bwd_weight {plain:?} on {xd:?}: {e}");
    }
}

#[test]
fn fused_equals_unfused_f64() {
    compare::<f64>(1e-6);
}

#[test]
fn fused_equals_unfused_f32() {
    // Same summation order on both sides except for the masked (zero) terms: f32 rounding
    // of sums of a few hundred unit-size terms at most.
    compare::<f32>(1e-4);
}

/// A DARTS search step forward and backward: no ReLU is materialised (every one is fused
/// into the conv that reads it), and the fused convs' data gradients read their input.
#[test]
fn search_network_runs_no_relu_op() {
    let be = Counting::new();
    let mut net = SearchNetwork::new(&be, SearchConfig::darts(2, 3, 3, 1), 0).unwrap();
    let mut tape = Tape::new(be.clone());
    let x = tape.leaf(
        Tensor::from_host(&be, &vec![0.5f32; 2 * 8 * 8], [2, 1, 8, 8]).unwrap(),
        false,
    );
    be.reset().unwrap();
    let logits = net.run(&mut tape, x, Mode::WEIGHT_STEP, None).unwrap();
    let labels = std::sync::Arc::new(be.upload_labels(&[0, 1], 3).unwrap());
    let loss = tape.softmax_cross_entropy(logits, &labels).unwrap();
    tape.backward(loss).unwrap();
    let c = be.snapshot().unwrap();
    assert_eq!(c.ops.get("relu_fwd").map_or(0, |o| o.calls), 0);
    assert_eq!(c.ops.get("relu_bwd").map_or(0, |o| o.calls), 0);
    assert!(c.ops["conv2d_bwd_data"].calls > 0);
}

/// The counting backend charges a fused data gradient for x, and nothing for a plain one.
#[test]
fn counting_backend_counts_the_fused_mask_read() {
    let be = Counting::new();
    let xd = Nchw {
        n: 2,
        c: 3,
        h: 5,
        w: 5,
    };
    let plain = spec(3, 3, 3, 1, 1, 1, 3);
    let fused = plain.relu_input();
    let (x, w, dy) = (
        be.zeros(xd.numel()).unwrap(),
        be.zeros(27).unwrap(),
        be.zeros(xd.numel()).unwrap(),
    );
    be.reset().unwrap();
    be.conv2d_bwd_data(&x, &dy, &w, xd, &plain).unwrap();
    let p = be.snapshot().unwrap().ops["conv2d_bwd_data"];
    be.reset().unwrap();
    be.conv2d_bwd_data(&x, &dy, &w, xd, &fused).unwrap();
    let f = be.snapshot().unwrap().ops["conv2d_bwd_data"];
    assert_eq!(p.bytes_read, (150 + 27) * ELEM_BYTES);
    assert_eq!(f.bytes_read, p.bytes_read + 150 * ELEM_BYTES);
    assert_eq!(f.bytes_written, p.bytes_written);
    // The mask: one operation per input element on top of the multiply-adds.
    assert_eq!(f.flops, p.flops + 150);
}

/// Every case of `compare` on a device: fused against unfused there; returns the fused
/// forward, data gradient and weight gradient.
fn fused_on<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<Outputs> {
    let mut rng = Rng::new(17);
    let mut out = Outputs::default();
    for (i, (xd, plain)) in cases().into_iter().enumerate() {
        let fused = plain.relu_input();
        let yd = plain.output(xd)?;
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let (x, w, dy) = (
            draw(xd.numel()),
            draw(plain.weight_shape().numel()),
            draw(yd.numel()),
        );
        let (xb, wb, dyb) = (be.upload(&x)?, be.upload(&w)?, be.upload(&dy)?);
        let rx = be.relu_fwd(&xb)?;
        let d = |b: &B::Storage| be.download(b);

        let got = d(&be.conv2d_fwd(&xb, xd, &wb, &fused)?)?;
        let want = d(&be.conv2d_fwd(&rx, xd, &wb, &plain)?)?;
        let e = max_abs_diff(&got, &want);
        assert!(e <= 1e-4, "fwd {plain:?} on {xd:?}: {e}");
        out.push(format!("fwd[{i}]"), got);

        let got = d(&be.conv2d_bwd_data(&xb, &dyb, &wb, xd, &fused)?)?;
        let dh = be.conv2d_bwd_data(&rx, &dyb, &wb, xd, &plain)?;
        let want = d(&be.relu_bwd(&rx, &dh)?)?;
        let e = max_abs_diff(&got, &want);
        assert!(e <= 1e-4, "bwd_data {plain:?} on {xd:?}: {e}");
        for (g, &v) in got.iter().zip(&x) {
            if v <= 0.0 {
                assert_eq!(*g, 0.0, "bwd_data {plain:?}: unmasked gradient");
            }
        }
        out.push(format!("bwd_data[{i}]"), got);

        let got = d(&be.conv2d_bwd_weight(&xb, &dyb, xd, &fused)?)?;
        let want = d(&be.conv2d_bwd_weight(&rx, &dyb, xd, &plain)?)?;
        let e = max_abs_diff(&got, &want);
        assert!(e <= 1e-4, "bwd_weight {plain:?} on {xd:?}: {e}");
        out.push(format!("bwd_weight[{i}]"), got);
    }
    Ok(out)
}

fn fused_matches_unfused_and_cpu<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let got = fused_on(be)?;
    let want = fused_on(&Cpu::new())?;
    assert_close(be, "fused ReLU conv", &got, &want, TOL);
    Ok(())
}

test_device!(
    fused_equals_unfused_and_the_cpu,
    fused_matches_unfused_and_cpu
);
