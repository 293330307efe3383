#!/usr/bin/env python3
"""Checks an ONNX model nasrs exported (`nasrs export onnx`) with the real consumers: the
`onnx` package's checker (full check, shape inference included) and ONNX Runtime on the CPU,
whose logits must match the ones nasrs computed for the same images (`nasrs eval --logits FILE`
writes both) within --tol (max abs difference). Needs `onnx`, `onnxruntime` and `numpy` from
PyPI; tests/onnx_export.rs runs it, CI installs them (.ci/run).

    nasrs eval --checkpoint runs/train/model.safetensors --logits /tmp/logits.safetensors
    nasrs export onnx --checkpoint runs/train/model.safetensors --out /tmp/model.onnx --batch dynamic
    python tools/check_onnx.py --model /tmp/model.onnx --logits /tmp/logits.safetensors

A model with a fixed batch N is run on the images N at a time (their count must be a
multiple of N). Prints one JSON line (max abs difference, images, opset, metadata keys);
exits 1 when the difference is over --tol or a check fails.
"""

import argparse
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort

REQUIRED_META = ["nasrs.version", "nasrs.network", "nasrs.model"]


def read_safetensors(path):
    """The F32 tensors of a safetensors file, as numpy arrays (no extra package needed)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--logits", required=True, help="safetensors with images and logits")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise SystemExit(f"{a.model}: metadata lacks {missing}")
    if "nasrs.genotype" not in meta and "nasrs.arch" not in meta:
        raise SystemExit(f"{a.model}: metadata names neither a genotype nor an arch")

    ref = read_safetensors(a.logits)
    images, want = ref["images"].astype(np.float32), ref["logits"].astype(np.float32)
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (outp,) = sess.get_outputs()
    if (inp.name, outp.name) != ("images", "logits"):
        raise SystemExit(f"{a.model}: input/output are {inp.name}/{outp.name}, not images/logits")
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else len(images)
    if len(images) % batch:
        raise SystemExit(f"{len(images)} images do not split into batches of {batch}")
    got = np.concatenate(
        [sess.run(["logits"], {"images": images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    )
    if got.shape != want.shape:
        raise SystemExit(f"ONNX Runtime gave logits {got.shape}, nasrs {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    result = {
        "model": a.model,
        "images": len(images),
        "batch": inp.shape[0],
        "opset": model.opset_import[0].version,
        "max_abs_diff": diff,
        "max_abs_logit": float(np.max(np.abs(want))),
        "network": meta["nasrs.network"],
        "metadata": sorted(meta),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
    print(json.dumps(result))
    if not diff <= a.tol:
        print(f"max abs difference {diff} is over {a.tol}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
