/** CPU reference kernels: fill, copy, unary, unary_grad, masks, binary, axpy. */
import type { CpuKernel } from "../cpu.ts";
import type { BinaryOp, UnaryOp } from "../kernels.ts";

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/**
 * erf to about 1e-15 (JS has no Math.erf): for |x| <= 3 the series 2/sqrt(pi) e^(-x^2) sum 2^n x^(2n+1) /
 * (1*3*...*(2n+1)), whose terms are all positive (no cancellation); beyond, 1 - erfc from its continued
 * fraction (Lentz), which converges fast there.
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (Number.isNaN(x)) return x;
  if (a > 6) return Math.sign(x);
  if (a <= 3) {
    let term = a, sum = a;
    for (let n = 1; n < 200 && term > sum * 1e-17; n++) {
      term *= (2 * a * a) / (2 * n + 1);
      sum += term;
    }
    return Math.sign(x) * TWO_OVER_SQRT_PI * Math.exp(-a * a) * sum;
  }
  // erfc(a) = e^(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...))))).
  const tiny = 1e-300;
  let f = a, c = a, d = 0;
  for (let k = 1; k < 200; k++) {
    const ak = k / 2;
    d = a + ak * d;
    d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = a + ak / c;
    if (Math.abs(c) < tiny) c = tiny;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.sign(x) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f);
}

/** numpy's real a^b: a negative base has a real power only for an integer exponent. */
export function pow(a: number, b: number): number {
  if (b === 2) return a * a;
  if (b === 1) return a;
  if (b === 0.5) return Math.sqrt(a);
  return Math.pow(a, b);
}

export const fill: CpuKernel<"fill"> = ({ out, attrs }, mem) => {
  mem.f(out).fill(attrs.value, 0, attrs.n);
};

export const copy: CpuKernel<"copy"> = ({ x, out, attrs }, mem) => {
  const src = x.dtype === "u32" ? mem.u(x) : mem.f(x);
  const dst = out.dtype === "u32" ? mem.u(out) : mem.f(out);
  for (let i = 0; i < attrs.n; i++) dst[attrs.dstOffset + i] = src[attrs.srcOffset + i];
};

function hardsigmoid(v: number): number {
  return Math.min(Math.max(v / 6 + 0.5, 0), 1);
}

export function unaryFn(op: UnaryOp, alpha = 0, beta = 0): (v: number) => number {
  switch (op) {
    case "identity":
      return (v) => v;
    case "neg":
      return (v) => -v;
    case "relu":
      return (v) => (v > 0 ? v : 0);
    case "relu6":
      return (v) => Math.min(Math.max(v, 0), 6);
    case "clip":
      return (v) => Math.min(Math.max(v, alpha), beta);
    case "hardsigmoid":
      return hardsigmoid;
    case "hardswish":
      return (v) => v * hardsigmoid(v);
    case "sigmoid":
      return (v) => 1 / (1 + Math.exp(-v));
    case "exp":
      return Math.exp;
    case "log":
      return Math.log;
    case "sqrt":
      return Math.sqrt;
    case "rsqrt":
      return (v) => 1 / Math.sqrt(v);
    case "square":
      return (v) => v * v;
    case "abs":
      return Math.abs;
    case "sign":
      return Math.sign;
    case "erf":
      return erf;
  }
}

