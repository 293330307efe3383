#!/usr/bin/env python3
"""ONNX Runtime's CPU latency of a model nasrs exported (`nasrs export onnx`), for
BENCHMARKS.md beside `nasrs bench eval` (the eval-mode forward nasrs itself runs): random
normal images of the model's input shape (--batch for a dynamic batch), --warmup untimed
runs, then the median, min and max of --runs timed `session.run` calls, in ms. ONNX
Runtime's default CPU session (all optimisations, one intra-op thread per core).

    python tools/bench_onnx.py --model /tmp/darts_v2_b64.onnx --runs 20
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1, help="batch of a dynamic-batch model")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's default)")
    a = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    shape = [d if isinstance(d, int) else a.batch for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(a.warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    ms = sorted(1e3 * t for t in times)
    print(json.dumps({
        "model": a.model, "input": shape, "median_ms": ms[len(ms) // 2], "min_ms": ms[0],
        "max_ms": ms[-1], "images_per_s": shape[0] / (ms[len(ms) // 2] / 1e3),
        "onnxruntime": ort.__version__,
    }))


if __name__ == "__main__":
    main()
