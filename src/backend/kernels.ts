/**
 * The closed set of primitive kernels every backend implements, with their inputs and attributes.
 *
 * This file is the contract between backends: `cpu` (src/backend/cpu/) is the reference definition of each
 * kernel and `webgpu` (kernels/*.wgsl) must agree with it. Composite ops (softmax cross-entropy, entropy,
 * adapters) are built in src/ops/ from these; add a kernel here only when composing would cost a benchmark.
 *
 * Layout conventions: tensors are dense, row-major, NCHW for images. All float storages hold f32 on devices
 * (the CPU backend may hold f64 for gradient checks); masks are u32 words, 32 elements per word, element i
 * in bit (i % 32) of word floor(i / 32).
 */
import type { Storage } from "./backend.ts";

/** Elementwise functions of one input. `alpha`/`beta` are the clip bounds for `clip`. */
export type UnaryOp =
  | "identity"
  | "neg"
  | "relu"
  | "relu6"
  | "clip"
  | "hardswish"
  | "hardsigmoid"
  | "sigmoid"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "square"
  | "abs"
  | "sign"
  | "erf";

/**
 * Elementwise functions of two inputs, broadcast by strides (a stride of 0 repeats the element).
 * pow: a^b, with numpy's real semantics: a negative base gives a real result only for an integer exponent
 * (sign from its parity), else NaN; b = 2 is exactly a*a, b = 1 exactly a, b = 0.5 exactly sqrt(a).
 * eq: 1 where a == b, else 0 (ONNX Equal; NaN equals nothing).
 */
export type BinaryOp = "add" | "sub" | "mul" | "div" | "max" | "min" | "pow" | "eq";

/**
 * A strided view of up to 6 dims: element i (an index over `shape`) sits at offset + sum(i[d] * strides[d]).
 * Strides may be 0 (broadcast) or negative (a reversed slice); every addressed element must lie inside the
 * storage.
 */
export interface StridedView {
  offset: number;
  strides: number[];
}

/**
 * 2-D pooling over x [n, c, h, w] into [n, c, outH, outW]. The window of output (oh, ow) starts at input row
 * oh*strideH - padTop (column likewise) and takes kh x kw taps dilationH/W apart. Taps outside the input
 * are padding: max ignores them (-inf); avg counts them in the divisor only with countIncludePad, and then
 * only up to the padded extent (h + padBottom, w + padRight), as PyTorch and onnxruntime do with ceil_mode.
 * A window with no tap inside the input gives -inf (max) or 0 (avg). Avg requires dilation 1.
 */
export interface Pool2dAttrs {
  op: "max" | "avg";
  n: number;
  c: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padTop: number;
  padLeft: number;
  padBottom: number;
  padRight: number;
  dilationH: number;
  dilationW: number;
  outH: number;
  outW: number;
  countIncludePad: boolean;
}

export interface Conv2dAttrs {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padH: number; // top and bottom (symmetric)
  padW: number; // left and right (symmetric)
  dilationH: number;
  dilationW: number;
  groups: number;
  outH: number;
  outW: number;
}

/**
 * Each kernel: named storages (inputs first, outputs last) plus `attrs`. Outputs are overwritten unless the
 * kernel documents `accumulate`. Element counts are in elements, never bytes.
 */