/** f'(x), following PyTorch's choices at the kinks (see kernels.ts). */
export function unaryDerivative(op: UnaryOp, alpha = 0, beta = 0): (v: number) => number {
  switch (op) {
    case "identity":
      return () => 1;
    case "neg":
      return () => -1;
    case "relu":
      return (v) => (v > 0 ? 1 : 0);
    case "relu6":
      return (v) => (v > 0 && v < 6 ? 1 : 0);
    case "clip":
      return (v) => (v > alpha && v < beta ? 1 : 0);
    case "hardsigmoid":
      return (v) => (v > -3 && v < 3 ? 1 / 6 : 0);
    case "hardswish":
      return (v) => (v < -3 ? 0 : v > 3 ? 1 : (2 * v + 3) / 6);
    case "sigmoid":
      return (v) => {
        const s = 1 / (1 + Math.exp(-v));
        return s * (1 - s);
      };
    case "exp":
      return Math.exp;
    case "log":
      return (v) => 1 / v;
    case "sqrt":
      return (v) => 0.5 / Math.sqrt(v);
    case "rsqrt":
      return (v) => -0.5 / (v * Math.sqrt(v));
    case "square":
      return (v) => 2 * v;
    case "abs":
      return Math.sign;
    case "sign":
      return () => 0;
    case "erf":
      return (v) => TWO_OVER_SQRT_PI * Math.exp(-v * v);
  }
}

export const unary: CpuKernel<"unary"> = ({ x, out, attrs }, mem) => {
  const f = unaryFn(attrs.op, attrs.alpha, attrs.beta);
  const src = mem.f(x), dst = mem.f(out);
  for (let i = 0; i < attrs.n; i++) dst[i] = f(src[i]);
};

export const unary_grad: CpuKernel<"unary_grad"> = ({ x, dy, out, attrs }, mem) => {
  const d = unaryDerivative(attrs.op, attrs.alpha, attrs.beta);
  const xs = mem.f(x), g = mem.f(dy), dst = mem.f(out);
  for (let i = 0; i < attrs.n; i++) dst[i] = g[i] * d(xs[i]);
};

export const mask_pack: CpuKernel<"mask_pack"> = ({ x, out, attrs }, mem) => {
  const xs = mem.f(x), words = mem.u(out);
  const { n, lo, hi } = attrs;
  words.fill(0, 0, Math.ceil(n / 32));
  for (let i = 0; i < n; i++) {
    const v = xs[i];
    if (v > lo && v < hi) words[i >>> 5] |= 1 << (i & 31);
  }
};

export const mask_grad: CpuKernel<"mask_grad"> = ({ mask, dy, out, attrs }, mem) => {
  const words = mem.u(mask), g = mem.f(dy), dst = mem.f(out);
  for (let i = 0; i < attrs.n; i++) dst[i] = (words[i >>> 5] >>> (i & 31)) & 1 ? g[i] * attrs.scale : 0;
};

export function binaryFn(op: BinaryOp): (a: number, b: number) => number {
  switch (op) {
    case "add":
      return (a, b) => a + b;
    case "sub":
      return (a, b) => a - b;
    case "mul":
      return (a, b) => a * b;
    case "div":
      return (a, b) => a / b;
    case "max":
      return Math.max;
    case "min":
      return Math.min;
    case "pow":
      return pow;
    case "eq":
      return (a, b) => (a === b ? 1 : 0);
  }
  throw new Error(`binary: unknown op "${op}"`);
}

export const binary: CpuKernel<"binary"> = ({ a, b, out, attrs }, mem) => {
  const f = binaryFn(attrs.op);
  const A = mem.f(a), B = mem.f(b), C = mem.f(out);
  const { shape, aStrides, bStrides } = attrs;
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  const total = shape.reduce((p, d) => p * d, 1);
  let ia = 0, ib = 0;
  for (let i = 0; i < total; i++) {
    C[i] = f(A[ia], B[ib]);
    // Odometer increment over the output shape, moving each input by its stride.
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      ia += aStrides[d];
      ib += bStrides[d];
      if (idx[d] < shape[d]) break;
      ia -= aStrides[d] * shape[d];
      ib -= bStrides[d] * shape[d];
      idx[d] = 0;
    }
  }
};

export const axpy: CpuKernel<"axpy"> = ({ x, out, attrs }, mem) => {
  const X = mem.f(x), Y = mem.f(out);
  const { n, alpha, accumulate } = attrs;
  if (accumulate) { for (let i = 0; i < n; i++) Y[i] += alpha * X[i]; }
  else for (let i = 0; i < n; i++) Y[i] = alpha * X[i];
};
