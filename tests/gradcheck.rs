//! Finite-difference gradient checks of every tape op and of the tape itself, run on the
//! CPU backend in f64 (`Cpu<f64>`: the same kernels as the f32 product). Each check builds a
//! scalar `L = <f(inputs), r>` for a random `r`, compares the tape's gradient of every input
//! with central differences (h = 1e-6), and requires agreement to 1e-6 absolute + 1e-5
//! relative. Inputs have odd sizes; convs cover stride 2, dilation 2 and groups.

use nasrs::autograd::{ParamStore, Tape, Var};
use nasrs::backend::cpu::Cpu;
use nasrs::backend::prelude::*;
use nasrs::{Conv2dSpec, Pool2dSpec, Result, Rng, Shape, Tensor};

type B = Cpu<f64>;

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor<B> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_host(&B::default(), &v, Shape::new(shape)).unwrap()
}

/// Checks d<f(xs), r>/d xs against central differences, for up to `max_probe` entries per input.
fn gradcheck(name: &str, inputs: Vec<Tensor<B>>, f: impl Fn(&mut Tape<B>, &[Var]) -> Result<Var>) {
    let be = B::default();
    let mut rng = Rng::new(99);
    // Analytic.
    let mut tape = Tape::new(be.clone());
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone(), true)).collect();
    let y = f(&mut tape, &vars).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let r: Vec<f64> = (0..tape.shape(y).numel()).map(|_| rng.normal()).collect();
    let grads = tape
        .backward_with(y, r.clone())
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let objective = |xs: &[Tensor<B>]| -> f64 {
        let mut t = Tape::new(be.clone());
        t.set_grad_enabled(false);
        let vs: Vec<Var> = xs.iter().map(|x| t.leaf(x.clone(), false)).collect();
        let y = f(&mut t, &vs).unwrap();
        t.value(y)
            .unwrap()
            .to_host(&be)
            .unwrap()
            .iter()
            .zip(&r)
            .map(|(a, b)| a * b)
            .sum()
    };
    let h = 1e-6;
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(vars[i])
            .unwrap_or_else(|| panic!("{name}: no gradient for input {i}"))
            .to_host(&be)
            .unwrap();
        assert_eq!(
            analytic.len(),
            input.numel(),
            "{name}: gradient size of input {i}"
        );
        let base = input.to_host(&be).unwrap();
        let n = base.len();
        let probes: Vec<usize> = if n <= 40 {
            (0..n).collect()
        } else {
            (0..40).map(|_| rng.below(n)).collect()
        };
        for j in probes {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs = inputs.clone();
                xs[i] = Tensor::from_host(&be, &v, input.shape.clone()).unwrap();
                objective(&xs)
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let a = analytic[j];
            let tol = 1e-6 + 1e-5 * a.abs().max(numeric.abs());
            assert!(
                (a - numeric).abs() <= tol,
                "{name}: input {i} element {j}: analytic {a} vs numeric {numeric}"
            );
        }
    }
}

fn conv_case(
    name: &str,
    n: usize,
    cin: usize,
    cout: usize,
    hw: (usize, usize),
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) {
    let spec = Conv2dSpec::new(cin, cout, kernel)
        .stride(stride)
        .padding(padding)
        .dilation(dilation)
        .groups(groups);
    let mut rng = Rng::new(1);
    let x = random(&mut rng, &[n, cin, hw.0, hw.1]);
    let w = random(&mut rng, spec.weight_shape().dims());
    gradcheck(name, vec![x, w], move |t, v| t.conv2d(v[0], v[1], spec));
}

#[test]
fn conv2d_dense_stem_3x3() {
    conv_case("stem 3x3", 2, 3, 5, (7, 5), 3, 1, 1, 1, 1);
}
#[test]
fn conv2d_dense_stride2_dilation2() {
    conv_case("dense s2 d2", 2, 3, 4, (9, 8), 3, 2, 2, 2, 1);
    conv_case("dense 5x5 d2 on 3x3", 1, 2, 3, (3, 3), 5, 1, 4, 2, 1);
}
#[test]
fn conv2d_pointwise_1x1() {
    conv_case("1x1", 3, 5, 4, (5, 7), 1, 1, 0, 1, 1);
}
#[test]
fn conv2d_pointwise_1x1_stride2() {
    conv_case("1x1 s2 (FactorizedReduce)", 2, 4, 3, (7, 7), 1, 2, 0, 1, 1);
}
#[test]
fn conv2d_grouped() {
    conv_case("groups 2", 2, 4, 6, (6, 5), 3, 1, 1, 1, 2);
}
#[test]
fn conv2d_depthwise_3x3_5x5_7x7_all_strides_dilations() {
    for (k, s, d) in [
        (3, 1, 1),
        (3, 2, 1),
        (3, 1, 2),
        (3, 2, 2),
        (5, 1, 1),
        (5, 2, 1),
        (5, 1, 2),
        (5, 2, 2),
        (7, 1, 1),
        (7, 2, 1),
    ] {
        let pad = d * (k - 1) / 2;
        conv_case(
            &format!("depthwise k{k} s{s} d{d}"),
            2,
            3,
            3,
            (9, 7),
            k,
            s,
            pad,
            d,
            3,
        );
    }
}

