/**
 * CPU reference convolution: conv2d, conv2d_grad_input (the transposed convolution), conv2d_grad_weight.
 *
 * Three paths, all exact for every stride/padding/dilation/groups combination:
 * - one input channel and at most 4 outputs per group (depthwise, small channel multipliers): direct loops
 *   over output planes (a 1-channel input feeding many outputs is faster as a GEMM with k = kh*kw);
 * - 1x1, stride 1, no padding: the input already is the im2col matrix, so one GEMM per image and group;
 * - otherwise im2col (or col2im for the input gradient) around the GEMM core of matmul.ts.
 * Per-tap valid output ranges are computed once, so no inner loop tests bounds. Sums that span several
 * taps or images are carried in float64 and rounded once when stored.
 */
import type { CpuKernel, FloatArray } from "../cpu.ts";
import type { Conv2dAttrs } from "../kernels.ts";
import { gemm } from "./matmul.ts";
import { scratch } from "./scratch.ts";

/** Output indices o in [lo[t], hi[t]) whose input o*stride + t*dilation - pad lies in [0, size). */
interface TapRanges {
  off: Int32Array; // t*dilation - pad
  lo: Int32Array;
  hi: Int32Array;
}

function tapRanges(taps: number, stride: number, dilation: number, pad: number, size: number, out: number) {
  const r: TapRanges = { off: new Int32Array(taps), lo: new Int32Array(taps), hi: new Int32Array(taps) };
  for (let t = 0; t < taps; t++) {
    const off = t * dilation - pad;
    const lo = off >= 0 ? 0 : Math.ceil(-off / stride);
    const hi = Math.min(out, Math.floor((size - 1 - off) / stride) + 1);
    r.off[t] = off;
    r.lo[t] = Math.min(lo, out);
    r.hi[t] = Math.max(hi, r.lo[t]);
  }
  return r;
}

interface Geometry {
  a: Conv2dAttrs;
  cing: number;
  coutg: number;
  /** Rows of the im2col matrix: cin/groups * kh * kw. */
  kdim: number;
  hw: number;
  ohw: number;
  ys: TapRanges;
  xs: TapRanges;
  pointwise: boolean;
}

function geometry(a: Conv2dAttrs, what: string, lengths: Record<string, number>): Geometry {
  const { n, cin, h, w, cout, kh, kw, groups, outH, outW } = a;
  if (!(groups >= 1) || cin % groups !== 0 || cout % groups !== 0) {
    throw new Error(`${what}: groups=${groups} must divide cin=${cin} and cout=${cout}`);
  }
  const cing = cin / groups;
  const want: Record<string, number> = {
    x: n * cin * h * w,
    w: cout * cing * kh * kw,
    y: n * cout * outH * outW,
  };
  for (const [name, have] of Object.entries(lengths)) {
    if (have < want[name]) {
      throw new Error(`${what}: ${name} holds ${have} elements, the attributes need ${want[name]}`);
    }
  }
  const pointwise = kh === 1 && kw === 1 && a.strideH === 1 && a.strideW === 1 && a.padH === 0 &&
    a.padW === 0 &&
    outH === h && outW === w;
  return {
    a,
    cing,
    coutg: cout / groups,
    kdim: cing * kh * kw,
    hw: h * w,
    ohw: outH * outW,
    ys: tapRanges(kh, a.strideH, a.dilationH, a.padH, h, outH),
    xs: tapRanges(kw, a.strideW, a.dilationW, a.padW, w, outW),
    pointwise,
  };
}

/** col[(ci*kh + ky)*kw + kx][oh*outW + ow] = x[ci, oh*sh + ky*dh - ph, ow*sw + kx*dw - pw], 0 outside. */
function im2col(g: Geometry, x: FloatArray, xOff: number, col: Float64Array): void {
  const { kh, kw, w, outW, strideH: sh, strideW: sw } = g.a;
  const { ys, xs } = g;
  let row = 0;
  for (let ci = 0; ci < g.cing; ci++) {
    const plane = xOff + ci * g.hw;
    for (let ky = 0; ky < kh; ky++) {
      const yLo = ys.lo[ky], yHi = ys.hi[ky], offY = ys.off[ky];
      for (let kx = 0; kx < kw; kx++, row++) {
        const xLo = xs.lo[kx], xHi = xs.hi[kx], offX = xs.off[kx];
        const base = row * g.ohw;
        col.fill(0, base, base + yLo * outW);
        for (let oh = yLo; oh < yHi; oh++) {
          const c = base + oh * outW, src = plane + (oh * sh + offY) * w + offX;
          col.fill(0, c, c + xLo);
          for (let ow = xLo; ow < xHi; ow++) col[c + ow] = x[src + ow * sw];
          col.fill(0, c + xHi, c + outW);
        }
        col.fill(0, base + yHi * outW, base + g.ohw);
      }
    }
  }
}

