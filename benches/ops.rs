//! Criterion benchmarks of every `Backend` op on the CPU backend (f32) at the shapes the DARTS
//! CIFAR-10 search supernet really runs: batch 64; normal cells at C=16@32x32, 32@16x16,
//! 64@8x8; reduction cells' stride-2 ops at 32@32x32 -> 16x16 and 64@16x16 -> 8x8; the stem
//! conv 3->48@32x32; the classifier 256 -> 10; optimizers over the supernet's ~1.9M weights;
//! and the small planes of the C8 L5 batch-16 16x16 network (`small_planes`).
//!
//! Throughput: convolutions and the linear layer report multiply-adds as "elements" (so
//! criterion's elem/s reads as MAC/s); every other op reports the elements it writes.
//! Measurement is short (1 s, 10 samples) so `cargo bench --bench ops` runs in minutes on 2
//! cores; filter with e.g. `cargo bench --bench ops -- conv2d/dw3x3`.

/// The same allocator as the `nasrs` binary, so op timings match what a run sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use nasrs::backend::prelude::*;
use nasrs::backend::{AdamStep, RunningStats, SgdStep};
use nasrs::{Conv2dSpec, Cpu, Nchw, Pool2dSpec, Rng};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 64;
/// Normal-cell activations: (channels, side), stride 1.
const NORMAL: [(usize, usize); 3] = [(16, 32), (32, 16), (64, 8)];
/// Reduction-cell inputs of the stride-2 ops: (channels, input side).
const REDUCE: [(usize, usize); 2] = [(32, 32), (64, 16)];
/// Weights of the 8-cell, C=16 DARTS search supernet (about 1.9M).
const SUPERNET_PARAMS: usize = 1_900_000;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.normal() as f32).collect()
}

fn dims(c: usize, side: usize) -> Nchw {
    Nchw {
        n: BATCH,
        c,
        h: side,
        w: side,
    }
}

/// A bench failing on its own fixed inputs is a bug in the backend: stop loudly.
fn ok<T>(r: nasrs::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark op failed: {e}"),
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    c.benchmark_group(name)
}

/// Short runs without plots: most of a default criterion run's wall time per benchmark is
/// the HTML plots and 100k bootstrap resamples, not the measurement.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .nresamples(10_000)
        .without_plots()
}

/// Forward, backward-data and backward-weight of one convolution.
fn bench_conv(
    g: &mut BenchmarkGroup<'_, WallTime>,
    cpu: &Cpu,
    label: &str,
    xd: Nchw,
    spec: Conv2dSpec,
) {
    let yd = ok(spec.output(xd));
    let x = random(xd.numel(), 1);
    let w = random(spec.weight_shape().numel(), 2);
    let dy = random(yd.numel(), 3);
    let macs = (yd.numel() * (spec.in_channels / spec.groups) * spec.kernel * spec.kernel) as u64;
    g.throughput(Throughput::Elements(macs));
    g.bench_function(format!("{label}/fwd"), |b| {
        b.iter(|| ok(cpu.conv2d_fwd(black_box(&x), xd, &w, &spec)))
    });
    g.bench_function(format!("{label}/bwd_data"), |b| {
        b.iter(|| ok(cpu.conv2d_bwd_data(&x, black_box(&dy), &w, xd, &spec)))
    });
    g.bench_function(format!("{label}/bwd_weight"), |b| {
        b.iter(|| ok(cpu.conv2d_bwd_weight(black_box(&x), &dy, xd, &spec)))
    });
}

fn conv2d(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "conv2d");
    // (name, kernel, dilation): the depthwise halves of sep_conv and dil_conv.
    let depthwise = [
        ("dw3x3", 3, 1),
        ("dw5x5", 5, 1),
        ("dw3x3_d2", 3, 2),
        ("dw5x5_d2", 5, 2),
    ];
    for (name, k, d) in depthwise {
        let spec = |ch, stride| {
            Conv2dSpec::new(ch, ch, k)
                .stride(stride)
                .padding(d * (k - 1) / 2)
                .dilation(d)
                .groups(ch)
        };
        for (ch, side) in NORMAL {
            bench_conv(
                &mut g,
                &cpu,
                &format!("{name}_c{ch}_{side}x{side}_s1"),
                dims(ch, side),
                spec(ch, 1),
            );
        }
        for (ch, side) in REDUCE {
            bench_conv(
                &mut g,
                &cpu,
                &format!("{name}_c{ch}_{side}x{side}_s2"),
                dims(ch, side),
                spec(ch, 2),
            );
        }
    }
    // The pointwise half of sep_conv / dil_conv and the cells' ReLUConvBN preprocessing.
    for (ch, side) in NORMAL {
        let spec = Conv2dSpec::new(ch, ch, 1);
        bench_conv(
            &mut g,
            &cpu,
            &format!("pw1x1_c{ch}_{side}x{side}"),
            dims(ch, side),
            spec,
        );
    }
    let stem = Conv2dSpec::new(3, 48, 3).padding(1);
    bench_conv(&mut g, &cpu, "stem3x3_3to48_32x32", dims(3, 32), stem);
    g.finish();
}