export interface KernelSpecs {
  /** out[i] = value, i < n. */
  fill: { out: Storage; attrs: { n: number; value: number } };
  /** out[dstOffset + i] = x[srcOffset + i], i < n. */
  copy: { x: Storage; out: Storage; attrs: { n: number; srcOffset: number; dstOffset: number } };
  /**
   * out = f(x) elementwise over n elements. relu6 = clip(0, 6); clip = min(max(x, alpha), beta);
   * hardsigmoid = clip(x/6 + 1/2, 0, 1) (PyTorch's, ONNX HardSigmoid alpha=1/6 beta=0.5); hardswish = x*hardsigmoid(x).
   * erf: the error function (GELU's building block); backends may approximate it to 2e-7 absolute.
   */
  unary: { x: Storage; out: Storage; attrs: { n: number; op: UnaryOp; alpha?: number; beta?: number } };
  /**
   * dx = dy * f'(x) for an activation, from its saved input x. Derivatives at kinks follow PyTorch:
   * relu'(0)=0; relu6/clip' is 1 strictly inside (lo, hi) and 0 at and outside the bounds;
   * hardswish'(x) = 0 for x < -3, 1 for x > 3, else (2x+3)/6 (PyTorch uses x <= 3 for the middle branch);
   * hardsigmoid'(x) = 1/6 strictly inside (-3, 3) else 0; sigmoid' = s(1-s); erf'(x) = 2/sqrt(pi) exp(-x^2).
   */
  unary_grad: {
    x: Storage;
    dy: Storage;
    out: Storage;
    attrs: { n: number; op: UnaryOp; alpha?: number; beta?: number };
  };
  /**
   * Pack a 1-bit mask of x: bit i set where lo < x[i] < hi (strict). One window covers every mask the
   * codecs need: relu (0, +big), relu6 (0, 6), clip (alpha, beta), hardsigmoid (-3, 3), and MobileTL's
   * step approximation of hardswish (threshold in src/memory/). Use +-3.0e38 for an open side.
   * out has ceil(n/32) words; bits past n are 0.
   */
  mask_pack: { x: Storage; out: Storage; attrs: { n: number; lo: number; hi: number } };
  mask_grad: { mask: Storage; dy: Storage; out: Storage; attrs: { n: number; scale: number } };
  /**
   * Affine quantisation of a saved activation (src/memory/codecs_quant.ts), CPU reference in cpu/quant.ts.
   * Groups are `groupSize` consecutive elements (the last may be shorter); per group g with lo = min,
   * hi = max of its elements: params[2g] = scale = f32((hi - lo) / (2^bits - 1)), params[2g+1] = lo.
   * q[i] = clamp(floor(f32(x[i] - lo) / scale + 0.5), 0, 2^bits - 1), 0 where scale is 0. out packs
   * k = 32/bits codes per u32 word: element i in bits [(i % k) * bits, + bits) of word floor(i / k); unused
   * high bits are 0. Inputs must be finite. Round trip bound: |x - dequantize(q)| <= scale/2 (plus f32
   * rounding of the division, a few ulp of scale).
   */
  quantize: {
    x: Storage;
    params: Storage;
    out: Storage;
    attrs: { n: number; bits: 4 | 8; groupSize: number };
  };
  /** out[i] = params[2g+1] + q[i] * params[2g] for the codes packed by `quantize` (same attrs). */
  dequantize: {
    packed: Storage;
    params: Storage;
    out: Storage;
    attrs: { n: number; bits: 4 | 8; groupSize: number };
  };
  /**
   * IEEE binary16 of each f32, round to nearest even (|x| beyond the f16 range becomes +-inf, f32
   * subnormals become +-0, NaN stays NaN), two per u32 word: element i in the low 16 bits of word
   * floor(i / 2) when i is even, the high 16 bits when odd; the unused half of a last word is 0.
   */
  f16_pack: { x: Storage; out: Storage; attrs: { n: number } };
  /** out[i] = the f32 value of half i packed by f16_pack (exact: every f16 is an f32). */
  f16_unpack: { packed: Storage; out: Storage; attrs: { n: number } };
  /**
   * out[idx] = a[ia] op b[ib] over the dense output shape (rank <= 6); aStrides/bStrides give each input's
   * element stride per output dim (0 where broadcast).
   */
  binary: {
    a: Storage;
    b: Storage;
    out: Storage;
    attrs: { op: BinaryOp; shape: number[]; aStrides: number[]; bStrides: number[] };
  };
  /**
   * out[out view at i] = x[x view at i] for every index i of `shape` (rank <= 6): the one data-movement
   * kernel behind transpose, slice, pad (fill + copy into the interior), expand, concat and split (one copy
   * per part), gather of constant indices, and their gradients. A bit copy (f32 or u32 alike). The out view
   * must not address an element twice; x and out must be different storages.
   */
  strided_copy: {
    x: Storage;
    out: Storage;
    attrs: { shape: number[]; x: StridedView; out: StridedView };
  };
  /**
   * out[i] = cond[ic] != 0 ? a[ia] : b[ib] over the dense output shape (rank <= 6), each input broadcast by
   * its strides as in `binary` (ONNX Where; cond holds 0/1 floats, as `eq` writes them). A NaN condition
   * counts as true (it is not 0).
   */
  where: {
    cond: Storage;
    a: Storage;
    b: Storage;
    out: Storage;
    attrs: { shape: number[]; condStrides: number[]; aStrides: number[]; bStrides: number[] };
  };
  /**
   * Max or average pooling (Pool2dAttrs). argmax (u32, one per output, max only, optional) receives the
   * index ih*w + iw within the image plane of the first maximal tap in row-major window order (a NaN tap
   * wins, as in PyTorch; a window without input taps gives 0xffffffff and no gradient). It is what pool2d_grad routes max
   * gradients by.
   */
  pool2d: { x: Storage; out: Storage; argmax?: Storage; attrs: Pool2dAttrs };
  /**
   * dx [n, c, h, w] of pool2d from dy [n, c, outH, outW] (overwrites): max sends each dy to the input
   * element its argmax names; avg spreads dy / divisor over the window's input taps. Each dx element sums
   * the contributions of every window it lies in (overlapping windows add).
   */
  pool2d_grad: { dy: Storage; argmax?: Storage; out: Storage; attrs: Pool2dAttrs };
  /** out = alpha * x + beta * (accumulate ? out : 0), n elements (scaling, grad accumulation). */
  axpy: { x: Storage; out: Storage; attrs: { n: number; alpha: number; accumulate: boolean } };
  /**
   * Reduce the middle axis of x viewed as [outer, size, inner] into out [outer, inner].
   * mean divides the sum by size.
   */
  reduce: {
    x: Storage;
    out: Storage;
    attrs: { op: "sum" | "mean" | "max"; outer: number; size: number; inner: number };
  };
  /**
   * Batched matmul: for b < batch, C_b[M,N] = op(A_b) op(B_b) (+ bias[N] if given) (+ C_b if accumulate).
   * op(A) is A[M,K] or, with transA, A stored [K,M]; likewise B[K,N] or [N,K]. A_b starts at b*strideA
   * (0 to share one matrix), likewise B, C.
   */
  matmul: {
    a: Storage;
    b: Storage;
    bias?: Storage;
    out: Storage;
    attrs: {
      batch: number;
      m: number;
      n: number;
      k: number;
      transA: boolean;
      transB: boolean;
      strideA: number;
      strideB: number;
      strideC: number;
      accumulate: boolean;
    };
  };
  /** y[n, co, oh, ow] = bias[co] + sum over the group's ci, kh, kw of x * w; w is [cout, cin/groups, kh, kw]. */
  conv2d: { x: Storage; w: Storage; bias?: Storage; out: Storage; attrs: Conv2dAttrs };
  /** dx from dy [n, cout, outH, outW] and w: the transposed convolution. */
  conv2d_grad_input: { dy: Storage; w: Storage; out: Storage; attrs: Conv2dAttrs };
  /** dw [cout, cin/groups, kh, kw] = sum over n, oh, ow of dy * x (overwrites). */
  conv2d_grad_weight: { x: Storage; dy: Storage; out: Storage; attrs: Conv2dAttrs };
  /**
   * Per-channel batch statistics of x [n, c, hw]: mean[c] and biased variance var[c] (divide by n*hw).
   */
  bn_stats: { x: Storage; mean: Storage; variance: Storage; attrs: { n: number; c: number; hw: number } };
  /**
   * xhat = (x - mean[c]) / sqrt(var[c] + eps); y = gamma[c] * xhat + beta[c]. xhat is written only when
   * given (it is what backward saves).
   */
  bn_apply: {
    x: Storage;
    mean: Storage;
    variance: Storage;
    gamma: Storage;
    beta: Storage;
    out: Storage;
    xhat?: Storage;
    attrs: { n: number; c: number; hw: number; eps: number };
  };
  /**
   * Sums per channel over n and hw: sumDy[c] = sum dy, sumDyXhat[c] = sum dy*xhat. These are dbeta and
   * dgamma, and the two reductions BN's input gradient needs.
   */
  bn_grad_reduce: {
    dy: Storage;
    xhat: Storage;
    sumDy: Storage;
    sumDyXhat: Storage;
    attrs: { n: number; c: number; hw: number };
  };
  /**
   * Input gradient of BN. training: dx = gamma*invstd * (dy - sumDy/m - xhat*sumDyXhat/m), m = n*hw;
   * eval (running statistics are constants): dx = gamma*invstd * dy. invstd = 1/sqrt(var + eps).
   */
  bn_grad_input: {
    dy: Storage;
    xhat?: Storage;
    gamma: Storage;
    variance: Storage;
    sumDy?: Storage;
    sumDyXhat?: Storage;
    out: Storage;
    attrs: { n: number; c: number; hw: number; eps: number; training: boolean };
  };
  /** Row-wise softmax (or log-softmax) of x [rows, cols], max-subtracted. */
  softmax: { x: Storage; out: Storage; attrs: { rows: number; cols: number; log: boolean } };
  /**
   * Adam / AdamW step in place, bias-corrected (step >= 1). decoupled: AdamW (p -= lr*wd*p); else L2 added to
   * the gradient. m, v are updated in place.
   */
  adam: {
    param: Storage;
    grad: Storage;
    m: Storage;
    v: Storage;
    attrs: {
      n: number;
      lr: number;
      beta1: number;
      beta2: number;
      eps: number;
      weightDecay: number;
      decoupled: boolean;
      step: number;
    };
  };
  /**
   * SGD with momentum, PyTorch semantics: g = grad + wd*p; buf = momentum*buf + (1-dampening)*g (buf = g on
   * the first step, signalled by firstStep); p -= lr * (nesterov ? g + momentum*buf : buf).
   * momentum 0: p -= lr * g and momentumBuf is neither read nor written (PyTorch keeps no buffer; callers
   * may pass a 1-element placeholder).
   */
  sgd: {
    param: Storage;
    grad: Storage;
    momentumBuf: Storage;
    attrs: {
      n: number;
      lr: number;
      momentum: number;
      dampening: number;
      weightDecay: number;
      nesterov: boolean;
      firstStep: boolean;
    };
  };
}

export type KernelName = keyof KernelSpecs;
export type KernelArgs<K extends KernelName> = KernelSpecs[K];
