/**
 * Activations. ReLU, ReLU6 and Clip save a 1-bit mask of where the derivative is 1 (exact, 1/32 of the
 * input's bytes) — or nothing when their input is a BN output whose fp32 x-hat the BN keeps: backward then
 * recomputes the input as gamma * x-hat + beta (norm.ts affineSource). The recomputed value can differ from
 * the forward's in the last bit (one rounding instead of two), which moves the derivative only for inputs
 * within an ulp of the window's edges. Hard-swish, hard-sigmoid and sigmoid save their input through the active codec for the
 * exact derivative, unless the active policy asks for MobileTL's 1-bit step mask (codecs.ts STEP_MASKS).
 */
import { OPEN, type SavedMask, saveFloat, saveMask, saveStepMask, stepMaskFor } from "../memory/codecs.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { type AffineSource, affineSource } from "./norm.ts";
import { Tensor } from "../tensor.ts";
import type { UnaryOp } from "../backend/kernels.ts";

function apply(x: Tensor, op: UnaryOp, alpha?: number, beta?: number): Tensor {
  const out = Tensor.empty(x.backend, x.shape);
  x.backend.run("unary", { x: x.storage, out: out.storage, attrs: { n: x.size, op, alpha, beta } });
  return out;
}

/** An activation whose derivative is 1 on the open window (lo, hi) and 0 elsewhere. */
function windowed(x: Tensor, op: UnaryOp, lo: number, hi: number, alpha?: number, beta?: number): Tensor {
  const out = apply(x, op, alpha, beta);
  if (!needsGrad(x)) return out;
  const source = affineSource(x);
  if (source) return recomputed(out, x, op, source, alpha, beta);
  return masked(out, x, op, saveMask(x, lo, hi), 1);
}

/** Record backward as dy * f'(gamma * xhat + beta), the input rebuilt from its BN's saved x-hat. */
function recomputed(
  out: Tensor,
  x: Tensor,
  op: UnaryOp,
  s: AffineSource,
  alpha?: number,
  beta?: number,
): Tensor {
  return record(op, out, [x], (dy) => {
    const b = dy.backend;
    const xhat = s.xhat.get();
    // dx holds gamma * xhat first (WebGPU cannot bind one buffer as both input and output of a kernel).
    const dx = Tensor.empty(b, dy.shape);
    const y = Tensor.empty(b, x.shape);
    // [n, c, hw] with gamma and beta broadcast along n and hw.
    const shape = [s.n, s.c, s.hw], dense = [s.c * s.hw, s.hw, 1], perChannel = [0, 1, 0];
    b.run("binary", {
      a: xhat.storage,
      b: s.gamma.storage,
      out: dx.storage,
      attrs: { op: "mul", shape, aStrides: dense, bStrides: perChannel },
    });
    xhat.dispose();
    b.run("binary", {
      a: dx.storage,
      b: s.beta.storage,
      out: y.storage,
      attrs: { op: "add", shape, aStrides: dense, bStrides: perChannel },
    });
    b.run("unary_grad", {
      x: y.storage,
      dy: dy.storage,
      out: dx.storage,
      attrs: { n: dy.size, op, alpha, beta },
    });
    y.dispose();
    return [dx];
  });
}

/** Record backward as dy * scale where the saved mask bit is set, else 0. */
function masked(out: Tensor, x: Tensor, op: UnaryOp, mask: SavedMask, scale: number): Tensor {
  return record(op, out, [x], (dy) => {
    const dx = Tensor.empty(dy.backend, dy.shape);
    dy.backend.run("mask_grad", {
      mask: mask.storage,
      dy: dy.storage,
      out: dx.storage,
      attrs: { n: dy.size, scale },
    });
    return [dx];
  }, [mask]);
}

export function relu(x: Tensor): Tensor {
  return windowed(x, "relu", 0, OPEN);
}

export function relu6(x: Tensor): Tensor {
  return windowed(x, "relu6", 0, 6);
}

export function clip(x: Tensor, min: number, max: number): Tensor {
  if (!(min <= max)) throw new Error(`clip(): min ${min} is greater than max ${max}`);
  return windowed(x, "clip", min, max, min, max);
}

/** An activation that keeps its input for backward (smooth or piecewise-linear with non-unit slopes). */
function smooth(x: Tensor, op: UnaryOp): Tensor {
  const out = apply(x, op);
  if (!needsGrad(x)) return out;
  const step = op === "hardswish" || op === "hardsigmoid" ? stepMaskFor(op) : null;
  if (step) {
    const mask = saveStepMask(x, step);
    return masked(out, x, op, mask, mask.scale);
  }
  const saved = saveFloat(x, op, "other");
  return record(op, out, [x], (dy) => {
    const input = saved.get();
    const dx = Tensor.empty(dy.backend, dy.shape);
    dy.backend.run("unary_grad", {
      x: input.storage,
      dy: dy.storage,
      out: dx.storage,
      attrs: { n: dy.size, op },
    });
    input.dispose();
    return [dx];
  }, [saved]);
}

export function hardswish(x: Tensor): Tensor {
  return smooth(x, "hardswish");
}

export function hardsigmoid(x: Tensor): Tensor {
  return smooth(x, "hardsigmoid");
}

export function sigmoid(x: Tensor): Tensor {
  return smooth(x, "sigmoid");
}

export function erf(x: Tensor): Tensor {
  return smooth(x, "erf");
}

/** Elementwise math with its exact derivative from the saved input: sqrt, exp, log, neg, abs, ... */
export function unaryMath(
  x: Tensor,
  op: "sqrt" | "rsqrt" | "exp" | "log" | "neg" | "abs" | "square",
): Tensor {
  return smooth(x, op);
}
