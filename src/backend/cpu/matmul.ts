/**
 * CPU reference matmul, and the GEMM core the convolution kernels reuse (im2col and 1x1 convs are GEMMs).
 *
 * Sums are carried in float64 (a JS number or a Float64Array row) and rounded once when stored, so the f32
 * reference is at least as accurate as any device kernel it is compared with.
 */
import type { CpuKernel, FloatArray } from "../cpu.ts";
import { scratch } from "./scratch.ts";

/** One C[M,N] (=|+=) op(A) op(B) (+ bias[N]) on arrays with element offsets. */
export interface Gemm {
  a: FloatArray;
  aOff: number;
  b: FloatArray;
  bOff: number;
  c: FloatArray;
  cOff: number;
  m: number;
  n: number;
  k: number;
  /** A is stored [K, M]. */
  transA: boolean;
  /** B is stored [N, K]. */
  transB: boolean;
  accumulate: boolean;
  /** Per-column bias, bias[j] added to every row. */
  bias?: FloatArray;
}

/** The accumulator row, reused across calls: allocating one per image in a conv shows on small problems. */
let rowScratch = new Float64Array(1024);

function scratchRow(n: number): Float64Array {
  if (rowScratch.length < n) rowScratch = new Float64Array(n);
  return rowScratch;
}

export function gemm(g: Gemm): void {
  const { m, n, k, b, bOff, c, cOff, bias, accumulate } = g;
  let a: FloatArray = g.a, aOff = g.aOff;
  if (g.transA) {
    // Transpose A once (into scratch) so the loops below always read rows of A contiguously.
    const t = scratch("transpose", m * k);
    for (let p = 0; p < k; p++) {
      const src = aOff + p * m;
      for (let i = 0; i < m; i++) t[i * k + p] = a[src + i];
    }
    a = t;
    aOff = 0;
  }
  if (g.transB) {
    // Both operands are row-major along K: dot products of contiguous rows, four columns per pass so each
    // A element loaded serves four products (about 2x over one column at a time in V8).
    for (let i = 0; i < m; i++) {
      const ai = aOff + i * k, ci = cOff + i * n;
      let j = 0;
      for (; j + 4 <= n; j += 4) {
        const b0 = bOff + j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let p = 0; p < k; p++) {
          const av = a[ai + p];
          s0 += av * b[b0 + p];
          s1 += av * b[b1 + p];
          s2 += av * b[b2 + p];
          s3 += av * b[b3 + p];
        }
        store(c, ci + j, s0, bias ? bias[j] : 0, accumulate);
        store(c, ci + j + 1, s1, bias ? bias[j + 1] : 0, accumulate);
        store(c, ci + j + 2, s2, bias ? bias[j + 2] : 0, accumulate);
        store(c, ci + j + 3, s3, bias ? bias[j + 3] : 0, accumulate);
      }
      for (; j < n; j++) {
        const bj = bOff + j * k;
        let s = 0;
        for (let p = 0; p < k; p++) s += a[ai + p] * b[bj + p];
        store(c, ci + j, s, bias ? bias[j] : 0, accumulate);
      }
    }
    return;
  }
  // i-k-j order: A elements scale contiguous rows of B into a float64 accumulator row, four rows of B per
  // pass so each accumulator load/store serves four products.
  const acc = scratchRow(n);
  for (let i = 0; i < m; i++) {
    const ai = aOff + i * k, ci = cOff + i * n;
    if (bias) { for (let j = 0; j < n; j++) acc[j] = bias[j]; }
    else acc.fill(0, 0, n);
    let p = 0;
    for (; p + 4 <= k; p += 4) {
      const a0 = a[ai + p], a1 = a[ai + p + 1], a2 = a[ai + p + 2], a3 = a[ai + p + 3];
      const b0 = bOff + p * n, b1 = b0 + n, b2 = b1 + n, b3 = b2 + n;
      for (let j = 0; j < n; j++) acc[j] += a0 * b[b0 + j] + a1 * b[b1 + j] + a2 * b[b2 + j] + a3 * b[b3 + j];
    }
    for (; p < k; p++) {
      const av = a[ai + p], bp = bOff + p * n;
      for (let j = 0; j < n; j++) acc[j] += av * b[bp + j];
    }
    if (accumulate) { for (let j = 0; j < n; j++) c[ci + j] += acc[j]; }
    else for (let j = 0; j < n; j++) c[ci + j] = acc[j];
  }
}

function store(c: FloatArray, i: number, s: number, bias: number, accumulate: boolean): void {
  c[i] = accumulate ? c[i] + s + bias : s + bias;
}

function need(what: string, have: number, want: number): void {
  if (have < want) throw new Error(`matmul: ${what} holds ${have} elements, the attributes need ${want}`);
}

export const matmul: CpuKernel<"matmul"> = ({ a, b, bias, out, attrs }, mem) => {
  const { batch, m, n, k, transA, transB, strideA, strideB, strideC, accumulate } = attrs;
  const A = mem.f(a), B = mem.f(b), C = mem.f(out);
  const biasArr = bias ? mem.f(bias) : undefined;
  // Out-of-range reads of a typed array yield undefined (NaN downstream): fail loudly instead.
  need("a", A.length, (batch - 1) * strideA + m * k);
  need("b", B.length, (batch - 1) * strideB + k * n);
  need("out", C.length, (batch - 1) * strideC + m * n);
  if (biasArr) need("bias", biasArr.length, n);
  for (let i = 0; i < batch; i++) {
    gemm({
      a: A,
      aOff: i * strideA,
      b: B,
      bOff: i * strideB,
      c: C,
      cOff: i * strideC,
      m,
      n,
      k,
      transA,
      transB,
      accumulate,
      bias: biasArr,
    });
  }
};