/// Inputs about half negative with |x| >= 0.05, so a central difference (h = 1e-6) never
/// crosses the fused ReLU's kink at 0.
fn signed_away_from_zero(rng: &mut Rng, shape: &[usize]) -> Tensor<B> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let m = 0.05 + rng.uniform();
            if rng.bernoulli(0.5) {
                m
            } else {
                -m
            }
        })
        .collect();
    Tensor::from_host(&B::default(), &v, Shape::new(shape)).unwrap()
}

/// `conv2d(relu(x), w)` as one op (`relu_input`): gradients of x (masked) and w (from relu(x)).
fn fused_relu_conv_case(name: &str, n: usize, hw: (usize, usize), spec: Conv2dSpec) {
    let spec = spec.relu_input();
    let mut rng = Rng::new(5);
    let x = signed_away_from_zero(&mut rng, &[n, spec.in_channels, hw.0, hw.1]);
    let negatives = x
        .to_host(&B::default())
        .unwrap()
        .iter()
        .filter(|&&v| v < 0.0)
        .count();
    assert!(negatives * 4 > x.numel(), "{name}: too few negative inputs");
    let w = random(&mut rng, spec.weight_shape().dims());
    gradcheck(name, vec![x, w], move |t, v| t.conv2d(v[0], v[1], spec));
}

fn spec(cin: usize, cout: usize, k: usize, s: usize, p: usize, d: usize, g: usize) -> Conv2dSpec {
    Conv2dSpec::new(cin, cout, k)
        .stride(s)
        .padding(p)
        .dilation(d)
        .groups(g)
}

#[test]
fn conv2d_fused_relu_depthwise_and_dilated() {
    fused_relu_conv_case("relu dw 3x3 s1", 2, (9, 7), spec(3, 3, 3, 1, 1, 1, 3));
    fused_relu_conv_case("relu dw 3x3 s2", 2, (9, 7), spec(3, 3, 3, 2, 1, 1, 3));
    fused_relu_conv_case("relu dw 5x5 s1", 1, (7, 8), spec(2, 2, 5, 1, 2, 1, 2));
    fused_relu_conv_case("relu dil 5x5 d2", 2, (9, 7), spec(3, 3, 5, 1, 4, 2, 3));
    fused_relu_conv_case("relu dil 3x3 d2 s2", 1, (11, 6), spec(4, 4, 3, 2, 2, 2, 4));
}

#[test]
fn conv2d_fused_relu_gemm_path() {
    // 1x1 stride 1 (ReLUConvBN preprocessing; im2col when fused), 1x1 stride 2
    // (FactorizedReduce), dense 3x3, grouped 3x3 stride 2, the aux head's 2x2.
    fused_relu_conv_case("relu 1x1 s1", 3, (5, 7), spec(5, 4, 1, 1, 0, 1, 1));
    fused_relu_conv_case("relu 1x1 s2", 2, (7, 7), spec(4, 3, 1, 2, 0, 1, 1));
    fused_relu_conv_case("relu 1x1 s2 cropped", 2, (6, 6), spec(4, 3, 1, 2, 0, 1, 1));
    fused_relu_conv_case("relu full 3x3", 2, (7, 5), spec(3, 5, 3, 1, 1, 1, 1));
    fused_relu_conv_case("relu grouped 3x3 s2", 2, (9, 8), spec(4, 6, 3, 2, 1, 1, 2));
    fused_relu_conv_case("relu 2x2", 3, (2, 2), spec(5, 3, 2, 1, 0, 1, 1));
}

#[test]
fn max_and_avg_pool() {
    for stride in [1, 2] {
        let spec = Pool2dSpec {
            kernel: 3,
            stride,
            padding: 1,
        };
        let mut rng = Rng::new(2);
        let x = random(&mut rng, &[2, 3, 7, 6]);
        gradcheck(
            &format!("max_pool s{stride}"),
            vec![x.clone()],
            move |t, v| t.max_pool2d(v[0], spec),
        );
        gradcheck(&format!("avg_pool s{stride}"), vec![x], move |t, v| {
            t.avg_pool2d(v[0], spec)
        });
    }
}