/** The adjoint of im2col: acc[ci, iy, ix] += col[...] for every tap that read that input element. */
function col2im(g: Geometry, col: Float64Array, acc: Float64Array): void {
  const { kh, kw, w, outW, strideH: sh, strideW: sw } = g.a;
  const { ys, xs } = g;
  acc.fill(0, 0, g.cing * g.hw);
  let row = 0;
  for (let ci = 0; ci < g.cing; ci++) {
    const plane = ci * g.hw;
    for (let ky = 0; ky < kh; ky++) {
      const yLo = ys.lo[ky], yHi = ys.hi[ky], offY = ys.off[ky];
      for (let kx = 0; kx < kw; kx++, row++) {
        const xLo = xs.lo[kx], xHi = xs.hi[kx], offX = xs.off[kx];
        const base = row * g.ohw;
        for (let oh = yLo; oh < yHi; oh++) {
          const c = base + oh * outW, dst = plane + (oh * sh + offY) * w + offX;
          for (let ow = xLo; ow < xHi; ow++) acc[dst + ow * sw] += col[c + ow];
        }
      }
    }
  }
}

export const conv2d: CpuKernel<"conv2d"> = ({ x, w, bias, out, attrs }, mem) => {
  const X = mem.f(x), W = mem.f(w), Y = mem.f(out);
  const B = bias ? mem.f(bias) : undefined;
  const g = geometry(attrs, "conv2d", { x: X.length, w: W.length, y: Y.length });
  if (B && B.length < attrs.cout) {
    throw new Error(`conv2d: bias holds ${B.length} elements, cout is ${attrs.cout}`);
  }
  if (depthwise(g)) return depthwiseForward(g, X, W, B, Y);
  const { n, cin, cout, groups } = attrs;
  const col = g.pointwise ? null : scratch("col", g.kdim * g.ohw);
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < groups; gi++) {
      const cOff = (b * cout + gi * g.coutg) * g.ohw;
      if (B) {
        for (let i = 0; i < g.coutg; i++) {
          Y.fill(B[gi * g.coutg + i], cOff + i * g.ohw, cOff + (i + 1) * g.ohw);
        }
      }
      const xOff = (b * cin + gi * g.cing) * g.hw;
      if (col) im2col(g, X, xOff, col);
      gemm({
        a: W,
        aOff: gi * g.coutg * g.kdim,
        b: col ?? X,
        bOff: col ? 0 : xOff,
        c: Y,
        cOff,
        m: g.coutg,
        n: g.ohw,
        k: g.kdim,
        transA: false,
        transB: false,
        accumulate: B !== undefined,
      });
    }
  }
};

export const conv2d_grad_input: CpuKernel<"conv2d_grad_input"> = ({ dy, w, out, attrs }, mem) => {
  const DY = mem.f(dy), W = mem.f(w), DX = mem.f(out);
  const g = geometry(attrs, "conv2d_grad_input", { x: DX.length, w: W.length, y: DY.length });
  if (depthwise(g)) return depthwiseGradInput(g, DY, W, DX);
  const { n, cin, cout, groups } = attrs;
  const col = g.pointwise ? null : scratch("col", g.kdim * g.ohw);
  const acc = g.pointwise ? null : scratch("acc", g.cing * g.hw);
  // d(col) = W_g^T dY_g. W_g is stored [coutg, kdim]: transpose every group once, not once per image.
  const wt = scratch("wt", cout * g.kdim);
  for (let gi = 0; gi < groups; gi++) {
    const base = gi * g.coutg * g.kdim;
    for (let o = 0; o < g.coutg; o++) {
      for (let r = 0; r < g.kdim; r++) wt[base + r * g.coutg + o] = W[base + o * g.kdim + r];
    }
  }
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < groups; gi++) {
      const xOff = (b * cin + gi * g.cing) * g.hw;
      gemm({
        a: wt,
        aOff: gi * g.coutg * g.kdim,
        b: DY,
        bOff: (b * cout + gi * g.coutg) * g.ohw,
        c: col ?? DX,
        cOff: col ? 0 : xOff,
        m: g.kdim,
        n: g.ohw,
        k: g.coutg,
        transA: false,
        transB: false,
        accumulate: false,
      });
      if (!col || !acc) continue;
      col2im(g, col, acc);
      for (let i = 0; i < g.cing * g.hw; i++) DX[xOff + i] = acc[i];
    }
  }
};

