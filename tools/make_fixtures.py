#!/usr/bin/env python3
"""PyTorch parity fixtures for nasrs (written for this project).

Writes two safetensors files under tests/fixtures/:

- ops.safetensors: one case per op of the `Backend` trait (forward output and the gradients
  of a fixed random `dy`, backpropagated with torch.autograd), read by tests/torch_parity.rs.
- darts_edge.safetensors: one DARTS search MixedOp (the 8 primitives, non-affine BN,
  training mode) at stride 1 and stride 2, with every parameter under its state_dict name.

Conventions (see tools/README.md for the full list of names):
- tensor names are "{case}.{tensor}", all float32 except "{case}.labels" (int64);
- the safetensors metadata maps each case name to a JSON object with "op" and the op's
  parameters; the key "__generator__" describes how the file was made;
- inputs are drawn in float32 from a seeded generator, then every reference is computed in
  float64 from those exact values and rounded once to float32, so the fixtures carry the
  true result and the Rust tolerance measures only nasrs' own rounding.

Usage: python tools/make_fixtures.py [--out tests/fixtures]
"""

import argparse
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import struct

from darts_ops import PRIMITIVES, MixedOp  # the DARTS search edge (same folder)

SEED = 20240611
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class Cases:
    """Collects tensors ("{case}.{name}") and per-case metadata for one safetensors file."""

    def __init__(self, gen):
        self.gen = gen
        self.tensors = {}
        self.meta = {}

    def randn(self, *shape, scale=1.0):
        # float32 draws, promoted exactly to float64 for the reference computation.
        return (torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale).double()

    def rand(self, *shape, lo=0.0, hi=1.0):
        return (lo + (hi - lo) * torch.rand(*shape, generator=self.gen, dtype=torch.float32)).double()

    def add(self, case, params, **tensors):
        if case in self.meta:
            raise ValueError(f"duplicate case {case}")
        self.meta[case] = json.dumps(params, sort_keys=True)
        for name, t in tensors.items():
            t = t.detach()
            t = t if t.dtype == torch.int64 else t.to(torch.float32)
            self.tensors[f"{case}.{name}"] = t.contiguous()

    def save(self, path, generator_note):
        meta = dict(self.meta)
        meta["__generator__"] = generator_note
        write_safetensors(path, self.tensors, meta)


def write_safetensors(path, tensors, metadata):
    """Writes the safetensors format with sorted keys, so the bytes are reproducible (the
    library's writer orders the metadata through a hash map)."""
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        data = t.numpy().tobytes()  # little-endian on every platform torch supports
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def f32_exact(t):
    """Rounds a derived input to float32, so the stored input is the one the reference saw."""
    return t.float().double()


def leaf(t):
    return t.clone().requires_grad_(True)


# ---- Task A: one case per op -------------------------------------------------------------------


