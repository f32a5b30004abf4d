#!/usr/bin/python3
"""PyTorch CPU peer for `deno task bench` (tests/bench/cpu_peers.ts): a JSON-lines server on stdin/stdout, so
the bench can interleave PyTorch runs with edgetrain's in one session (same machine state, same moment).

Requests (one JSON object a line) and replies:
  {"op": "info"}                                   -> torch version, BLAS library, default thread count
  {"op": "threads", "n": N}                        -> sets torch's and OpenBLAS's thread counts
  {"op": "gemm", "n": 1024, "reps": R}             -> {"ms": [...], "cpu_ms": [...]} per C = A @ B
  {"op": "tent_setup", "path": F}                  -> IRB net from F's weights and input; {"first_loss": x}
  {"op": "tent", "reps": R}                        -> wall and CPU ms per TENT step (forward, entropy, backward, Adam)
  {"op": "mnv2_setup", "batch": 8, "size": 224}    -> torchvision mobilenet_v2 (10 classes), BN folded
  {"op": "mnv2", "reps": R}                        -> wall and CPU ms per forward
Debian's python3-torch (1.13) uses whatever libblas.so.3 the system selects; with OpenBLAS it ignores
torch.set_num_threads, so "threads" also calls openblas_set_num_threads where that symbol exists.
"""
import ctypes
import json
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools", "goldens"))
import irb_golden  # noqa: E402  (the same IRB net definition the goldens use)


def blas_library():
    with open("/proc/self/maps") as f:
        for line in f:
            if "libblas" in line or "openblas" in line or "libmkl" in line:
                return os.path.realpath(line.split()[-1])
    return "unknown"


def set_threads(n):
    torch.set_num_threads(n)
    for name in ("libblas.so.3", "libopenblas.so.0"):
        try:
            lib = ctypes.CDLL(name)
            if hasattr(lib, "openblas_set_num_threads"):
                lib.openblas_set_num_threads(n)
        except OSError:
            pass


def timed(fn, reps):
    """Wall and process CPU milliseconds of each of `reps` runs (CPU time sums every thread's)."""
    ms, cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return {"ms": ms, "cpu_ms": cpu}


state = {}


def gemm(req):
    n = req["n"]
    if state.get("gemm_n") != n:
        g = torch.Generator().manual_seed(0)
        state["a"] = torch.rand(n, n, generator=g)
        state["b"] = torch.rand(n, n, generator=g)
        state["gemm_n"] = n
    a, b = state["a"], state["b"]
    return timed(lambda: torch.mm(a, b), req["reps"])


def tent_setup(req):
    with open(req["path"]) as f:
        spec = json.load(f)
    model = irb_golden.IrbNet(irb_golden.CONFIG)
    own = model.state_dict()
    sd = {k: torch.tensor(v, dtype=torch.float32).reshape(own[k].shape) for k, v in spec["state"].items() if k in own}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"weights missing for {missing[:3]}")
    model.load_state_dict(sd, strict=False)
    model.train()
    params = []
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
            params += [m.weight, m.bias]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999))
    x = torch.tensor(spec["input"], dtype=torch.float32).reshape(spec["shape"])

    def step():
        logits = model(x)
        loss = irb_golden.entropy_loss(logits)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    state["tent"] = step
    return {"first_loss": step()}


def mnv2_setup(req):
    import torchvision
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = torchvision.models.mobilenet_v2(num_classes=10).eval()

    # Fold every BN into the conv before it, as the ONNX eval export (fixtures/models/mobilenet_v2_eval.onnx)
    # does: PyTorch then runs the graph edgetrain and onnxruntime run (Conv+bias, Clip, Add, pool, Gemm).
    def fold(module):
        for child in module.children():
            fold(child)
        if isinstance(module, nn.Sequential):
            keys = list(module._modules.keys())
            for a, b in zip(keys, keys[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a] = fuse_conv_bn_eval(conv, bn)
                    module._modules[b] = nn.Identity()

    fold(m)
    x = torch.rand(req["batch"], 3, req["size"], req["size"], generator=torch.Generator().manual_seed(0))

    def fwd():
        with torch.inference_mode():
            return m(x)

    state["mnv2"] = fwd
    return {"out_shape": list(fwd().shape)}


def main():
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "info":
                rep = {"torch": torch.__version__, "blas": blas_library(), "threads": torch.get_num_threads()}
            elif op == "threads":
                set_threads(req["n"])
                rep = {"threads": torch.get_num_threads()}
            elif op == "gemm":
                rep = gemm(req)
            elif op == "tent_setup":
                rep = tent_setup(req)
            elif op == "tent":
                rep = timed(state["tent"], req["reps"])
            elif op == "mnv2_setup":
                rep = mnv2_setup(req)
            elif op == "mnv2":
                rep = timed(state["mnv2"], req["reps"])
            else:
                rep = {"error": f"unknown op {op}"}
        except Exception as e:  # the bench prints it and goes on without this peer
            rep = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(rep) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
