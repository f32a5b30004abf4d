/**
 * Reverse-mode autograd over the primitive kernels (micrograd's shape, on a backend).
 *
 * An op that has an input on a trainable path records a GradNode: which inputs need gradients, a backward
 * closure, and the Saved handles it keeps. Saved tensors go through a codec (src/memory/codecs.ts) so the
 * ledger sees exactly what backward keeps. `backward(loss)` walks nodes in reverse topological order,
 * accumulates into leaf `.grad` (ledger category "grads") and releases every node's saved state.
 */
import { Tensor, tidy } from "../tensor.ts";

/** Something kept for backward; `bytes` is what the ledger counts for it. */
export interface Saved {
  readonly bytes: number;
  release(): void;
}

export interface GradNode {
  readonly op: string;
  /** Inputs in op order; null where no gradient flows (a frozen tensor, an integer index). */
  readonly inputs: (Tensor | null)[];
  /** Given d(loss)/d(output), return d(loss)/d(input) for each non-null input (null where none is needed). */
  backward(dy: Tensor): (Tensor | null)[];
  readonly saved: Saved[];
  released: boolean;
}

let gradEnabled = true;
let currentTag: string | undefined;

/** True when recording is on and any input needs a gradient. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t && (t.requiresGrad || t.node)) return true;
  return false;
}

/** The tensor itself if it is on a trainable path, else null (for GradNode.inputs). */
export function onPath(t: Tensor | null | undefined): Tensor | null {
  return t && (t.requiresGrad || t.node) ? t : null;
}

/** Run fn without recording any node (inference, evaluation, BN-adapt). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Tag saves made inside fn (e.g. with a block name) so the ledger reports saved bytes per block. */
export function withTag<T>(tag: string, fn: () => T): T {
  const prev = currentTag;
  currentTag = tag;
  try {
    return fn();
  } finally {
    currentTag = prev;
  }
}

export function activeTag(): string | undefined {
  return currentTag;
}

/** Attach a node to `out`. Call only when needsGrad(...) was true. */
export function record(
  op: string,
  out: Tensor,
  inputs: (Tensor | null)[],
  backward: (dy: Tensor) => (Tensor | null)[],
  saved: Saved[] = [],
): Tensor {
  out.node = { op, inputs: inputs.map(onPath), backward, saved, released: false };
  return out;
}

/** A node of any tape-shaped graph (the real tape, and the governor's simulated one). */
export interface TopoNode<N> {
  readonly inputs: readonly ({ node: N | null } | null)[];
}

/** Nodes reachable from root, every node after all of its inputs' nodes. */
export function topoOrder<N extends TopoNode<N>>(root: N): N[] {
  const order: N[] = [];
  const seen = new Set<N>();
  // Iterative DFS: real nets are deep enough to make recursion risky.
  const stack: [N, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const child = node.inputs[i]?.node;
      if (child && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  return order;
}

function accumulate(into: Tensor | undefined, g: Tensor): Tensor {
  if (!into) return g;
  into.backend.run("axpy", {
    x: g.storage,
    out: into.storage,
    attrs: { n: g.size, alpha: 1, accumulate: true },
  });
  g.dispose();
  return into;
}

/**
 * Backpropagate from a scalar `loss` (or from `seed` = d(loss)/d(output) of a non-scalar output).
 * Leaf tensors with requiresGrad get `.grad` (added to any existing grad). All nodes are released after.
 */
export function backward(loss: Tensor, seed?: Tensor): void {
  const root = loss.node;
  if (!root) {
    throw new Error(
      `backward(): tensor ${
        loss.name ?? loss.id
      } is not on a trainable path (no parameter needs its gradient)`,
    );
  }
  if (!seed && loss.size !== 1) {
    throw new Error(
      `backward(): loss must be a scalar, got shape [${loss.shape.join(", ")}]; pass a seed gradient`,
    );
  }
  const grads = new Map<GradNode, Tensor>();
  grads.set(root, seed ?? Tensor.full(loss.backend, loss.shape, 1, { category: "grads" }));
  const order = topoOrder(root);
  for (let i = order.length - 1; i >= 0; i--) {
    const node = order[i];
    const dy = grads.get(node);
    grads.delete(node);
    if (!dy) {
      release(node);
      continue;
    }
    const dxs = tidy(() => node.backward(dy));
    dy.dispose();
    release(node);
    node.inputs.forEach((input, j) => {
      const dx = dxs[j];
      if (!input || !dx) {
        dx?.dispose();
        return;
      }
      if (dx.size !== input.size) {
        throw new Error(
          `backward(): ${node.op} returned a gradient of shape [${dx.shape}] for input [${input.shape}]`,
        );
      }
      if (input.node) {
        grads.set(input.node, accumulate(grads.get(input.node), dx));
      } else if (input.requiresGrad) {
        if (dx.storage.category !== "grads") dx.backend.recategorize(dx.storage, "grads");
        const g = dx.shape.join() === input.shape.join() ? dx : reshaped(dx, input.shape);
        input.grad = input.grad ? accumulate(input.grad, g) : g;
      } else {
        dx.dispose();
      }
    });
  }
  for (const g of grads.values()) g.dispose();
  loss.node = null;
}

function reshaped(t: Tensor, shape: readonly number[]): Tensor {
  const v = t.view(shape);
  t.dispose();
  return v;
}

function release(node: GradNode): void {
  if (node.released) return;
  node.released = true;
  for (const s of node.saved) s.release();
}

/** Drop a graph without running backward (e.g. a step skipped after filtering): frees every saved tensor. */
export function releaseGraph(out: Tensor): void {
  if (!out.node) return;
  for (const node of topoOrder(out.node)) release(node);
  out.node = null;
}
