/** CPU reference kernels for 2-D pooling: pool2d, pool2d_grad (semantics in kernels.ts Pool2dAttrs). */
import type { CpuKernel } from "../cpu.ts";
import type { Pool2dAttrs } from "../kernels.ts";

/** The argmax of a max window with no input tap: its gradient goes nowhere. */
export const NO_TAP = 0xffffffff;

/** Divisor of average-pooling window (oh, ow). */
export function avgDivisor(a: Pool2dAttrs, oh: number, ow: number): number {
  const h0 = oh * a.strideH - a.padTop, w0 = ow * a.strideW - a.padLeft;
  if (a.countIncludePad) {
    const h1 = Math.min(h0 + a.kh, a.h + a.padBottom), w1 = Math.min(w0 + a.kw, a.w + a.padRight);
    return (h1 - h0) * (w1 - w0);
  }
  const rows = Math.min(h0 + a.kh, a.h) - Math.max(h0, 0);
  const cols = Math.min(w0 + a.kw, a.w) - Math.max(w0, 0);
  return Math.max(rows, 0) * Math.max(cols, 0);
}

function checkAvg(a: Pool2dAttrs): void {
  if (a.op === "avg" && (a.dilationH !== 1 || a.dilationW !== 1)) {
    throw new Error(`pool2d(): average pooling with dilation ${a.dilationH}x${a.dilationW} is not supported`);
  }
}

export const pool2d: CpuKernel<"pool2d"> = ({ x, out, argmax, attrs: a }, mem) => {
  checkAvg(a);
  const X = mem.f(x), Y = mem.f(out), I = argmax ? mem.u(argmax) : null;
  const plane = a.h * a.w, oplane = a.outH * a.outW;
  for (let p = 0; p < a.n * a.c; p++) {
    const xb = p * plane;
    for (let oh = 0; oh < a.outH; oh++) {
      for (let ow = 0; ow < a.outW; ow++) {
        const h0 = oh * a.strideH - a.padTop, w0 = ow * a.strideW - a.padLeft;
        let best = -Infinity, at = NO_TAP, sum = 0;
        for (let i = 0; i < a.kh; i++) {
          const ih = h0 + i * a.dilationH;
          if (ih < 0 || ih >= a.h) continue;
          for (let j = 0; j < a.kw; j++) {
            const iw = w0 + j * a.dilationW;
            if (iw < 0 || iw >= a.w) continue;
            const v = X[xb + ih * a.w + iw];
            sum += v;
            // The first input tap starts the window; then the first maximum wins, and a NaN beats
            // everything and stays (PyTorch: v > best || isnan(v)).
            if (at === NO_TAP || v > best || (Number.isNaN(v) && !Number.isNaN(best))) {
              best = v;
              at = ih * a.w + iw;
            }
          }
        }
        const o = p * oplane + oh * a.outW + ow;
        if (a.op === "max") {
          Y[o] = best;
          if (I) I[o] = at;
        } else {
          const div = avgDivisor(a, oh, ow);
          Y[o] = div > 0 ? sum / div : 0;
        }
      }
    }
  }
};

export const pool2d_grad: CpuKernel<"pool2d_grad"> = ({ dy, argmax, out, attrs: a }, mem) => {
  checkAvg(a);
  const G = mem.f(dy), D = mem.f(out);
  const I = a.op === "max" ? (argmax ? mem.u(argmax) : null) : null;
  if (a.op === "max" && !I) throw new Error("pool2d_grad(): max pooling needs argmax");
  const plane = a.h * a.w, oplane = a.outH * a.outW;
  D.fill(0, 0, a.n * a.c * plane);
  for (let p = 0; p < a.n * a.c; p++) {
    for (let oh = 0; oh < a.outH; oh++) {
      for (let ow = 0; ow < a.outW; ow++) {
        const o = p * oplane + oh * a.outW + ow;
        if (I) {
          if (I[o] !== NO_TAP) D[p * plane + I[o]] += G[o];
          continue;
        }
        const div = avgDivisor(a, oh, ow);
        if (div === 0) continue;
        const g = G[o] / div;
        const h0 = oh * a.strideH - a.padTop, w0 = ow * a.strideW - a.padLeft;
        for (let ih = Math.max(h0, 0); ih < Math.min(h0 + a.kh, a.h); ih++) {
          for (let iw = Math.max(w0, 0); iw < Math.min(w0 + a.kw, a.w); iw++) {
            D[p * plane + ih * a.w + iw] += g;
          }
        }
      }
    }
  }
};
