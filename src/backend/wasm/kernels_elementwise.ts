/**
 * Wrappers of the elementwise, reduction, softmax and optimizer kernels (native/elementwise.c, reduce.c,
 * optim.c): check every extent the attributes imply against the storages, then call the C entry. A unary or
 * binary op the C code does not know yet (added to kernels.ts since it was written) runs the CPU reference
 * over the shared memory, so the backend stays complete.
 */
import type { BinaryOp, UnaryOp } from "../kernels.ts";
import * as cpu from "../cpu/elementwise.ts";
import { ints, need, type WasmKernel } from "./context.ts";

/** Op codes in the order of the C enums (native/elementwise.c). */
const UNARY_OPS: UnaryOp[] = [
  "identity",
  "neg",
  "relu",
  "relu6",
  "clip",
  "hardswish",
  "hardsigmoid",
  "sigmoid",
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "square",
  "abs",
  "sign",
];
const BINARY_OPS: BinaryOp[] = ["add", "sub", "mul", "div", "max", "min"];
const REDUCE_OPS = ["sum", "mean", "max"];

/** The C op code, or -1 for an op the C kernels do not have: those run the CPU reference (checked the same). */
function code<T>(table: T[], op: T): number {
  return table.indexOf(op);
}

export const fill: WasmKernel<"fill"> = ({ out, attrs }, ctx) => {
  ints("fill", { n: attrs.n });
  need("fill", "out", out, attrs.n);
  ctx.exports.fill(ctx.addr(out), attrs.n, attrs.value);
};

export const copy: WasmKernel<"copy"> = ({ x, out, attrs }, ctx) => {
  ints("copy", attrs);
  need("copy", "x", x, attrs.srcOffset + attrs.n);
  need("copy", "out", out, attrs.dstOffset + attrs.n);
  ctx.exports.copy(ctx.addr(x) + 4 * attrs.srcOffset, ctx.addr(out) + 4 * attrs.dstOffset, attrs.n);
};

export const unary: WasmKernel<"unary"> = ({ x, out, attrs }, ctx) => {
  ints("unary", { n: attrs.n });
  need("unary", "x", x, attrs.n);
  need("unary", "out", out, attrs.n);
  const op = code(UNARY_OPS, attrs.op);
  if (op < 0) return cpu.unary({ x, out, attrs }, ctx.cpu);
  ctx.exports.unary(ctx.addr(x), ctx.addr(out), attrs.n, op, attrs.alpha ?? 0, attrs.beta ?? 0);
};

export const unary_grad: WasmKernel<"unary_grad"> = ({ x, dy, out, attrs }, ctx) => {
  ints("unary_grad", { n: attrs.n });
  for (const [name, s] of [["x", x], ["dy", dy], ["out", out]] as const) need("unary_grad", name, s, attrs.n);
  const op = code(UNARY_OPS, attrs.op);
  if (op < 0) return cpu.unary_grad({ x, dy, out, attrs }, ctx.cpu);
  ctx.exports.unary_grad(
    ctx.addr(x),
    ctx.addr(dy),
    ctx.addr(out),
    attrs.n,
    op,
    attrs.alpha ?? 0,
    attrs.beta ?? 0,
  );
};

export const mask_pack: WasmKernel<"mask_pack"> = ({ x, out, attrs }, ctx) => {
  ints("mask_pack", { n: attrs.n });
  need("mask_pack", "x", x, attrs.n);
  need("mask_pack", "out", out, Math.ceil(attrs.n / 32));
  ctx.exports.mask_pack(ctx.addr(x), ctx.addr(out), attrs.n, attrs.lo, attrs.hi);
};

export const mask_grad: WasmKernel<"mask_grad"> = ({ mask, dy, out, attrs }, ctx) => {
  ints("mask_grad", { n: attrs.n });
  need("mask_grad", "mask", mask, Math.ceil(attrs.n / 32));
  need("mask_grad", "dy", dy, attrs.n);
  need("mask_grad", "out", out, attrs.n);
  ctx.exports.mask_grad(ctx.addr(mask), ctx.addr(dy), ctx.addr(out), attrs.n, attrs.scale);
};

