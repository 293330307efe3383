#!/usr/bin/env python3
"""Checks that nasrs evaluation-network checkpoints and PyTorch DARTS agree (written for this
project; the network is tools/darts_eval_net.py, DARTS' NetworkCIFAR).

check: load a nasrs `model.safetensors` (or `checkpoint.safetensors`) into the PyTorch
    network with `load_state_dict(strict=True)` and compare its eval-mode logits with the
    ones nasrs computed for the same images (`nasrs eval --logits FILE` writes them):

        nasrs eval --checkpoint runs/train/model.safetensors --logits /tmp/logits.safetensors
        python tools/check_eval_checkpoint.py check --checkpoint runs/train/model.safetensors \
            --logits /tmp/logits.safetensors

fixture: write the fixtures tests/train_torch_eval.rs reads:
    - tests/fixtures/eval_net_torch.safetensors: the state_dict of a tiny network (C=4, L=5,
      a genotype using every primitive, 16x16 inputs) after three training-mode forwards
      (so the BN running statistics are not their initial values), saved as is
      (num_batches_tracked as I64): a "PyTorch DARTS checkpoint converted to safetensors";
    - tests/fixtures/eval_net.safetensors: case "eval" (inputs and the eval-mode logits of
      that network), case "aux_train" (DARTS_V1, C=4, L=3, auxiliary head, 32x32 inputs,
      every parameter and buffer set by the formula `formula_value` below so that the
      768-channel head needs no storage): training-mode logits, auxiliary logits and every
      BN's running statistics after that forward.
    References are computed in float64 from the float32 values and stored as float32.

Usage: python tools/check_eval_checkpoint.py {check,fixture} ...
"""

import argparse
import copy
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from darts_eval_net import NetworkCIFAR, load_genotype  # noqa: E402
from make_fixtures import write_safetensors  # noqa: E402

SEED = 20240612
# Every primitive, stride-2 skip (FactorizedReduce) included, in both cells.
ALL_OPS = {
    "normal": [["sep_conv_5x5", 0], ["dil_conv_5x5", 1], ["avg_pool_3x3", 0], ["skip_connect", 2],
               ["max_pool_3x3", 1], ["sep_conv_3x3", 2], ["dil_conv_3x3", 3], ["skip_connect", 0]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["skip_connect", 0], ["sep_conv_5x5", 1], ["dil_conv_5x5", 0], ["avg_pool_3x3", 2],
               ["max_pool_3x3", 1], ["sep_conv_3x3", 2], ["dil_conv_3x3", 0], ["skip_connect", 3]],
    "reduce_concat": [3, 4, 5],
}