/// Max and average 3x3 pooling (padding 1) forward and backward on `xd` at `stride`.
fn bench_pool(g: &mut BenchmarkGroup<'_, WallTime>, cpu: &Cpu, xd: Nchw, stride: usize) {
    let spec = Pool2dSpec {
        kernel: 3,
        stride,
        padding: 1,
    };
    let yd = ok(spec.output(xd, "bench"));
    let x = random(xd.numel(), 4);
    let dy = random(yd.numel(), 5);
    let label = format!("c{}_{}x{}_s{stride}", xd.c, xd.h, xd.w);
    g.throughput(Throughput::Elements(yd.numel() as u64));
    g.bench_function(format!("max3x3_{label}/fwd"), |b| {
        b.iter(|| ok(cpu.max_pool2d_fwd(black_box(&x), xd, &spec)))
    });
    g.bench_function(format!("avg3x3_{label}/fwd"), |b| {
        b.iter(|| ok(cpu.avg_pool2d_fwd(black_box(&x), xd, &spec)))
    });
    g.throughput(Throughput::Elements(xd.numel() as u64));
    g.bench_function(format!("max3x3_{label}/bwd"), |b| {
        b.iter(|| ok(cpu.max_pool2d_bwd(black_box(&x), &dy, xd, &spec)))
    });
    g.bench_function(format!("avg3x3_{label}/bwd"), |b| {
        b.iter(|| ok(cpu.avg_pool2d_bwd(black_box(&dy), xd, &spec)))
    });
}

fn pool(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "pool");
    let shapes = NORMAL
        .iter()
        .map(|&(ch, s)| (ch, s, 1))
        .chain(REDUCE.iter().map(|&(ch, s)| (ch, s, 2)));
    for (ch, side, stride) in shapes {
        bench_pool(&mut g, &cpu, dims(ch, side), stride);
    }
    // The classifier's global pooling over the last cell's 4 x 64 channels.
    let xd = dims(256, 8);
    let x = random(xd.numel(), 6);
    let dy = random(BATCH * 256, 7);
    g.throughput(Throughput::Elements(xd.numel() as u64));
    g.bench_function("global_avg_c256_8x8/fwd", |b| {
        b.iter(|| ok(cpu.global_avg_pool_fwd(black_box(&x), xd)))
    });
    g.bench_function("global_avg_c256_8x8/bwd", |b| {
        b.iter(|| ok(cpu.global_avg_pool_bwd(black_box(&dy), xd)))
    });
    g.finish();
}