export const binary: WasmKernel<"binary"> = ({ a, b, out, attrs }, ctx) => {
  const { shape, aStrides, bStrides } = attrs;
  const rank = shape.length;
  if (rank > 6 || aStrides.length !== rank || bStrides.length !== rank) {
    throw new Error(
      `binary: shape and strides must have one rank <= 6, got ${rank}, ${aStrides.length}, ${bStrides.length}`,
    );
  }
  const total = shape.reduce((p, d) => p * d, 1);
  let lastA = 0, lastB = 0;
  for (let d = 0; d < rank; d++) {
    ints("binary", {
      [`shape[${d}]`]: shape[d],
      [`aStrides[${d}]`]: aStrides[d],
      [`bStrides[${d}]`]: bStrides[d],
    });
    lastA += (shape[d] - 1) * aStrides[d];
    lastB += (shape[d] - 1) * bStrides[d];
  }
  need("binary", "out", out, total);
  if (total === 0) return;
  need("binary", "a", a, lastA + 1);
  need("binary", "b", b, lastB + 1);
  const op = code(BINARY_OPS, attrs.op);
  if (op < 0) return cpu.binary({ a, b, out, attrs }, ctx.cpu);
  const [ps, pa, pb] = ctx.ints(shape, aStrides, bStrides);
  ctx.exports.binary(ctx.addr(a), ctx.addr(b), ctx.addr(out), op, rank, ps, pa, pb);
};

export const axpy: WasmKernel<"axpy"> = ({ x, out, attrs }, ctx) => {
  ints("axpy", { n: attrs.n });
  need("axpy", "x", x, attrs.n);
  need("axpy", "out", out, attrs.n);
  ctx.exports.axpy(ctx.addr(x), ctx.addr(out), attrs.n, attrs.alpha, attrs.accumulate ? 1 : 0);
};

export const reduce: WasmKernel<"reduce"> = ({ x, out, attrs }, ctx) => {
  const { outer, size, inner } = attrs;
  ints("reduce", { outer, size, inner });
  need("reduce", "x", x, outer * size * inner);
  need("reduce", "out", out, outer * inner);
  const op = code(REDUCE_OPS, attrs.op);
  if (op < 0) throw new Error(`reduce: unknown op "${attrs.op}"`);
  ctx.exports.reduce(ctx.addr(x), ctx.addr(out), op, outer, size, inner);
};

export const softmax: WasmKernel<"softmax"> = ({ x, out, attrs }, ctx) => {
  const { rows, cols } = attrs;
  ints("softmax", { rows, cols });
  need("softmax", "x", x, rows * cols);
  need("softmax", "out", out, rows * cols);
  ctx.exports.softmax(ctx.addr(x), ctx.addr(out), rows, cols, attrs.log ? 1 : 0);
};

export const adam: WasmKernel<"adam"> = ({ param, grad, m, v, attrs }, ctx) => {
  const { n, lr, beta1, beta2, eps, weightDecay, decoupled, step } = attrs;
  ints("adam", { n });
  if (!(step >= 1)) throw new Error(`adam: step must be >= 1, got ${step}`);
  for (const [name, s] of [["param", param], ["grad", grad], ["m", m], ["v", v]] as const) {
    need("adam", name, s, n);
  }
  // Bias corrections in double, as torch.optim.Adam (and the CPU reference) compute them.
  const stepSize = lr / (1 - Math.pow(beta1, step));
  const sqrtBc2 = Math.sqrt(1 - Math.pow(beta2, step));
  ctx.exports.adam(
    ctx.addr(param),
    ctx.addr(grad),
    ctx.addr(m),
    ctx.addr(v),
    n,
    lr,
    beta1,
    beta2,
    eps,
    weightDecay,
    decoupled ? 1 : 0,
    stepSize,
    sqrtBc2,
  );
};

export const sgd: WasmKernel<"sgd"> = ({ param, grad, momentumBuf, attrs }, ctx) => {
  const { n, lr, momentum, dampening, weightDecay, nesterov, firstStep } = attrs;
  ints("sgd", { n });
  need("sgd", "param", param, n);
  need("sgd", "grad", grad, n);
  // PyTorch keeps no momentum buffer when momentum is 0: it is then neither read nor written.
  if (momentum !== 0) need("sgd", "momentumBuf", momentumBuf, n);
  ctx.exports.sgd(
    ctx.addr(param),
    ctx.addr(grad),
    momentum !== 0 ? ctx.addr(momentumBuf) : 0,
    n,
    lr,
    momentum,
    dampening,
    weightDecay,
    nesterov ? 1 : 0,
    firstStep ? 1 : 0,
  );
};