def conv_case(c, case, n, cin, cout, h, w, k, stride=1, padding=0, dilation=1, groups=1):
    x = leaf(c.randn(n, cin, h, w))
    wt = leaf(c.randn(cout, cin // groups, k, k, scale=0.5))
    y = F.conv2d(x, wt, None, stride, padding, dilation, groups)
    dy = c.randn(*y.shape)
    dx, dw = torch.autograd.grad(y, (x, wt), dy)
    params = dict(op="conv2d", in_channels=cin, out_channels=cout, kernel=k, stride=stride,
                  padding=padding, dilation=dilation, groups=groups)
    c.add(case, params, x=x, w=wt, y=y, dy=dy, dx=dx, dw=dw)


def pool_case(c, case, kind, n, ch, h, w, stride):
    x = leaf(c.randn(n, ch, h, w))
    if kind == "max_pool2d":
        y = F.max_pool2d(x, 3, stride, 1)
    else:
        y = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    dy = c.randn(*y.shape)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    c.add(case, dict(op=kind, kernel=3, stride=stride, padding=1), x=x, y=y, dy=dy, dx=dx)


def bn_train_case(c, case, affine):
    n, ch, h, w = 3, 4, 5, 7
    # A per-channel offset and scale, so mean and variance differ between channels.
    x = leaf(f32_exact(c.randn(n, ch, h, w) * c.rand(1, ch, 1, 1, lo=0.5, hi=2.0) + c.randn(1, ch, 1, 1)))
    gamma = leaf(c.rand(ch, lo=0.5, hi=1.5)) if affine else None
    beta = leaf(c.randn(ch)) if affine else None
    rm, rv = torch.zeros(ch, dtype=torch.float64), torch.ones(ch, dtype=torch.float64)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=BN_MOMENTUM, eps=BN_EPS)
    dy = c.randn(*y.shape)
    inputs = (x, gamma, beta) if affine else (x,)
    grads = torch.autograd.grad(y, inputs, dy)
    xd = x.detach()
    mean = xd.mean(dim=(0, 2, 3))
    invstd = 1.0 / torch.sqrt(xd.var(dim=(0, 2, 3), unbiased=False) + BN_EPS)
    t = dict(x=x, y=y, dy=dy, dx=grads[0], mean=mean, invstd=invstd, running_mean=rm, running_var=rv)
    if affine:
        t.update(gamma=gamma, beta=beta, dgamma=grads[1], dbeta=grads[2])
    params = dict(op="batch_norm_train", affine=affine, eps=BN_EPS, momentum=BN_MOMENTUM,
                  running_init="zeros/ones")
    c.add(case, params, **t)


def bn_eval_case(c, case):
    n, ch, h, w = 2, 4, 5, 7
    x = c.randn(n, ch, h, w)
    gamma, beta = c.rand(ch, lo=0.5, hi=1.5), c.randn(ch)
    rm, rv = c.randn(ch, scale=0.5), c.rand(ch, lo=0.3, hi=2.0)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=BN_EPS)
    c.add(case, dict(op="batch_norm_eval", affine=True, eps=BN_EPS), x=x, gamma=gamma, beta=beta,
          running_mean=rm, running_var=rv, y=y)


def simple_case(c, case, op, x, f, params=None):
    x = leaf(x)
    y = f(x)
    dy = c.randn(*y.shape)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    c.add(case, dict(op=op, **(params or {})), x=x, y=y, dy=dy, dx=dx)


def linear_case(c):
    n, fin, fout = 3, 7, 5
    x, w, b = leaf(c.randn(n, fin)), leaf(c.randn(fout, fin, scale=0.4)), leaf(c.randn(fout))
    y = F.linear(x, w, b)
    dy = c.randn(n, fout)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    c.add("linear", dict(op="linear", n=n, in_features=fin, out_features=fout, bias=True),
          x=x, w=w, b=b, y=y, dy=dy, dx=dx, dw=dw, db=db)


def cross_entropy_case(c):
    n, k = 5, 7
    logits = leaf(c.randn(n, k, scale=2.0))
    labels = torch.randint(0, k, (n,), generator=c.gen, dtype=torch.int64)
    loss = F.cross_entropy(logits, labels, reduction="mean")
    dloss = c.rand(1, lo=0.5, hi=1.5)
    (dlogits,) = torch.autograd.grad(loss, (logits,), dloss[0])
    c.add("cross_entropy", dict(op="cross_entropy", n=n, classes=k, reduction="mean"),
          logits=logits, labels=labels, loss=loss.reshape(1), probs=F.softmax(logits, dim=1),
          dloss=dloss, dlogits=dlogits)


def concat_case(c):
    channels = [2, 3, 1]
    parts = [leaf(c.randn(2, ch, 5, 7)) for ch in channels]
    y = torch.cat(parts, dim=1)
    dy = c.randn(*y.shape)
    grads = torch.autograd.grad(y, parts, dy)
    t = dict(y=y, dy=dy)
    for i, (x, g) in enumerate(zip(parts, grads)):
        t[f"x{i}"], t[f"dx{i}"] = x, g
    c.add("concat", dict(op="concat_channels", channels=channels), **t)


