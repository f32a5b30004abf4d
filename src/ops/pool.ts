/**
 * 2-D max and average pooling (ONNX MaxPool / AveragePool, PyTorch max_pool2d / avg_pool2d) on the
 * `pool2d` kernel. Max pooling saves the argmax of each window (one u32 per output, counted as saved bytes),
 * not its input; average pooling saves nothing (its gradient needs only the geometry).
 */
import { activeTag, needsGrad, record } from "../autograd/tape.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { Pool2dAttrs } from "../backend/kernels.ts";

export interface Pool2dOptions {
  kernel: [number, number];
  stride?: [number, number];
  /** [top, left, bottom, right], as ONNX pads (x1_begin, x2_begin, x1_end, x2_end). */
  pads?: [number, number, number, number];
  dilation?: [number, number];
  /** Output size rounds up: a last window may start in the input and run past the bottom/right padding. */
  ceilMode?: boolean;
  /** Average pooling: padding taps count in the divisor. */
  countIncludePad?: boolean;
}

function outSize(
  len: number,
  k: number,
  s: number,
  p0: number,
  p1: number,
  d: number,
  ceil: boolean,
): number {
  const span = len + p0 + p1 - d * (k - 1) - 1;
  let out = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // PyTorch/ONNX: with ceil_mode the last window must start inside the input or the left padding.
  if (ceil && (out - 1) * s >= len + p0) out--;
  return out;
}

/** Kernel attributes for x [N, C, H, W]; throws naming the shapes when the window does not fit. */
export function pool2dAttrs(op: "max" | "avg", xShape: readonly number[], o: Pool2dOptions): Pool2dAttrs {
  if (xShape.length !== 4) {
    throw new Error(`${op}Pool2d(): input ${shapeString(xShape)} must be [N, C, H, W]`);
  }
  const [n, c, h, w] = xShape;
  const [kh, kw] = o.kernel, [strideH, strideW] = o.stride ?? [1, 1];
  const [padTop, padLeft, padBottom, padRight] = o.pads ?? [0, 0, 0, 0];
  const [dilationH, dilationW] = o.dilation ?? [1, 1];
  const ints = [kh, kw, strideH, strideW, dilationH, dilationW];
  if (
    !ints.every((v) => Number.isInteger(v) && v >= 1) ||
    [padTop, padLeft, padBottom, padRight].some((p) => !(p >= 0))
  ) {
    throw new Error(`${op}Pool2d(): invalid options ${JSON.stringify(o)}`);
  }
  const outH = outSize(h, kh, strideH, padTop, padBottom, dilationH, o.ceilMode ?? false);
  const outW = outSize(w, kw, strideW, padLeft, padRight, dilationW, o.ceilMode ?? false);
  if (outH < 1 || outW < 1) {
    throw new Error(`${op}Pool2d(): a ${kh}x${kw} window does not fit input ${shapeString(xShape)}`);
  }
  return {
    op,
    n,
    c,
    h,
    w,
    kh,
    kw,
    strideH,
    strideW,
    padTop,
    padLeft,
    // With ceil_mode a last window may run past the end padding; count_include_pad's divisor still stops
    // at it (PyTorch's avg_pool2d: hend = min(hstart + kH, H + padH)).
    padBottom,
    padRight,
    dilationH,
    dilationW,
    outH,
    outW,
    countIncludePad: o.countIncludePad ?? false,
  };
}

function pool(op: "max" | "avg", x: Tensor, o: Pool2dOptions): Tensor {
  const a = pool2dAttrs(op, x.shape, o);
  const b = x.backend;
  const out = Tensor.empty(b, [a.n, a.c, a.outH, a.outW]);
  const need = needsGrad(x);
  const argmax = op === "max" && need
    ? b.alloc(out.size, { dtype: "u32", category: "saved", tag: activeTag() })
    : null;
  b.run("pool2d", { x: x.storage, out: out.storage, ...(argmax ? { argmax } : {}), attrs: a });
  if (!need) return out;
  const xShape = x.shape;
  let released = false;
  const saved = {
    bytes: argmax?.bytes ?? 0,
    release: () => {
      if (released) return;
      released = true;
      if (argmax) b.release(argmax);
    },
  };
  return record(`${op}Pool2d`, out, [x], (dy) => {
    const dx = Tensor.empty(dy.backend, xShape);
    dy.backend.run("pool2d_grad", {
      dy: dy.storage,
      ...(argmax ? { argmax } : {}),
      out: dx.storage,
      attrs: a,
    });
    return [dx];
  }, [saved]);
}

export function maxPool2d(x: Tensor, o: Pool2dOptions): Tensor {
  return pool("max", x, o);
}

export function avgPool2d(x: Tensor, o: Pool2dOptions): Tensor {
  return pool("avg", x, o);
}