export const conv2d_grad_weight: CpuKernel<"conv2d_grad_weight"> = ({ x, dy, out, attrs }, mem) => {
  const X = mem.f(x), DY = mem.f(dy), DW = mem.f(out);
  const g = geometry(attrs, "conv2d_grad_weight", { x: X.length, w: DW.length, y: DY.length });
  if (depthwise(g)) return depthwiseGradWeight(g, X, DY, DW);
  const { n, cin, cout, groups } = attrs;
  const col = g.pointwise ? null : scratch("col", g.kdim * g.ohw);
  const acc = scratch("acc", cout * g.kdim);
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < groups; gi++) {
      const xOff = (b * cin + gi * g.cing) * g.hw;
      if (col) im2col(g, X, xOff, col);
      // dW_g += dY_g col^T: col is [kdim, ohw], i.e. B stored [N, K] for this product.
      gemm({
        a: DY,
        aOff: (b * cout + gi * g.coutg) * g.ohw,
        b: col ?? X,
        bOff: col ? 0 : xOff,
        c: acc,
        cOff: gi * g.coutg * g.kdim,
        m: g.coutg,
        n: g.kdim,
        k: g.ohw,
        transA: false,
        transB: true,
        accumulate: b > 0,
      });
    }
  }
  for (let i = 0; i < cout * g.kdim; i++) DW[i] = acc[i];
};

// One input channel per group: output channel co reads input channel floor(co / coutg) only.
function depthwise(g: Geometry): boolean {
  return g.cing === 1 && g.coutg <= 4;
}

function depthwiseForward(
  g: Geometry,
  X: FloatArray,
  W: FloatArray,
  B: FloatArray | undefined,
  Y: FloatArray,
) {
  const { n, cin, cout, kh, kw, w, outW, strideH: sh, strideW: sw } = g.a;
  const { ys, xs, ohw, hw, coutg } = g;
  const taps = kh * kw;
  const plane = scratch("plane", ohw);
  for (let b = 0; b < n; b++) {
    for (let co = 0; co < cout; co++) {
      const xOff = (b * cin + Math.floor(co / coutg)) * hw;
      plane.fill(B ? B[co] : 0);
      for (let ky = 0; ky < kh; ky++) {
        const yLo = ys.lo[ky], yHi = ys.hi[ky], offY = ys.off[ky];
        for (let kx = 0; kx < kw; kx++) {
          const wv = W[co * taps + ky * kw + kx];
          const xLo = xs.lo[kx], xHi = xs.hi[kx], offX = xs.off[kx];
          for (let oh = yLo; oh < yHi; oh++) {
            const p = oh * outW, src = xOff + (oh * sh + offY) * w + offX;
            for (let ow = xLo; ow < xHi; ow++) plane[p + ow] += wv * X[src + ow * sw];
          }
        }
      }
      Y.set(plane, (b * cout + co) * ohw);
    }
  }
}

function depthwiseGradInput(g: Geometry, DY: FloatArray, W: FloatArray, DX: FloatArray) {
  const { n, cin, cout, kh, kw, w, outW, strideH: sh, strideW: sw } = g.a;
  const { ys, xs, ohw, hw, coutg } = g;
  const taps = kh * kw;
  const plane = scratch("plane", hw);
  for (let b = 0; b < n; b++) {
    for (let ci = 0; ci < cin; ci++) {
      plane.fill(0);
      for (let co = ci * coutg; co < (ci + 1) * coutg; co++) {
        const dyOff = (b * cout + co) * ohw;
        for (let ky = 0; ky < kh; ky++) {
          const yLo = ys.lo[ky], yHi = ys.hi[ky], offY = ys.off[ky];
          for (let kx = 0; kx < kw; kx++) {
            const wv = W[co * taps + ky * kw + kx];
            const xLo = xs.lo[kx], xHi = xs.hi[kx], offX = xs.off[kx];
            for (let oh = yLo; oh < yHi; oh++) {
              const p = dyOff + oh * outW, dst = (oh * sh + offY) * w + offX;
              for (let ow = xLo; ow < xHi; ow++) plane[dst + ow * sw] += wv * DY[p + ow];
            }
          }
        }
      }
      DX.set(plane, (b * cin + ci) * hw);
    }
  }
}

function depthwiseGradWeight(g: Geometry, X: FloatArray, DY: FloatArray, DW: FloatArray) {
  const { n, cin, cout, kh, kw, w, outW, strideH: sh, strideW: sw } = g.a;
  const { ys, xs, ohw, hw, coutg } = g;
  for (let co = 0; co < cout; co++) {
    const ci = Math.floor(co / coutg);
    for (let ky = 0; ky < kh; ky++) {
      const yLo = ys.lo[ky], yHi = ys.hi[ky], offY = ys.off[ky];
      for (let kx = 0; kx < kw; kx++) {
        const xLo = xs.lo[kx], xHi = xs.hi[kx], offX = xs.off[kx];
        let s = 0;
        for (let b = 0; b < n; b++) {
          const xOff = (b * cin + ci) * hw, dyOff = (b * cout + co) * ohw;
          for (let oh = yLo; oh < yHi; oh++) {
            const p = dyOff + oh * outW, src = xOff + (oh * sh + offY) * w + offX;
            for (let ow = xLo; ow < xHi; ow++) s += DY[p + ow] * X[src + ow * sw];
          }
        }
        DW[(co * kh + ky) * kw + kx] = s;
      }
    }
  }
}
