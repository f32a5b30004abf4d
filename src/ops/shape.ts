/**
 * Shape ops: reshape and flatten. Both are views of the input's storage (no copy, nothing saved); the
 * gradient is dy viewed back in the input's shape.
 */
import { needsGrad, record } from "../autograd/tape.ts";
import { shapeString, type Tensor } from "../tensor.ts";

function viewOp(op: string, x: Tensor, shape: number[]): Tensor {
  const out = x.view(shape);
  if (!needsGrad(x)) return out;
  const xShape = x.shape;
  return record(op, out, [x], (dy) => [dy.view(xShape)]);
}

/** `shape` with its one -1 (if any) resolved against x's element count. */
export function resolveShape(
  xShape: readonly number[],
  shape: readonly number[],
  options: { op?: string } = {},
): number[] {
  const op = options.op ?? "reshape";
  const size = xShape.reduce((p, d) => p * d, 1);
  const fail = (why: string) =>
    new Error(
      `${op}(): cannot reshape ${shapeString(xShape)} (${size} elements) to ${shapeString(shape)}: ${why}`,
    );
  let free = -1, known = 1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (free >= 0) throw fail("more than one -1");
      free = i;
    } else if (!Number.isInteger(d) || d < 0) {
      throw fail(`dim ${d} is not a size`);
    } else {
      known *= d;
    }
  });
  const out = [...shape];
  if (free >= 0) {
    if (known === 0 || size % known !== 0) throw fail(`${size} is not a multiple of ${known}`);
    out[free] = size / known;
  } else if (known !== size) {
    throw fail(`${known} elements`);
  }
  return out;
}

/** x with a new shape of the same size; one dim may be -1 (inferred). A view: no data moves. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  return viewOp("reshape", x, resolveShape(x.shape, shape));
}

/**
 * ONNX Flatten: [d0..d(axis-1)] and [d(axis)..] each multiplied out, giving 2-D [outer, inner]. The default
 * axis 1 turns [N, C, H, W] into [N, C*H*W]; negative axes count from the end; axis 0 gives [1, size].
 */
export function flatten(x: Tensor, axis = 1): Tensor {
  if (!Number.isInteger(axis) || axis < -x.rank || axis > x.rank) {
    throw new Error(`flatten(): axis ${axis} is out of range for input ${shapeString(x.shape)}`);
  }
  const a = axis < 0 ? axis + x.rank : axis;
  const outer = x.shape.slice(0, a).reduce((p, d) => p * d, 1);
  const inner = x.shape.slice(a).reduce((p, d) => p * d, 1);
  return viewOp("flatten", x, [outer, inner]);
}