fn batch_norm(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "batch_norm");
    for (ch, side) in NORMAL {
        let xd = dims(ch, side);
        let x = random(xd.numel(), 8);
        let dy = random(xd.numel(), 9);
        let gamma = vec![1.0f32; ch];
        let beta = vec![0.0f32; ch];
        let (mut rm, mut rv) = (vec![0.0f32; ch], vec![1.0f32; ch]);
        let label = format!("c{ch}_{side}x{side}");
        g.throughput(Throughput::Elements(xd.numel() as u64));
        // The search supernet's BN: no affine, running statistics tracked.
        g.bench_function(format!("train_{label}/fwd"), |b| {
            b.iter(|| {
                let running = RunningStats {
                    mean: &mut rm,
                    var: &mut rv,
                    momentum: 0.1,
                };
                ok(cpu.batch_norm_train_fwd(black_box(&x), xd, None, Some(running), 1e-5))
            })
        });
        let (_, saved) = ok(cpu.batch_norm_train_fwd(&x, xd, None, None, 1e-5));
        g.bench_function(format!("train_{label}/bwd"), |b| {
            b.iter(|| ok(cpu.batch_norm_bwd(black_box(&x), &dy, xd, None, &saved)))
        });
        // The final network's BN: affine, evaluated with running statistics.
        g.bench_function(format!("eval_affine_{label}/fwd"), |b| {
            b.iter(|| {
                ok(cpu.batch_norm_eval_fwd(
                    black_box(&x),
                    xd,
                    Some((&gamma, &beta)),
                    &rm,
                    &rv,
                    1e-5,
                ))
            })
        });
        g.bench_function(format!("train_affine_{label}/bwd"), |b| {
            b.iter(|| ok(cpu.batch_norm_bwd(black_box(&x), &dy, xd, Some(&gamma), &saved)))
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "elementwise");
    for (ch, side) in NORMAL {
        let len = dims(ch, side).numel();
        let x = random(len, 10);
        let y = ok(cpu.relu_fwd(&x));
        let dy = random(len, 11);
        let label = format!("c{ch}_{side}x{side}");
        g.throughput(Throughput::Elements(len as u64));
        g.bench_function(format!("relu_{label}/fwd"), |b| {
            b.iter(|| ok(cpu.relu_fwd(black_box(&x))))
        });
        g.bench_function(format!("relu_{label}/bwd"), |b| {
            b.iter(|| ok(cpu.relu_bwd(black_box(&y), &dy)))
        });
    }
    // The rest of the elementwise ops at the largest cell activation, 16@32x32.
    let len = dims(16, 32).numel();
    let (a, bb) = (random(len, 12), random(len, 13));
    let mut acc = random(len, 14);
    g.throughput(Throughput::Elements(len as u64));
    g.bench_function("add_c16_32x32", |b| {
        b.iter(|| ok(cpu.add(black_box(&a), &bb)))
    });
    g.bench_function("scale_c16_32x32", |b| {
        b.iter(|| ok(cpu.scale(black_box(&a), 0.5)))
    });
    g.bench_function("axpy_c16_32x32", |b| {
        b.iter(|| ok(cpu.axpy(black_box(&mut acc), 1e-3, &a)))
    });
    g.bench_function("scale_assign_c16_32x32", |b| {
        b.iter(|| ok(cpu.scale_assign(black_box(&mut acc), 1.0)))
    });
    g.bench_function("sum_squares_c16_32x32", |b| {
        b.iter(|| ok(cpu.sum_squares(black_box(&a))))
    });
    g.bench_function("dot_c16_32x32", |b| {
        b.iter(|| ok(cpu.dot(black_box(&a), &bb)))
    });
    g.bench_function("copy_c16_32x32", |b| b.iter(|| ok(cpu.copy(black_box(&a)))));
    let mut keep = Rng::new(15);
    let scale: Vec<f32> = (0..BATCH)
        .map(|_| if keep.bernoulli(0.8) { 1.0 / 0.8 } else { 0.0 })
        .collect();
    g.bench_function("drop_path_c16_32x32", |b| {
        b.iter(|| ok(cpu.drop_path(black_box(&a), BATCH, &scale)))
    });
    g.finish();
}

fn layout(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "layout");
    // A normal cell's output: its 4 intermediate nodes concatenated, 4 x 16@32x32.
    let part = dims(16, 32);
    let parts: Vec<Vec<f32>> = (0..4).map(|i| random(part.numel(), 20 + i)).collect();
    let refs: Vec<(&Vec<f32>, Nchw)> = parts.iter().map(|p| (p, part)).collect();
    let cat = dims(64, 32);
    let dy = random(cat.numel(), 30);
    g.throughput(Throughput::Elements(cat.numel() as u64));
    g.bench_function("concat_4x_c16_32x32", |b| {
        b.iter(|| ok(cpu.concat_channels(black_box(&refs))))
    });
    g.bench_function("split_4x_c16_32x32", |b| {
        b.iter(|| ok(cpu.split_channels(black_box(&dy), cat, &[16; 4])))
    });
    // FactorizedReduce's shifted path at the first reduction's input.
    let xd = dims(32, 32);
    let x = random(xd.numel(), 31);
    let dys = random(BATCH * 32 * 31 * 31, 32);
    g.throughput(Throughput::Elements(xd.numel() as u64));
    g.bench_function("shift_crop_c32_32x32/fwd", |b| {
        b.iter(|| ok(cpu.shift_crop_fwd(black_box(&x), xd)))
    });
    g.bench_function("shift_crop_c32_32x32/bwd", |b| {
        b.iter(|| ok(cpu.shift_crop_bwd(black_box(&dys), xd)))
    });
    g.finish();
}

fn mixed_op(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "mixed_op");
    const K: usize = 8;
    let alpha = random(K, 40);
    for (ch, side) in NORMAL {
        let len = dims(ch, side).numel();
        let xs: Vec<Vec<f32>> = (0..K).map(|k| random(len, 41 + k as u64)).collect();
        let refs: Vec<Option<&Vec<f32>>> = xs.iter().map(Some).collect();
        let dy = random(len, 50);
        let label = format!("k8_c{ch}_{side}x{side}");
        g.throughput(Throughput::Elements((K * len) as u64));
        g.bench_function(format!("{label}/fwd"), |b| {
            b.iter(|| ok(cpu.mixed_op_fwd(black_box(&refs), &alpha, len)))
        });
        // Every input's gradient requested: the most work the backward can be asked for.
        g.bench_function(format!("{label}/bwd"), |b| {
            b.iter(|| ok(cpu.mixed_op_bwd(black_box(&dy), &refs, &alpha, len, &[true; K])))
        });
        // The same without dalpha (a weight step): no dots over the inputs.
        g.bench_function(format!("{label}/bwd_dx"), |b| {
            b.iter(|| {
                let mut acc: Vec<Option<&mut Vec<f32>>> = (0..K).map(|_| None).collect();
                ok(cpu.mixed_op_bwd_dx(black_box(&dy), &refs, &alpha, len, &[true; K], &mut acc))
            })
        });
    }
    g.finish();
}

