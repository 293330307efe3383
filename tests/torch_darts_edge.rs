//! One DARTS search MixedOp edge (all 8 primitives, non-affine BN, training mode) against
//! PyTorch: output, input gradient, alpha gradient, every weight gradient (matched by its
//! PyTorch state_dict name) and the BN running statistics after the forward. Fixture made by
//! `tools/make_fixtures.py` (see tools/README.md). Tolerance: 1e-4 relative to the tensor's
//! largest magnitude (float32).

mod common;

use nasrs::autograd::{ParamStore, Tape};
use nasrs::io::{load_safetensors, HostTensor};
use nasrs::nas::modules::{Builder, Ctx, EdgeOp, Mode};
use nasrs::nas::Primitive;
use nasrs::{Cpu, Rng, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

fn close(what: &str, got: &[f32], want: &[f32]) {
    common::assert_close_values(what, got, want, 1e-4);
}

fn check_case(case: &str, stride: usize, t: &BTreeMap<String, HostTensor>) {
    let be: Cpu = Cpu::new();
    let get = |name: &str| {
        t.get(&format!("{case}.{name}"))
            .unwrap_or_else(|| panic!("fixture has no {case}.{name}"))
    };
    let x = get("x");
    let c = x.shape[1];
    let (mut weights, mut buffers) = (ParamStore::new(), ParamStore::new());
    let mut rng = Rng::new(0);
    let ops = {
        let mut b = Builder::new(&be, &mut weights, &mut buffers, &mut rng);
        b.scope("_ops", |b| {
            Primitive::ALL
                .iter()
                .enumerate()
                .map(|(k, &p)| b.scope(k, |b| EdgeOp::new(b, p, c, stride, false, true)))
                .collect::<nasrs::Result<Vec<_>>>()
        })
        .unwrap()
    };
    // PyTorch's initial weights, by name.
    for id in weights.ids().collect::<Vec<_>>() {
        let w = get(weights.name(id));
        weights
            .set(
                id,
                Tensor::from_host(&be, &w.data, w.shape.as_slice()).unwrap(),
            )
            .unwrap();
    }
    let arch = ParamStore::new();
    let mut tape = Tape::new(be.clone());
    let xv = tape.leaf(
        Tensor::from_host(&be, &x.data, x.shape.as_slice()).unwrap(),
        true,
    );
    let alpha = tape.leaf(
        Tensor::from_host(&be, &get("alpha").data, [8]).unwrap(),
        true,
    );
    let y = {
        let mut cx = Ctx {
            tape: &mut tape,
            weights: &weights,
            buffers: &mut buffers,
            arch: &arch,
            mode: Mode::WEIGHT_STEP,
        };
        let outs: Vec<_> = ops
            .iter()
            .map(|op| op.forward(&mut cx, xv).unwrap())
            .collect();
        // The edge's output size, from any materialised op output.
        let len = outs
            .iter()
            .flatten()
            .map(|&o| cx.tape.shape(o).numel())
            .next()
            .unwrap();
        for (k, &o) in outs.iter().enumerate() {
            let what = format!("{case} op_out.{k} ({})", Primitive::ALL[k]);
            let want = &get(&format!("op_out.{k}")).data;
            // Only `none` is left unmaterialised, and PyTorch's output for it is all zero.
            assert_eq!(o.is_none(), Primitive::ALL[k] == Primitive::None, "{what}");
            match o {
                Some(o) => close(
                    &what,
                    &cx.tape.value(o).unwrap().to_host(&be).unwrap(),
                    want,
                ),
                None => close(&what, &vec![0.0; len], want),
            }
        }
        cx.tape.mixed_op(&outs, alpha).unwrap()
    };
    close(
        &format!("{case} y"),
        &tape.value(y).unwrap().to_host(&be).unwrap(),
        &get("y").data,
    );
    let grads = tape.backward_with(y, get("dy").data.clone()).unwrap();
    close(
        &format!("{case} dx"),
        &grads.get(xv).unwrap().to_host(&be).unwrap(),
        &get("dx").data,
    );
    close(
        &format!("{case} dalpha"),
        &grads.get(alpha).unwrap().to_host(&be).unwrap(),
        &get("dalpha").data,
    );
    for id in weights.ids() {
        let name = weights.name(id);
        let g = grads
            .param(&weights, id)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        close(
            &format!("{case} grad {name}"),
            &g.to_host(&be).unwrap(),
            &get(&format!("grad.{name}")).data,
        );
    }
    drop(grads);
    tape.clear();
    assert!(buffers.len() >= 6, "{case}: too few BN buffers");
    for id in buffers.ids() {
        let name = buffers.name(id);
        close(
            &format!("{case} {name}"),
            &buffers.get(id).to_host(&be).unwrap(),
            &get(name).data,
        );
    }
}

#[test]
fn darts_mixed_op_edge_matches_pytorch() {
    let (t, _) = load_safetensors(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/darts_edge.safetensors"),
    )
    .unwrap();
    check_case("stride1", 1, &t);
    check_case("stride2", 2, &t);
}