#[test]
fn batch_norm_train_affine_and_not() {
    let mut rng = Rng::new(3);
    let x = random(&mut rng, &[3, 4, 5, 3]);
    let g = random(&mut rng, &[4]);
    let b = random(&mut rng, &[4]);
    gradcheck("bn non-affine", vec![x.clone()], |t, v| {
        t.batch_norm_train(v[0], None, None, 1e-5)
    });
    gradcheck("bn affine", vec![x, g, b], |t, v| {
        t.batch_norm_train(v[0], Some((v[1], v[2])), None, 1e-5)
    });
}

#[test]
fn batch_norm_eval_input_gradient() {
    let be = B::default();
    let mut rng = Rng::new(4);
    let x = random(&mut rng, &[2, 3, 4, 5]);
    let rm = random(&mut rng, &[3]);
    let rv = Tensor::from_host(&be, &[0.5, 1.5, 2.0], [3]).unwrap();
    gradcheck("bn eval", vec![x], move |t, v| {
        t.batch_norm_eval(v[0], None, &rm, &rv, 1e-5)
    });
}

#[test]
fn elementwise_and_layout_ops() {
    let mut rng = Rng::new(5);
    let a = random(&mut rng, &[2, 3, 5, 5]);
    let b = random(&mut rng, &[2, 3, 5, 5]);
    let c = random(&mut rng, &[2, 2, 5, 5]);
    gradcheck("relu", vec![a.clone()], |t, v| t.relu(v[0]));
    gradcheck("add", vec![a.clone(), b.clone()], |t, v| t.add(v[0], v[1]));
    gradcheck("scale", vec![a.clone()], |t, v| t.scale(v[0], -1.7));
    gradcheck(
        "sum of 3 (one used twice)",
        vec![a.clone(), b.clone()],
        |t, v| t.sum(&[v[0], v[1], v[0]]),
    );
    gradcheck("concat", vec![a.clone(), c, b.clone()], |t, v| {
        t.concat_channels(&[v[0], v[1], v[2]])
    });
    gradcheck("shift_crop", vec![a.clone()], |t, v| t.shift_crop(v[0]));
    gradcheck("global_avg_pool", vec![a.clone()], |t, v| {
        t.global_avg_pool(v[0])
    });
    gradcheck("sigmoid", vec![a.clone()], |t, v| t.sigmoid(v[0]));
    gradcheck("tanh", vec![a.clone()], |t, v| t.tanh(v[0]));
    gradcheck("silu", vec![a.clone()], |t, v| t.silu(v[0]));
    gradcheck("mul", vec![a.clone(), b.clone()], |t, v| t.mul(v[0], v[1]));
    gradcheck("mul of a value by itself", vec![a.clone()], |t, v| {
        t.mul(v[0], v[0])
    });
    let s = random(&mut rng, &[2, 3]);
    gradcheck("channel_scale", vec![a.clone(), s], |t, v| {
        t.channel_scale(v[0], v[1])
    });
    // Squeeze-and-excitation as MBConv composes it: the gate is a function of x itself.
    let (w1, w2) = (
        random(&mut rng, &[2, 3, 1, 1]),
        random(&mut rng, &[3, 2, 1, 1]),
    );
    gradcheck("squeeze-and-excitation", vec![a.clone(), w1, w2], |t, v| {
        let p = t.global_avg_pool(v[0])?;
        let (w1, w2) = (t.reshape(v[1], &[2, 3])?, t.reshape(v[2], &[3, 2])?);
        let h = t.linear(p, w1, None)?;
        let h = t.silu(h)?;
        let g = t.linear(h, w2, None)?;
        let g = t.sigmoid(g)?;
        t.channel_scale(v[0], g)
    });
    // A fixed seed fixes the mask, so the objective is the same function at every probe.
    gradcheck("dropout 0.3", vec![a.clone()], |t, v| {
        t.dropout(v[0], 0.3, &mut Rng::new(8))
    });
    gradcheck(
        "an LSTM cell's update",
        vec![a.clone(), b.clone()],
        |t, v| {
            let (i, g) = (t.sigmoid(v[0])?, t.tanh(v[1])?);
            let c = t.mul(i, g)?;
            let h = t.tanh(c)?;
            t.mul(i, h)
        },
    );
    gradcheck("drop_path", vec![a], |t, v| {
        let mut r = Rng::new(11); // the same mask in every evaluation
        t.drop_path(v[0], 0.6, &mut r)
    });
}