def drop_path_case(c):
    n, keep_prob = 6, 0.7
    x = leaf(c.randn(n, 3, 5, 5))
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    # DARTS' drop_path: x.div(keep_prob).mul(mask), mask one Bernoulli(keep_prob) per sample.
    y = x.div(keep_prob).mul(mask.view(n, 1, 1, 1))
    dy = c.randn(*y.shape)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    c.add("drop_path", dict(op="drop_path", n=n, keep_prob=keep_prob), x=x, mask=mask,
          scale=mask / keep_prob, y=y, dy=dy, dx=dx)


def mixed_op_case(c):
    k = 8
    xs = leaf(c.randn(k, 2, 3, 5, 5))
    alpha = leaf(c.randn(k))
    y = (F.softmax(alpha, dim=0).view(k, 1, 1, 1, 1) * xs).sum(0)
    dy = c.randn(*y.shape)
    dxs, dalpha = torch.autograd.grad(y, (xs, alpha), dy)
    c.add("mixed_op", dict(op="mixed_op", k=k), xs=xs, alpha=alpha, y=y, dy=dy, dxs=dxs, dalpha=dalpha)


def sgd_case(c, case, with_buffer):
    lr, momentum, wd = 0.05, 0.9, 3e-4
    p = nn.Parameter(c.randn(4, 3, 3, 3))
    param0 = p.detach().clone()
    grad = c.randn(*p.shape, scale=0.3)
    buf0 = c.randn(*p.shape, scale=0.2) if with_buffer else torch.zeros_like(param0)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=wd)
    if with_buffer:
        # An existing momentum buffer, as on any step after the first.
        opt.state[p]["momentum_buffer"] = buf0.clone()
    p.grad = grad.clone()
    opt.step()
    c.add(case, dict(op="sgd", lr=lr, momentum=momentum, weight_decay=wd, dampening=0, nesterov=False),
          param=param0, grad=grad, momentum_buffer=buf0, param_out=p, momentum_buffer_out=opt.state[p]["momentum_buffer"])


def adam_case(c):
    lr, betas, eps, wd = 0.01, (0.5, 0.999), 1e-8, 1e-3
    p = nn.Parameter(f32_exact(c.randn(14, 8, scale=1e-3) + c.randn(14, 8, scale=0.1)))
    param0 = p.detach().clone()
    grads = [c.randn(14, 8, scale=0.05), c.randn(14, 8, scale=0.05)]
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    out = {}
    for i, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        st = opt.state[p]
        out[f"param_step{i}"] = p.detach().clone()
        out[f"exp_avg_step{i}"] = st["exp_avg"].clone()
        out[f"exp_avg_sq_step{i}"] = st["exp_avg_sq"].clone()
    c.add("adam", dict(op="adam", lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd, steps=2),
          param=param0, grad_step1=grads[0], grad_step2=grads[1], **out)


