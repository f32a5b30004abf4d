#!/usr/bin/python3
"""PyTorch reference for edgetrain's `bn` and `tent` (issue #4 parity), and PyTorch's saved-tensor bytes of a
TENT step (the memory comparison).

Loads the edgetrain-exported ONNX model's initializers into the same IRB net in PyTorch (state names match,
tools/goldens/irb_golden.py defines it), reads the corrupted IDX streams written by tools/make_stream.ts, and
runs, per stream, from the source model (reset per stream, as TENT's cifar10c script does):
  source: eval mode;  bn: train-mode BN with track_running_stats=False (batch statistics, nothing trained);
  tent:   TENT's official configuration — model.train(), only BN affine requires grad, BN running stats off,
          Adam(lr 1e-3, betas (0.9, 0.999)), one step per batch on the mean softmax entropy; the predictions
          of a batch come from the forward before its update.
Writes a JSON object {method: {stream: error}} and `saved_bytes` of one TENT step.

  /usr/bin/python3 tools/parity/tent_torch.py --model fixtures/models/mnist_irb.onnx \
      --streams fixtures/streams/mnist_c --batch 64 --out tools/parity/torch_results.json
CI never runs this.
"""
import argparse
import glob
import gzip
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "goldens"))
from irb_golden import CONFIG, IrbNet  # noqa: E402


def read_idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_model(path):
    model = IrbNet(CONFIG)
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(path).graph.initializer}
    state = model.state_dict()
    for k in state:
        if k.endswith("num_batches_tracked"):
            continue
        state[k] = inits[k].reshape(state[k].shape)
    model.load_state_dict(state)
    return model


def preprocess(images, pad, mean, std):
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = nn.functional.pad(x, (pad, pad, pad, pad), value=0.0)
    return (x - mean) / std


def entropy(logits):
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def configure(model, method):
    model.train()
    model.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            if method == "tent":
                m.weight.requires_grad_(True)
                m.bias.requires_grad_(True)


def run_stream(source_state, x, y, method, batch):
    model = IrbNet(CONFIG)
    model.load_state_dict(source_state)
    if method == "source":
        model.eval()
    else:
        configure(model, method)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0) if params else None
    wrong = 0
    for s in range(0, len(x), batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        if method == "tent":
            logits = model(xb)
            loss = entropy(logits).mean(0)
            loss.backward()
            opt.step()
            opt.zero_grad()
        else:
            with torch.no_grad():
                logits = model(xb)
        wrong += (logits.argmax(1) != yb).sum().item()
    return wrong / len(x)


def saved_bytes_of_tent_step(source_state, batch):
    """Bytes of the distinct tensors autograd saves for one TENT step (saved_tensors_hooks)."""
    model = IrbNet(CONFIG)
    model.load_state_dict(source_state)
    configure(model, "tent")
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), t.shape, t.dtype)] = t.numel() * t.element_size()
        return t

    x = torch.randn(batch, 1, 32, 32)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = entropy(model(x)).mean(0)
    # The input image and the frozen weights are kept by PyTorch too, but they exist anyway: count only
    # tensors that are activations (not parameters, not the input).
    params = {p.data_ptr() for p in model.parameters()}
    total = sum(b for (ptr, _shape, _dt), b in seen.items() if ptr not in params and ptr != x.data_ptr())
    loss.backward()
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", required=True, help="folder written by tools/make_stream.ts")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--methods", default="source,bn,tent")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    side = json.load(open(args.model.replace(".onnx", ".json")))
    pad, mean, std = side.get("pad", 0), side["mean"][0], side["std"][0]
    source_state = load_model(args.model).state_dict()
    results = {"batch": args.batch, "errors": {}}
    for images in sorted(glob.glob(os.path.join(args.streams, "*-images-idx3-ubyte*"))):
        name = os.path.basename(images).split("-images-")[0]
        labels = images.replace("-images-idx3-ubyte", "-labels-idx1-ubyte")
        x = preprocess(read_idx(images), pad, mean, std)
        y = torch.from_numpy(read_idx(labels).astype(np.int64))
        for method in args.methods.split(","):
            err = run_stream(source_state, x, y, method, args.batch)
            results["errors"].setdefault(method, {})[name] = err
            print(f"{method:6s} {name:28s} {100 * err:6.2f}%", flush=True)
    results["saved_bytes_tent_step"] = saved_bytes_of_tent_step(source_state, args.batch)
    print("pytorch saved bytes of a tent step at batch", args.batch, results["saved_bytes_tent_step"])
    json.dump(results, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