#[test]
fn linear_and_cross_entropy() {
    let mut rng = Rng::new(6);
    let x = random(&mut rng, &[5, 7]);
    let w = random(&mut rng, &[3, 7]);
    let b = random(&mut rng, &[3]);
    gradcheck("linear+bias", vec![x.clone(), w.clone(), b], |t, v| {
        t.linear(v[0], v[1], Some(v[2]))
    });
    gradcheck("linear", vec![x.clone(), w.clone()], |t, v| {
        t.linear(v[0], v[1], None)
    });
    let logits = random(&mut rng, &[5, 4]);
    gradcheck("softmax_cross_entropy", vec![logits], |t, v| {
        let labels = t.backend().upload_labels(&[0, 3, 1, 1, 2], 4)?;
        t.softmax_cross_entropy(v[0], &std::sync::Arc::new(labels))
    });
}

#[test]
fn mixed_op_all_inputs_and_alpha() {
    let mut rng = Rng::new(7);
    let mut inputs: Vec<Tensor<B>> = (0..8).map(|_| random(&mut rng, &[2, 3, 5, 3])).collect();
    inputs.push(random(&mut rng, &[8]));
    gradcheck("mixed_op K=8", inputs, |t, v| {
        let xs: Vec<Option<Var>> = v[..8].iter().copied().map(Some).collect();
        t.mixed_op(&xs, v[8])
    });
}

#[test]
fn mixed_op_with_none_input() {
    // The DARTS `none` op is an absent (all-zero) input: only the other inputs get gradients,
    // and every alpha, the zero slot's included (all 3 alpha entries are probed).
    let mut rng = Rng::new(8);
    let x = random(&mut rng, &[2, 2, 3, 3]);
    let alpha = random(&mut rng, &[3]);
    gradcheck("mixed_op with none", vec![x, alpha], |t, v| {
        let p = t.relu(v[0])?;
        t.mixed_op(&[None, Some(v[0]), Some(p)], v[1])
    });
    // Zero slots first, middle and last, with an input used twice, at an odd size.
    let (a, b) = (
        random(&mut rng, &[1, 3, 5, 7]),
        random(&mut rng, &[1, 3, 5, 7]),
    );
    let alpha = random(&mut rng, &[6]);
    gradcheck("mixed_op with three none", vec![a, b, alpha], |t, v| {
        t.mixed_op(
            &[None, Some(v[0]), None, Some(v[1]), Some(v[0]), None],
            v[2],
        )
    });
}

