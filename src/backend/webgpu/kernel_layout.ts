/**
 * WebGPU data movement and selection (kernels/layout.wgsl): strided_copy, where.
 *
 * Both address every operand through strides. Dims contiguous for every operand are merged first (fewer
 * divisions per element in the shader). When a storage exceeds the binding limit the problem is cut along
 * its outermost dim into pieces whose address ranges fit a window, recursing into single indices when even
 * one index is too wide.
 */
import type { Storage } from "../backend.ts";
import type { GpuContext, GpuKernelTable } from "./context.ts";
import { bindWindow, maxBindingElements, type Window } from "./kernel_grid.ts";
import { chunkLimit, strideGroups, WG } from "./kernel_chunks.ts";

const MAX_RANK = 6;

/** One operand: where index 0 of the (sub)problem sits, and its element stride per dim. */
export interface StridedOperand {
  s: Storage;
  offset: number;
  strides: number[];
}

/** Drop size-1 dims and merge neighbours that are contiguous for every operand. */
export function mergeDims(shape: number[], strides: number[][]): { shape: number[]; strides: number[][] } {
  const out: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = out.length - 1;
    if (last >= 0 && strides.every((s, k) => st[k][last] === s[d] * shape[d])) {
      out[last] *= shape[d];
      strides.forEach((s, k) => (st[k][last] = s[d]));
    } else {
      out.push(shape[d]);
      strides.forEach((s, k) => st[k].push(s[d]));
    }
  }
  return out.length ? { shape: out, strides: st } : { shape: [1], strides: strides.map(() => [0]) };
}

/** Lowest and highest element an operand addresses over `shape`. */
function span(shape: number[], op: StridedOperand): [number, number] {
  let lo = op.offset, hi = op.offset;
  shape.forEach((d, i) => {
    const e = (d - 1) * op.strides[i];
    if (e < 0) lo += e;
    else hi += e;
  });
  return [lo, hi];
}

/**
 * Call `emit` for pieces of the problem whose operands each fit one binding window; `offsets` are the
 * element offsets of each piece's index 0 inside its operand's window.
 */
export function stridedPieces(
  ctx: GpuContext,
  what: string,
  shape: number[],
  ops: StridedOperand[],
  emit: (shape: number[], wins: Window[], offsets: number[]) => void,
): void {
  for (const op of ops) {
    const [lo, hi] = span(shape, op);
    if (lo < 0 || hi >= op.s.length) {
      throw new Error(`${what}(): elements [${lo}, ${hi}] are outside storage ${op.s.id} of ${op.s.length}`);
    }
  }
  const max = maxBindingElements(ctx), lim = chunkLimit(ctx);
  const piece = (sh: number[], parts: StridedOperand[]) => {
    const wins = parts.map((op) => {
      const [lo, hi] = span(sh, op);
      return bindWindow(ctx, op.s, lo, hi + 1);
    });
    // bindWindow's rem is where `lo` sits in the window; index 0 sits (offset - lo) after it.
    emit(sh, wins, parts.map((op, k) => wins[k].rem + op.offset - span(sh, op)[0]));
  };
  const fits = (sh: number[], op: StridedOperand) => {
    const [lo, hi] = span(sh, op);
    return op.s.length <= max || hi - lo + 1 <= lim;
  };
  const split = (sh: number[], parts: StridedOperand[]): void => {
    if (parts.every((op) => fits(sh, op))) return piece(sh, parts);
    const rest = sh.slice(1);
    let count = sh[0];
    for (const op of parts) {
      if (op.s.length <= max) continue;
      const [lo, hi] = span(rest, { ...op, strides: op.strides.slice(1) });
      const step = Math.abs(op.strides[0]);
      count = Math.min(count, step === 0 ? count : Math.floor((lim - (hi - lo + 1)) / step) + 1);
    }
    if (count >= 1 && count < sh[0]) {
      for (let p = 0; p < sh[0]; p += count) {
        const c = Math.min(count, sh[0] - p);
        split([c, ...rest], parts.map((op) => ({ ...op, offset: op.offset + p * op.strides[0] })));
      }
      return;
    }
    if (sh.length === 1) {
      throw new Error(`${what}(): cannot split [${shape}] to fit the storage binding limit`);
    }
    for (let p = 0; p < sh[0]; p++) {
      split(
        rest,
        parts.map((op) => ({ ...op, offset: op.offset + p * op.strides[0], strides: op.strides.slice(1) })),
      );
    }
  };
  split(shape, ops);
}

/** The uniform words of a shape and per-operand strides, padded to rank 6 (leading dims 1, stride 0). */
function dimWords(shape: number[], strides: number[][]): number[] {
  const pad = MAX_RANK - shape.length;
  return [
    ...Array(pad).fill(1),
    ...shape,
    ...strides.flatMap((s) => [...Array(pad).fill(0), ...s]),
  ];
}

function dense(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

function checkRank(what: string, shape: number[], strides: number[][]): void {
  if (shape.length > MAX_RANK || strides.some((s) => s.length !== shape.length)) {
    throw new Error(
      `${what}(): shape [${shape}] and strides [${strides.join("] [")}] must have equal ranks <= 6`,
    );
  }
}

export const layoutKernels: Pick<GpuKernelTable, "strided_copy" | "where"> = {
  strided_copy: ({ x, out, attrs }, ctx) => {
    checkRank("strided_copy", attrs.shape, [attrs.x.strides, attrs.out.strides]);
    if (attrs.shape.some((d) => d === 0)) return;
    const m = mergeDims(attrs.shape, [attrs.x.strides, attrs.out.strides]);
    const ops = [
      { s: x, offset: attrs.x.offset, strides: m.strides[0] },
      { s: out, offset: attrs.out.offset, strides: m.strides[1] },
    ];
    stridedPieces(ctx, "strided_copy", m.shape, ops, (shape, [wx, wo], [ox, oo]) => {
      const n = shape.reduce((p, d) => p * d, 1);
      const strides = ops.map((op) => op.strides.slice(op.strides.length - shape.length));
      ctx.dispatch({
        shader: "layout",
        entry: "strided_copy",
        constants: { WG },
        bindings: [wx.binding, wo.binding],
        uniforms: { dims: dimWords(shape, strides), n, x_off: ox, out_off: oo },
        workgroups: [strideGroups(ctx, n)],
      });
    });
  },

  where: ({ cond, a, b, out, attrs }, ctx) => {
    const { shape } = attrs;
    checkRank("where", shape, [attrs.condStrides, attrs.aStrides, attrs.bStrides]);
    if (shape.some((d) => d === 0)) return;
    const m = mergeDims(shape, [attrs.condStrides, attrs.aStrides, attrs.bStrides, dense(shape)]);
    const ops = [cond, a, b, out].map((s, k) => ({ s, offset: 0, strides: m.strides[k] }));
    stridedPieces(ctx, "where", m.shape, ops, (sh, wins, offs) => {
      const n = sh.reduce((p, d) => p * d, 1);
      // Pieces are whole trailing blocks, so the output stays dense inside each one.
      const strides = ops.slice(0, 3).map((op) => op.strides.slice(op.strides.length - sh.length));
      ctx.dispatch({
        shader: "layout",
        entry: "where_select",
        constants: { WG },
        bindings: wins.map((w) => w.binding),
        uniforms: {
          dims: dimWords(sh, strides),
          n,
          c_off: offs[0],
          a_off: offs[1],
          b_off: offs[2],
          out_off: offs[3],
        },
        workgroups: [strideGroups(ctx, n)],
      });
    });
  },
};
