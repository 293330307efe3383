#!/usr/bin/env python3
"""Training the DARTS evaluation network in PyTorch, timed: the baseline for
`nasrs bench train` (written for this project; the network is tools/darts_eval_net.py,
DARTS' NetworkCIFAR, with the semantics of its train.py step).

One step = forward in training mode (drop-path 0.2 on non-identity ops, auxiliary head
after cell 2L/3), loss = CE(logits) + 0.4 CE(aux logits), backward, grad-norm clip 5,
SGD (lr 0.025, momentum 0.9, weight decay 3e-4). Random images and labels, one fixed batch.
Reports the median step time over --steps after --warmup and images per second (batch /
median), plus the load average before and after (other processes skew CPU timings).

Example: python bench/torch_train_reference.py --device cpu --threads 2 --genotype DARTS_V2 \
    --channels 8 --layers 5 --batch 16 --steps 5 --warmup 1 --json
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from darts_eval_net import NetworkCIFAR, count_parameters, load_genotype  # noqa: E402

LR, MOMENTUM, WD, GRAD_CLIP, AUX_WEIGHT = 0.025, 0.9, 3e-4, 5.0, 0.4


def main():
    ap = argparse.ArgumentParser(description="Time training steps of the DARTS evaluation network in PyTorch.")
    ap.add_argument("--genotype", default="DARTS_V2", help="DARTS_V1 | DARTS_V2 | genotype.json")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32, help="image side (the auxiliary head needs 32)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--no-auxiliary", action="store_true")
    ap.add_argument("--drop-path", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch < 2:
        ap.error("--steps >= 1, --warmup >= 0 and --batch >= 2 please")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no CUDA device")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    aux = not args.no_auxiliary
    model = NetworkCIFAR(args.channels, args.classes, args.layers, aux, load_genotype(args.genotype)).to(device).train()
    model.drop_path_prob = args.drop_path
    opt = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        logits, logits_aux = model(x)
        loss = F.cross_entropy(logits, y)
        if logits_aux is not None:
            loss = loss + AUX_WEIGHT * F.cross_entropy(logits_aux, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()

    def timed():
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            step()
            e.record()
            e.synchronize()
            return s.elapsed_time(e) / 1e3
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    load_start = list(os.getloadavg())
    for _ in range(args.warmup):
        step()
    times = [timed() for _ in range(args.steps)]
    med = statistics.median(times)
    result = dict(
        framework="pytorch", torch=torch.__version__, device=args.device, threads=torch.get_num_threads(),
        genotype=args.genotype, channels=args.channels, layers=args.layers, batch=args.batch, size=args.size,
        classes=args.classes, auxiliary=aux, drop_path=args.drop_path, weights=count_parameters(model),
        steps=args.steps, warmup=args.warmup, step_s=med, images_per_s=args.batch / med, samples=times,
        loadavg_start=load_start, loadavg_end=list(os.getloadavg()),
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.genotype} C={args.channels} L={args.layers} batch {args.batch} {args.size}x{args.size} "
              f"auxiliary={aux}: {result['weights']:,} weights")
        print(f"training step {1e3 * med:9.1f} ms   {args.batch / med:9.1f} images/s   "
              f"(load {load_start[0]:.2f} -> {result['loadavg_end'][0]:.2f})")


if __name__ == "__main__":
    main()