/// The tape on a small two-layer network with a weight shared by two convs.
#[test]
fn tape_two_layer_network_with_shared_weight() {
    let mut rng = Rng::new(9);
    let x = random(&mut rng, &[3, 2, 7, 7]);
    let w = random(&mut rng, &[2, 2, 3, 3]);
    let g = random(&mut rng, &[2]);
    let b = random(&mut rng, &[2]);
    let fc = random(&mut rng, &[4, 2]);
    let spec = Conv2dSpec::new(2, 2, 3).padding(1);
    let spec2 = spec.stride(2);
    gradcheck("two-layer net", vec![x, w, g, b, fc], move |t, v| {
        let h = t.conv2d(v[0], v[1], spec)?;
        let h = t.batch_norm_train(h, Some((v[2], v[3])), None, 1e-5)?;
        let h = t.relu(h)?;
        let h = t.conv2d(h, v[1], spec2)?; // same weight again: gradients must add up
        let h = t.max_pool2d(
            h,
            Pool2dSpec {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        )?;
        let h = t.global_avg_pool(h)?;
        let logits = t.linear(h, v[4], None)?;
        let labels = t.backend().upload_labels(&[1, 0, 3], 4)?;
        t.softmax_cross_entropy(logits, &std::sync::Arc::new(labels))
    });
}

#[test]
fn params_are_one_leaf_per_tape_and_gradients_accumulate() {
    let be = B::default();
    let mut store = ParamStore::new();
    let id = store.add("w", Tensor::from_host(&be, &[2.0], [1, 1]).unwrap());
    let mut tape = Tape::new(be.clone());
    let x = tape.constant(Tensor::from_host(&be, &[3.0], [1, 1]).unwrap());
    let w1 = tape.param(&store, id, true);
    let w2 = tape.param(&store, id, true);
    assert_eq!(w1, w2);
    // loss = x*w + x*w  => dloss/dw = 2x = 6.
    let a = tape.linear(x, w1, None).unwrap();
    let b = tape.linear(x, w2, None).unwrap();
    let s = tape.add(a, b).unwrap();
    let grads = tape.backward_with(s, vec![1.0]).unwrap();
    assert_eq!(
        grads.param(&store, id).unwrap().to_host(&be).unwrap(),
        vec![6.0]
    );
}

#[test]
fn no_grad_mode_records_nothing_for_backward() {
    let be = B::default();
    let mut tape = Tape::new(be.clone());
    tape.set_grad_enabled(false);
    let x = tape.leaf(Tensor::from_host(&be, &[1.0, -2.0], [1, 2]).unwrap(), true);
    let y = tape.relu(x).unwrap();
    assert!(!tape.requires_grad(y));
    let logits = tape.leaf(Tensor::from_host(&be, &[0.0, 1.0], [1, 2]).unwrap(), true);
    let labels = std::sync::Arc::new(tape.backend().upload_labels(&[1], 2).unwrap());
    let loss = tape.softmax_cross_entropy(logits, &labels).unwrap();
    let grads = tape.backward(loss).unwrap();
    assert!(grads.get(logits).is_none());
}

/// A value with several consumers whose backward ops add into its pending gradient in place
/// (`conv2d_bwd_data_into`, `max_pool2d_bwd_into`, `avg_pool2d_bwd_into`,
/// `mixed_op_bwd_into`, `add`'s axpy): x -> {fused-ReLU depthwise conv, max pool, avg pool,
/// fused 1x1 conv (im2col path), plain 1x1 conv (direct GEMM, beta 1), identity} -> MixedOp
/// -> + x. Every consumer but the first one processed accumulates.
#[test]
fn value_with_several_accumulating_consumers() {
    let mut rng = Rng::new(21);
    let x = signed_away_from_zero(&mut rng, &[2, 3, 7, 9]);
    let w_dw = random(&mut rng, &[3, 1, 3, 3]);
    let w_relu = random(&mut rng, &[3, 3, 1, 1]);
    let w_pw = random(&mut rng, &[3, 3, 1, 1]);
    let alpha = random(&mut rng, &[7]);
    let pool = Pool2dSpec {
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let dw = spec(3, 3, 3, 1, 1, 1, 3).relu_input();
    let relu_pw = spec(3, 3, 1, 1, 0, 1, 1).relu_input();
    let pw = spec(3, 3, 1, 1, 0, 1, 1);
    gradcheck(
        "x feeds six accumulating consumers",
        vec![x, w_dw, w_relu, w_pw, alpha],
        move |t, v| {
            let a = t.conv2d(v[0], v[1], dw)?;
            let b = t.max_pool2d(v[0], pool)?;
            let c = t.avg_pool2d(v[0], pool)?;
            let d = t.conv2d(v[0], v[2], relu_pw)?;
            let e = t.conv2d(v[0], v[3], pw)?;
            let m = t.mixed_op(
                &[
                    None,
                    Some(a),
                    Some(b),
                    Some(v[0]),
                    Some(c),
                    Some(d),
                    Some(e),
                ],
                v[4],
            )?;
            t.add(m, v[0])
        },
    );
}

/// The same at stride 2 and dilation 2 (the reduction cell's edges), with the consumers in
/// another order, a grouped 3x3 stride-2 conv (col2im) and a value used twice in one add.
#[test]
fn value_with_accumulating_consumers_stride2_dilation2() {
    let mut rng = Rng::new(22);
    let x = signed_away_from_zero(&mut rng, &[2, 4, 7, 9]);
    let w_dil = random(&mut rng, &[4, 1, 3, 3]);
    let w_grp = random(&mut rng, &[4, 2, 3, 3]);
    let alpha = random(&mut rng, &[4]);
    let pool = Pool2dSpec {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let dil = spec(4, 4, 3, 2, 2, 2, 4).relu_input();
    let grp = spec(4, 4, 3, 2, 1, 1, 2).relu_input();
    gradcheck(
        "x feeds stride-2 / dilation-2 consumers",
        vec![x, w_dil, w_grp, alpha],
        move |t, v| {
            let c = t.avg_pool2d(v[0], pool)?;
            let b = t.max_pool2d(v[0], pool)?;
            let g = t.conv2d(v[0], v[2], grp)?;
            let a = t.conv2d(v[0], v[1], dil)?;
            let m = t.mixed_op(&[Some(a), Some(b), Some(c), Some(g)], v[3])?;
            let mm = t.add(m, m)?;
            t.add(mm, c)
        },
    );
}
