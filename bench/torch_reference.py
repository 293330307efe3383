#!/usr/bin/env python3
"""The DARTS search supernet in PyTorch, timed: the baseline nasrs is measured against
(written for this project, following the semantics of DARTS' model_search.py and
architect.py).

Network: stem conv3x3 (in -> 3C) + BN; L cells, reductions at L//3 and 2L//3 (channels
doubled); each cell preprocesses its two inputs (ReLU-conv1x1-BN, or FactorizedReduce
when the previous cell reduced), runs 4 steps of MixedOps over all previous states
(14 edges), and concatenates the 4 new nodes; global average pool; linear. All cell BNs
are non-affine; the stem BN is affine. Two 14x8 architecture tensors (normal, reduce),
1e-3 * randn, are not counted as weights. C=16, L=8, 10 classes: 1,930,618 weights.

Timed phases (median over --steps after --warmup, CUDA events on GPU, perf_counter on CPU):
- weight: forward + backward on a train batch, grad-norm clip 5, SGD (momentum 0.9, wd 3e-4);
- first: a first-order DARTS iteration: Adam on the alphas from the val loss, then a weight step;
- second: a second-order iteration: unrolled w' = w - xi (momentum * buf + grad + wd w),
  grad of the val loss at w', finite-difference Hessian-vector product with
  eps = 0.01 / ||grad_w' L_val||, alpha grad = dalpha - xi * hvp, Adam; then a weight step.
Peak memory: torch.cuda.max_memory_allocated per phase on GPU; on CPU the process's max RSS
(resource.getrusage, cumulative over the run) after each phase.

Example: python bench/torch_reference.py --device cpu --threads 2 --channels 8 --layers 5 \
    --batch 16 --size 16 --steps 3 --warmup 1 --json
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from darts_ops import PRIMITIVES, FactorizedReduce, MixedOp, ReLUConvBN  # noqa: E402

# DARTS search hyper-parameters.
W_LR, W_MOMENTUM, W_WD, GRAD_CLIP = 0.025, 0.9, 3e-4, 5.0
A_LR, A_BETAS, A_WD = 3e-4, (0.5, 0.999), 1e-3
HVP_R = 1e-2


# ---- the search network -----------------------------------------------------------------------


class Cell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_pp, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self._steps, self._multiplier = steps, multiplier
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self._ops.append(MixedOp(c, 2 if reduction and j < 2 else 1))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    def __init__(self, c, num_classes, layers, in_channels=3, steps=4, multiplier=4, stem_multiplier=3):
        super().__init__()
        c_curr = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            self.cells.append(Cell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        k = sum(2 + i for i in range(steps))
        # Plain tensors, not nn.Parameters: the architecture is not counted among the weights.
        self.alphas_normal = (1e-3 * torch.randn(k, len(PRIMITIVES))).requires_grad_(True)
        self.alphas_reduce = (1e-3 * torch.randn(k, len(PRIMITIVES))).requires_grad_(True)

    def arch_parameters(self):
        return [self.alphas_normal, self.alphas_reduce]

    def _apply(self, fn, *args, **kwargs):
        # Moves the alphas with the module (.to(device)), keeping them leaves that need grad.
        super()._apply(fn, *args, **kwargs)
        self.alphas_normal = fn(self.alphas_normal).detach().requires_grad_(True)
        self.alphas_reduce = fn(self.alphas_reduce).detach().requires_grad_(True)
        return self

    def forward(self, x):
        s0 = s1 = self.stem(x)
        w_normal = F.softmax(self.alphas_normal, dim=-1)
        w_reduce = F.softmax(self.alphas_reduce, dim=-1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))


# ---- the timed steps ------------------------------------------------------------------------


class Search:
    def __init__(self, model, forward, batches):
        self.model, self.forward = model, forward
        self.params = list(model.parameters())
        self.alphas = model.arch_parameters()
        self.w_opt = torch.optim.SGD(self.params, lr=W_LR, momentum=W_MOMENTUM, weight_decay=W_WD)
        self.a_opt = torch.optim.Adam(self.alphas, lr=A_LR, betas=A_BETAS, weight_decay=A_WD)
        (self.xt, self.yt), (self.xv, self.yv) = batches

    def loss(self, x, y):
        return F.cross_entropy(self.forward(x), y)

    def weight_step(self):
        self.w_opt.zero_grad(set_to_none=True)
        self.loss(self.xt, self.yt).backward()
        nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.w_opt.step()

    def first_order(self):
        self.a_opt.zero_grad(set_to_none=True)
        self.loss(self.xv, self.yv).backward()
        self.a_opt.step()
        self.weight_step()

    def second_order(self):
        params, alphas, eta = self.params, self.alphas, W_LR
        # Unrolled weights w' = w - eta * (momentum * buf + dL_train/dw + wd * w).
        grads = torch.autograd.grad(self.loss(self.xt, self.yt), params)
        with torch.no_grad():
            backup = [p.detach().clone() for p in params]
            step = torch._foreach_add(list(grads), params, alpha=W_WD)
            bufs = [self.w_opt.state.get(p, {}).get("momentum_buffer") for p in params]
            if all(b is not None for b in bufs):
                torch._foreach_add_(step, bufs, alpha=W_MOMENTUM)
            torch._foreach_add_(params, step, alpha=-eta)
        # Gradients of the val loss at w'.
        g = torch.autograd.grad(self.loss(self.xv, self.yv), params + alphas)
        dw, dalpha = list(g[:len(params)]), list(g[len(params):])
        # Back to w; finite-difference Hessian-vector product around it.
        with torch.no_grad():
            torch._foreach_copy_(params, backup)
            r = HVP_R / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(dw)))
            r_dw = torch._foreach_mul(dw, r)
            torch._foreach_add_(params, r_dw)
        g_pos = torch.autograd.grad(self.loss(self.xt, self.yt), alphas)
        with torch.no_grad():
            torch._foreach_sub_(params, r_dw)
            torch._foreach_sub_(params, r_dw)
        g_neg = torch.autograd.grad(self.loss(self.xt, self.yt), alphas)
        with torch.no_grad():
            torch._foreach_copy_(params, backup)
            for a, da, gp, gn in zip(alphas, dalpha, g_pos, g_neg):
                a.grad = da - eta * (gp - gn) / (2 * r)
        self.a_opt.step()
        self.weight_step()


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def time_ms(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main():
    ap = argparse.ArgumentParser(description="Time the DARTS search supernet in PyTorch.")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32, help="input height = width")
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per phase")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per phase")
    ap.add_argument("--mode", choices=["eager", "compile", "cudagraph"], default="eager",
                    help="compile: torch.compile(model); cudagraph: torch.compile(mode='reduce-overhead'), CUDA only")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--phases", default="weight,first,second", help="comma-separated subset of weight,first,second")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()

    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in ("weight", "first", "second")]
    if unknown:
        ap.error(f"--phases: unknown phase(s) {unknown}; choose from weight, first, second")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no CUDA device")
    if args.mode == "cudagraph" and args.device != "cuda":
        ap.error("--mode cudagraph needs --device cuda")
    n_red = 2 if args.layers >= 3 else 1
    if args.size % (2 ** n_red) != 0:
        ap.error(f"--size {args.size}: FactorizedReduce needs an even size at each of the {n_red} reductions")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = Network(args.channels, args.classes, args.layers, in_channels=args.in_channels).to(device).train()
    n_weights = sum(p.numel() for p in model.parameters())
    forward = model
    if args.mode == "compile":
        forward = torch.compile(model)
    elif args.mode == "cudagraph":
        forward = torch.compile(model, mode="reduce-overhead")

    def batch():
        x = torch.randn(args.batch, args.in_channels, args.size, args.size, device=device)
        return x, torch.randint(0, args.classes, (args.batch,), device=device)

    search = Search(model, forward, (batch(), batch()))
    timer = Timer(device)
    fns = {"weight": search.weight_step, "first": search.first_order, "second": search.second_order}
    result = dict(
        framework="pytorch", torch=torch.__version__, device=args.device,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        threads=torch.get_num_threads(), mode=args.mode, channels=args.channels, layers=args.layers,
        batch=args.batch, size=args.size, in_channels=args.in_channels, classes=args.classes,
        params=n_weights, arch_params=sum(a.numel() for a in model.arch_parameters()),
        steps=args.steps, warmup=args.warmup, phases={},
        # Other processes on the machine skew CPU timings; the load shows whether they ran.
        loadavg_start=list(os.getloadavg()),
    )
    for name in phases:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            fns[name]()
        times = [timer.time_ms(fns[name]) for _ in range(args.steps)]
        if device.type == "cuda":
            peak, peak_kind = torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
        else:
            peak, peak_kind = max_rss_bytes(), "max_rss_cumulative"
        result["phases"][name] = dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                                      samples_ms=times, peak_bytes=peak, peak_kind=peak_kind)
        if not args.json:
            print(f"{name:>7}: median {statistics.median(times):9.2f} ms  (min {min(times):.2f}, max {max(times):.2f}), "
                  f"peak {peak / 2**20:.1f} MiB ({peak_kind})", file=sys.stderr)

    result["loadavg_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"parameters: {n_weights:,} weights (+ {result['arch_params']} architecture)")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