def formula_value(name, shape):
    """A deterministic value for state_dict entry `name` (mirrored in tests/train_torch_eval.rs)."""
    numel = math.prod(shape)
    phase = 0.11 * (sum(name.encode()) % 97)
    s = torch.sin(0.37 * torch.arange(numel, dtype=torch.float64) + phase)
    if name.endswith(".running_mean"):
        v = 0.1 * s
    elif name.endswith(".running_var"):
        v = 1.0 + 0.5 * s.abs()
    elif len(shape) >= 2:
        v = s / math.sqrt(numel // shape[0])
    elif name.endswith(".weight"):
        v = 1.0 + 0.2 * s
    else:
        v = 0.1 * s
    return v.to(torch.float32).reshape(shape)


def state_for_safetensors(model):
    """state_dict as float32 (num_batches_tracked stays int64), contiguous."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        out[k] = (v if v.dtype == torch.int64 else v.to(torch.float32)).contiguous()
    return out


def make_fixtures(out_dir):
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    tensors, meta = {}, {}

    # Case "eval": stored weights, trained-looking BN statistics, eval-mode logits.
    c, layers, classes, size, n = 4, 5, 10, 16, 3
    net = NetworkCIFAR(c, classes, layers, False, ALL_OPS)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() == 1 and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        net.train()
        for _ in range(3):
            net(torch.randn(4, 3, size, size, generator=gen))
    state = state_for_safetensors(net)
    torch_path = os.path.join(out_dir, "eval_net_torch.safetensors")
    write_safetensors(torch_path, state, {"__generator__": note(), "genotype": json.dumps(ALL_OPS)})
    x = torch.randn(n, 3, size, size, generator=gen)
    ref = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        logits, aux = ref(x.double())
    assert aux is None
    tensors["eval.x"] = x
    tensors["eval.logits"] = logits.float()
    meta["eval"] = json.dumps(dict(genotype=ALL_OPS, channels=c, layers=layers, classes=classes,
                                   in_channels=3, auxiliary=False, mode="eval",
                                   weights="eval_net_torch.safetensors"), sort_keys=True)

    # Case "aux_train": formula weights, training-mode forward with the auxiliary head.
    c, layers, classes, size, n = 4, 3, 10, 32, 2
    net = NetworkCIFAR(c, classes, layers, True, load_genotype("DARTS_V1"))
    net.load_state_dict({k: (v if k.endswith("num_batches_tracked") else formula_value(k, list(v.shape)))
                         for k, v in net.state_dict().items()})
    ref = net.double().train()
    ref.drop_path_prob = 0.0
    x = torch.randn(n, 3, size, size, generator=gen)
    with torch.no_grad():
        logits, aux = ref(x.double())
    tensors["aux_train.x"] = x
    tensors["aux_train.logits"] = logits.float()
    tensors["aux_train.logits_aux"] = aux.float()
    for k, v in ref.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            tensors[f"aux_train.{k}"] = v.float()
    meta["aux_train"] = json.dumps(dict(genotype="DARTS_V1", channels=c, layers=layers, classes=classes,
                                        in_channels=3, auxiliary=True, mode="train", drop_path_prob=0.0,
                                        weights="formula_value"), sort_keys=True)
    meta["__generator__"] = note()
    io_path = os.path.join(out_dir, "eval_net.safetensors")
    write_safetensors(io_path, {k: v.contiguous() for k, v in tensors.items()}, meta)
    for p in (torch_path, io_path):
        print(f"{os.path.relpath(p)}: {os.path.getsize(p)} bytes")


def note():
    return json.dumps({"script": "tools/check_eval_checkpoint.py", "seed": SEED, "torch": torch.__version__,
                       "reference_dtype": "float64", "stored_dtype": "float32"}, sort_keys=True)


def check(args):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(args.checkpoint, "pt") as f:
        metadata = f.metadata() or {}
    state = {k: v for k, v in load_file(args.checkpoint).items() if not k.startswith("optimizer.")}
    if "nasrs.model" in metadata:
        m = json.loads(metadata["nasrs.model"])["model"]
        genotype = load_genotype(args.genotype) if args.genotype else m["genotype"]
        genotype = {k: [list(p) if isinstance(p, (list, tuple)) else p for p in v] for k, v in genotype.items()}
        net = NetworkCIFAR(m["channels"], m["classes"], m["layers"], m["auxiliary"], genotype, m["in_channels"])
    else:
        sys.exit("the checkpoint has no nasrs.model metadata; is it a nasrs checkpoint?")
    net.load_state_dict(state, strict=True)  # every name and shape must match
    print(f"{args.checkpoint}: {len(state)} tensors loaded strictly into NetworkCIFAR "
          f"(C={m['channels']}, L={m['layers']}, auxiliary={m['auxiliary']})")
    dump = load_file(args.logits)
    x, want = dump["images"].double(), dump["logits"].double()
    net = net.double().eval()
    with torch.no_grad():
        got, _ = net(x)
    scale = max(want.abs().max().item(), 1e-6)
    err = (got - want).abs().max().item()
    agree = (got.argmax(1) == want.argmax(1)).float().mean().item()
    print(f"{x.shape[0]} images: max |PyTorch - nasrs| = {err:.3g} (relative {err / scale:.3g}), "
          f"same top-1 on {100 * agree:.1f}%")
    if err > args.tolerance * scale:
        sys.exit(f"MISMATCH: relative error {err / scale:.3g} > {args.tolerance}")
    print("OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare a nasrs checkpoint's logits with PyTorch's")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--logits", required=True, help="file written by `nasrs eval --logits`")
    c.add_argument("--genotype", help="override the checkpoint's genotype (name or genotype.json)")
    c.add_argument("--tolerance", type=float, default=1e-4)
    f = sub.add_parser("fixture", help="write tests/fixtures/eval_net*.safetensors")
    f.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    if args.cmd == "check":
        check(args)
    else:
        os.makedirs(args.out, exist_ok=True)
        make_fixtures(args.out)


if __name__ == "__main__":
    main()
