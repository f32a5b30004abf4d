/**
 * 2-D convolution (NCHW, PyTorch/ONNX semantics: symmetric padding, dilation, groups).
 *
 * TinyTL rule (Cai et al. 2020, sec. 3): the weight gradient needs the input, the input gradient needs only
 * the weight. So x is saved (through the codec policy) only when w needs a gradient; when only dx is needed
 * the op keeps a reference to w and no saved bytes. The bias gradient needs nothing but dy.
 */
import { saveFloat } from "../memory/codecs.ts";
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, Tensor } from "../tensor.ts";
import type { Conv2dAttrs } from "../backend/kernels.ts";
import { keepOperand } from "./linear.ts";
import { reduceAxes } from "./reduce.ts";

export interface Conv2dOptions {
  bias?: Tensor | null;
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
}

function pair(op: string, name: string, v: number | [number, number] | undefined, dflt: number, min: number) {
  const p: [number, number] = v === undefined ? [dflt, dflt] : typeof v === "number" ? [v, v] : v;
  if (p.length !== 2 || !p.every((d) => Number.isInteger(d) && d >= min)) {
    throw new Error(`${op}(): ${name} ${JSON.stringify(v)} must be an integer >= ${min} or a pair of them`);
  }
  return p;
}

/**
 * Validated kernel attributes for x [N, Cin, H, W] convolved with w [Cout, Cin/groups, KH, KW]. Throws
 * naming the shapes when they do not fit.
 */
export function conv2dAttrs(
  xShape: readonly number[],
  wShape: readonly number[],
  options: Omit<Conv2dOptions, "bias"> = {},
): Conv2dAttrs {
  const op = "conv2d";
  const shapes = `input ${shapeString(xShape)}, weight ${shapeString(wShape)}`;
  if (xShape.length !== 4) throw new Error(`${op}(): input ${shapeString(xShape)} must be 4-D [N, C, H, W]`);
  if (wShape.length !== 4) {
    throw new Error(`${op}(): weight ${shapeString(wShape)} must be 4-D [Cout, Cin/groups, KH, KW]`);
  }
  const [n, cin, h, w] = xShape;
  const [cout, cing, kh, kw] = wShape;
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1 || cout % groups !== 0) {
    throw new Error(
      `${op}(): groups=${groups} must be a positive divisor of the ${cout} output channels (${shapes})`,
    );
  }
  if (cing * groups !== cin) {
    throw new Error(
      `${op}(): input ${shapeString(xShape)} has ${cin} channels but weight ${shapeString(wShape)} expects ${
        cing * groups
      } (groups=${groups})`,
    );
  }
  const [strideH, strideW] = pair(op, "stride", options.stride, 1, 1);
  const [padH, padW] = pair(op, "padding", options.padding, 0, 0);
  const [dilationH, dilationW] = pair(op, "dilation", options.dilation, 1, 1);
  const spanH = dilationH * (kh - 1) + 1, spanW = dilationW * (kw - 1) + 1;
  const outH = Math.floor((h + 2 * padH - spanH) / strideH) + 1;
  const outW = Math.floor((w + 2 * padW - spanW) / strideW) + 1;
  if (kh < 1 || kw < 1 || outH < 1 || outW < 1) {
    throw new Error(
      `${op}(): kernel ${kh}x${kw} (dilation ${dilationH}x${dilationW}) spans ${spanH}x${spanW}, more than the padded input ${
        h + 2 * padH
      }x${w + 2 * padW} (${shapes})`,
    );
  }
  return {
    n,
    cin,
    h,
    w,
    cout,
    kh,
    kw,
    strideH,
    strideW,
    padH,
    padW,
    dilationH,
    dilationW,
    groups,
    outH,
    outW,
  };
}

/** [N, Cout, outH, outW] of conv2d(x, w, options), for planners that size memory before running. */
export function conv2dOutputShape(
  xShape: readonly number[],
  wShape: readonly number[],
  options: Omit<Conv2dOptions, "bias"> = {},
): [number, number, number, number] {
  const a = conv2dAttrs(xShape, wShape, options);
  return [a.n, a.cout, a.outH, a.outW];
}

/** y = conv(x, w) + bias for x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW], bias [Cout]. */
export function conv2d(x: Tensor, w: Tensor, options: Conv2dOptions = {}): Tensor {
  const bias = options.bias ?? null;
  if (w.backend !== x.backend || (bias && bias.backend !== x.backend)) {
    throw new Error(`conv2d(): inputs live on different backends`);
  }
  const attrs = conv2dAttrs(x.shape, w.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== attrs.cout)) {
    throw new Error(
      `conv2d(): bias ${shapeString(bias.shape)} must be [${attrs.cout}] for weight ${shapeString(w.shape)}`,
    );
  }
  const b = x.backend;
  const y = Tensor.empty(b, [attrs.n, attrs.cout, attrs.outH, attrs.outW]);
  b.run("conv2d", {
    x: x.storage,
    w: w.storage,
    ...(bias ? { bias: bias.storage } : {}),
    out: y.storage,
    attrs,
  });
  const needX = needsGrad(x), needW = needsGrad(w), needB = needsGrad(bias);
  if (!needX && !needW && !needB) return y;
  const savedX = needW ? saveFloat(x, "conv2d", "input") : null;
  const keptW = needX ? keepOperand(w, "conv2d") : null;
  const xShape = x.shape, wShape = w.shape;
  return record("conv2d", y, [x, w, bias], (dy) => {
    let dx: Tensor | null = null, dw: Tensor | null = null;
    if (keptW) {
      const wv = keptW.get();
      dx = Tensor.empty(b, xShape);
      b.run("conv2d_grad_input", { dy: dy.storage, w: wv.storage, out: dx.storage, attrs });
      wv.dispose();
    }
    if (savedX) {
      const xv = savedX.get();
      dw = Tensor.empty(b, wShape);
      b.run("conv2d_grad_weight", { x: xv.storage, dy: dy.storage, out: dw.storage, attrs });
      xv.dispose();
    }
    // db = dy summed over N, H, W: two reduce passes, the larger (H*W or N) first.
    const db = needB ? reduceAxes(dy, [0, 2, 3], { shape: [attrs.cout] }) : null;
    return [dx, dw, db];
  }, [savedX, keptW].filter((s) => s !== null));
}
