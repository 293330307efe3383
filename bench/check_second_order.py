#!/usr/bin/env python3
"""Checks bench/torch_reference.py's second-order DARTS step against autograd (written for
this project): on a tiny float64 network, the alpha gradient the step hands to Adam must equal
d/dalpha L_val(w - xi (momentum * buf + dL_train/dw + wd w), alpha), computed exactly with
create_graph. The finite-difference step is shrunk to 1e-7 for the check (DARTS uses 1e-2,
which on a network this small is dominated by ReLU / max-pool kinks, not by the method).

Usage: python bench/check_second_order.py   (exits 1 on a mismatch)
"""

import os
import sys

import torch
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402


def main():
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    model = ref.Network(4, 5, 3).train()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 0.5)  # away from uniform, so the Hessian term is not tiny
    batches = tuple((torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(2))
    search = ref.Search(model, model, batches)
    search.weight_step()  # gives every weight a momentum buffer, as in the middle of a search
    params, alphas = search.params, search.alphas
    before = [p.detach().clone() for p in params]

    # Exact: differentiate through the unrolled weights.
    g = torch.autograd.grad(search.loss(search.xt, search.yt), params, create_graph=True)
    unrolled = [p - ref.W_LR * (ref.W_MOMENTUM * search.w_opt.state[p]["momentum_buffer"] + gi + ref.W_WD * p)
                for p, gi in zip(params, g)]
    names = [n for n, _ in model.named_parameters()]
    logits = functional_call(model, dict(zip(names, unrolled)), (search.xv,))
    exact = torch.autograd.grad(F.cross_entropy(logits, search.yv), alphas)

    # The reference's step, stopped before the optimizers so alpha.grad can be read.
    search.a_opt.step = lambda: None
    search.weight_step = lambda: None
    ref.HVP_R = 1e-7
    search.second_order()

    ok = True
    for name, e, a in zip(("normal", "reduce"), exact, alphas):
        err, scale = (e - a.grad).abs().max().item(), e.abs().max().item()
        print(f"alphas_{name}: max |exact - reference| = {err:.3e} (max |exact| = {scale:.3e})")
        ok &= err <= 1e-6 * scale
    restored = all(torch.equal(p, b) for p, b in zip(params, before))
    print(f"weights restored after the step: {restored}")
    ok &= restored
    print("ok" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
