//! NaN is never hidden by a whole network, on every device (`test_device!`): an evaluation
//! network with one NaN weight, and a search network with one NaN alpha, give NaN logits and
//! a NaN loss in eval mode. The helpers are shared with the other `tests/nan_*.rs` files
//! (common/nan.rs).

mod common;

use common::nan::{nans, non_finite, NAN};
use common::randn;
use nasrs::autograd::Tape;
use nasrs::nas::eval_model::{EvalConfig, EvalNetwork};
use nasrs::nas::{Genotype, Mode, SearchConfig, SearchNetwork};
use nasrs::{Backend, Rng, Tensor};
use std::sync::Arc;

// ---- whole networks -----------------------------------------------------------------------

/// Sets element 0 of the tensor `name` of `store` to NaN, in place.
fn poison<B: Backend<Elem = f32>>(
    be: &B,
    store: &mut nasrs::autograd::ParamStore<B>,
    name: &str,
) -> nasrs::Result<()> {
    let id = store
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", store.names()));
    let mut host = store.get(id).to_host(be)?;
    host[0] = NAN;
    be.upload_into(store.get_mut(id).buf_mut(name)?, &host)
}

/// Eval-mode logits and loss of a batch of 2 RGB 16x16 images, through `run`.
fn eval_forward<B: Backend<Elem = f32>>(
    be: &B,
    classes: usize,
    run: impl FnOnce(&mut Tape<B>, nasrs::autograd::Var) -> nasrs::Result<nasrs::autograd::Var>,
) -> nasrs::Result<(Vec<f32>, f32)> {
    let mut rng = Rng::new(21);
    let images = Tensor::from_host(be, &randn(&mut rng, 2 * 3 * 16 * 16), [2, 3, 16, 16])?;
    let mut tape = Tape::new(be.clone());
    tape.set_grad_enabled(false);
    let x = tape.constant(images);
    let logits = run(&mut tape, x)?;
    let labels = Arc::new(be.upload_labels(&[1, 2], classes)?);
    let loss = tape.softmax_cross_entropy(logits, &labels)?;
    let l = tape.value(loss)?.to_host(be)?;
    Ok((tape.value(logits)?.to_host(be)?, l[0]))
}

/// DARTS_V2 with a NaN in the stem conv's weight: the stem's output channel is NaN, and it
/// reaches the classifier only through ReLUs (every cell's preprocessing starts with one),
/// which must keep it.
fn eval_network_with_nan_weight<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let cfg = EvalConfig {
        genotype: Genotype::builtin("DARTS_V2").expect("DARTS_V2"),
        channels: 2,
        layers: 3,
        classes: 10,
        in_channels: 3,
        auxiliary: false,
    };
    let mut net = EvalNetwork::new(be, cfg, 1)?;
    let run = |net: &mut EvalNetwork<B>| {
        eval_forward(be, 10, |tape, x| {
            Ok(net.run(tape, x, Mode::EVAL, 0.0, &mut Rng::new(0))?.0)
        })
    };
    let (logits, loss) = run(&mut net)?;
    assert!(non_finite(&logits).is_empty() && loss.is_finite());
    poison(be, &mut net.weights, "stem.0.weight")?;
    let (logits, loss) = run(&mut net)?;
    assert_eq!(nans(&logits).len(), logits.len(), "logits {logits:?}");
    assert!(loss.is_nan(), "loss {loss}");
    Ok(())
}
test_device!(eval_network_nan_weight, eval_network_with_nan_weight);

/// A DARTS search network (first cell normal, the other two reduction) with one NaN alpha on
/// a normal-cell edge: that MixedOp is NaN, and the reduction cells read it through ReLUs.
fn search_network_with_nan_alpha<B: Backend<Elem = f32>>(be: &B) -> nasrs::Result<()> {
    let mut net = SearchNetwork::new(be, SearchConfig::darts(2, 3, 10, 3), 0)?;
    let run = |net: &mut SearchNetwork<B>| {
        eval_forward(be, 10, |tape, x| net.run(tape, x, Mode::EVAL, None))
    };
    let (logits, loss) = run(&mut net)?;
    assert!(non_finite(&logits).is_empty() && loss.is_finite());
    poison(be, &mut net.arch, "alphas_normal.0")?;
    let (logits, loss) = run(&mut net)?;
    assert_eq!(nans(&logits).len(), logits.len(), "logits {logits:?}");
    assert!(loss.is_nan(), "loss {loss}");
    Ok(())
}
test_device!(search_network_nan_alpha, search_network_with_nan_alpha);