def make_ops(out_dir):
    c = Cases(torch.Generator().manual_seed(SEED))
    # Non-square inputs where the op allows it, so an H/W mix-up shows.
    conv_case(c, "conv_stem", 2, 3, 6, 9, 7, 3, padding=1)
    conv_case(c, "conv_pointwise", 2, 6, 5, 7, 5, 1)
    conv_case(c, "conv_pointwise_s2", 2, 4, 3, 9, 8, 1, stride=2)
    conv_case(c, "conv_dw3_s2", 2, 4, 4, 9, 7, 3, stride=2, padding=1, groups=4)
    conv_case(c, "conv_dw5_d2", 2, 4, 4, 11, 9, 5, padding=4, dilation=2, groups=4)
    conv_case(c, "conv_dw3_d2_s2", 2, 4, 4, 9, 11, 3, stride=2, padding=2, dilation=2, groups=4)
    conv_case(c, "conv_grouped", 2, 4, 6, 7, 9, 3, padding=1, groups=2)
    pool_case(c, "max_pool_s1", "max_pool2d", 2, 3, 7, 9, 1)
    pool_case(c, "max_pool_s2", "max_pool2d", 2, 3, 9, 7, 2)
    pool_case(c, "avg_pool_s1", "avg_pool2d", 2, 3, 7, 9, 1)
    pool_case(c, "avg_pool_s2", "avg_pool2d", 2, 3, 9, 7, 2)
    bn_train_case(c, "bn_train_affine", affine=True)
    bn_train_case(c, "bn_train_plain", affine=False)
    bn_eval_case(c, "bn_eval")
    simple_case(c, "relu", "relu", c.randn(2, 3, 5, 7), F.relu)
    linear_case(c)
    cross_entropy_case(c)
    simple_case(c, "global_avg_pool", "global_avg_pool", c.randn(2, 3, 5, 7),
                lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1))
    simple_case(c, "shift_crop", "shift_crop", c.randn(2, 3, 6, 7), lambda x: x[:, :, 1:, 1:])
    concat_case(c)
    drop_path_case(c)
    mixed_op_case(c)
    sgd_case(c, "sgd_first_step", with_buffer=False)
    sgd_case(c, "sgd_with_momentum", with_buffer=True)
    adam_case(c)
    path = os.path.join(out_dir, "ops.safetensors")
    c.save(path, note())
    return path


# ---- Task B: one DARTS search MixedOp ----------------------------------------------------------

def darts_edge_case(c, case, channels, size, stride, n=2):
    torch.manual_seed(SEED + stride)  # the modules' default (Kaiming uniform) init
    edge = MixedOp(channels, stride).double().train()
    x = leaf(c.randn(n, channels, size, size))
    alpha = leaf(c.randn(len(PRIMITIVES), scale=0.5))
    params = dict(edge.named_parameters())
    weights = F.softmax(alpha, dim=-1)
    op_outs = [op(x) for op in edge._ops]  # each op once, so running stats move one step
    y = sum(w * o for w, o in zip(weights, op_outs))
    dy = c.randn(*y.shape)
    names = list(params)
    grads = torch.autograd.grad(y, [x, alpha] + [params[k] for k in names], dy)
    t = dict(x=x, alpha=alpha, y=y, dy=dy, dx=grads[0], dalpha=grads[1])
    for k, g in zip(names, grads[2:]):
        t[k] = params[k]
        t[f"grad.{k}"] = g
    for k, v in edge.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            t[k] = v
    for i, o in enumerate(op_outs):
        t[f"op_out.{i}"] = o
    meta = dict(op="darts_mixed_op", channels=channels, stride=stride, n=n, h=size, w=size,
                primitives=PRIMITIVES, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM, bn_affine=False,
                running_init="zeros/ones", parameters=names)
    c.add(case, meta, **t)


def make_darts_edge(out_dir):
    c = Cases(torch.Generator().manual_seed(SEED + 1))
    darts_edge_case(c, "stride1", 4, 7, 1)
    # FactorizedReduce concatenates a 1x1 stride-2 conv of x with one of x[:, :, 1:, 1:]; the
    # two only agree in size on even inputs, so the reduction edge uses 8x8, not 9x9.
    darts_edge_case(c, "stride2", 4, 8, 2)
    path = os.path.join(out_dir, "darts_edge.safetensors")
    c.save(path, note())
    return path


def note():
    return json.dumps({"script": "tools/make_fixtures.py", "seed": SEED, "torch": torch.__version__,
                       "reference_dtype": "float64", "stored_dtype": "float32"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for path in (make_ops(args.out), make_darts_edge(args.out)):
        print(f"{os.path.relpath(path)}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