fn dense(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "dense");
    // The supernet classifier: 4 x 64 pooled channels -> 10 classes.
    let (n, in_f, out_f) = (BATCH, 256, 10);
    let x = random(n * in_f, 60);
    let w = random(out_f * in_f, 61);
    let bias = random(out_f, 62);
    let dy = random(n * out_f, 63);
    g.throughput(Throughput::Elements((n * in_f * out_f) as u64));
    g.bench_function("linear_256to10/fwd", |b| {
        b.iter(|| ok(cpu.linear_fwd(black_box(&x), &w, Some(&bias), n, in_f, out_f)))
    });
    g.bench_function("linear_256to10/bwd", |b| {
        b.iter(|| ok(cpu.linear_bwd(black_box(&x), &w, &dy, n, in_f, out_f, true)))
    });
    let mut lr = Rng::new(64);
    let labels: Vec<u32> = (0..n).map(|_| lr.below(out_f) as u32).collect();
    let labels = ok(cpu.upload_labels(&labels, out_f));
    let (_, probs) = ok(cpu.softmax_cross_entropy_fwd(&dy, n, out_f, &labels));
    let dloss = vec![1.0f32];
    g.throughput(Throughput::Elements((n * out_f) as u64));
    g.bench_function("softmax_ce_64x10/fwd", |b| {
        b.iter(|| ok(cpu.softmax_cross_entropy_fwd(black_box(&dy), n, out_f, &labels)))
    });
    g.bench_function("softmax_ce_64x10/bwd", |b| {
        b.iter(|| ok(cpu.softmax_cross_entropy_bwd(black_box(&probs), &dloss, n, out_f, &labels)))
    });
    g.finish();
}

fn optim(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "optim");
    let mut param = random(SUPERNET_PARAMS, 70);
    let grad = random(SUPERNET_PARAMS, 71);
    let mut m = vec![0.0f32; SUPERNET_PARAMS];
    let mut v = vec![0.0f32; SUPERNET_PARAMS];
    g.throughput(Throughput::Elements(SUPERNET_PARAMS as u64));
    // DARTS' weight optimizer: SGD, momentum 0.9, weight decay 3e-4.
    let sgd = SgdStep {
        lr: 1e-3,
        momentum: 0.9,
        weight_decay: 3e-4,
    };
    g.bench_function("sgd_step_1.9M", |b| {
        b.iter(|| ok(cpu.sgd_step(black_box(&mut param), &grad, &mut m, &sgd, None)))
    });
    // DARTS' architecture optimizer's settings, here over the weights' size for scale.
    let adam = AdamStep {
        lr: 3e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-3,
        step: 10,
    };
    g.bench_function("adam_step_1.9M", |b| {
        b.iter(|| ok(cpu.adam_step(black_box(&mut param), &grad, &mut m, &mut v, &adam)))
    });
    g.finish();
}

/// The small planes of the C8 L5 batch-16 16x16 search network (`nasrs bench darts
/// --channels 8 --layers 5 --batch 16 --size 16`): its last normal cell's 32@4x4 and its
/// first reduction cell's stride-2 ops on 16@16x16, where per-plane setup and short rows,
/// not arithmetic, bound the depthwise and pooling kernels.
fn small_planes(c: &mut Criterion) {
    let cpu = Cpu::new();
    let mut g = group(c, "small_planes");
    for (ch, side, stride) in [(32, 4, 1), (16, 16, 2)] {
        let xd = Nchw {
            n: 16,
            c: ch,
            h: side,
            w: side,
        };
        for (name, k, d) in [("dw3x3", 3, 1), ("dw5x5", 5, 1), ("dw5x5_d2", 5, 2)] {
            let spec = Conv2dSpec::new(ch, ch, k)
                .stride(stride)
                .padding(d * (k - 1) / 2)
                .dilation(d)
                .groups(ch);
            let label = format!("{name}_c{ch}_{side}x{side}_s{stride}");
            bench_conv(&mut g, &cpu, &label, xd, spec);
        }
        bench_pool(&mut g, &cpu, xd, stride);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = conv2d, pool, batch_norm, elementwise, layout, mixed_op, dense, optim, small_planes
}
criterion_main!(benches);
