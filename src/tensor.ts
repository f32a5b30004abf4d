/**
 * Tensor: a shape over a refcounted backend storage. No autograd logic lives here; ops in src/ops/ attach a
 * GradNode when an input is on a trainable path.
 */
import type { Backend, DType, HostArray, Storage } from "./backend/backend.ts";
import type { Category } from "./memory/ledger.ts";
import type { GradNode } from "./autograd/tape.ts";

let nextTensorId = 1;

/** Tensors created inside `tidy` scopes, innermost last. */
const scopes: Set<Tensor>[] = [];

export interface TensorOptions {
  category?: Category;
  dtype?: DType;
  requiresGrad?: boolean;
  name?: string;
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`Invalid shape [${shape.join(", ")}]: dim ${d}`);
    n *= d;
  }
  return n;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

export class Tensor {
  readonly id = nextTensorId++;
  /** Set on parameters that an optimizer updates; ops propagate "needs grad" from these. */
  requiresGrad: boolean;
  grad: Tensor | null = null;
  /** The op that made this tensor, when it lies on a trainable path. */
  node: GradNode | null = null;
  name?: string;
  #disposed = false;

  constructor(
    readonly backend: Backend,
    readonly storage: Storage,
    readonly shape: readonly number[],
    options: { requiresGrad?: boolean; name?: string } = {},
  ) {
    this.requiresGrad = options.requiresGrad ?? false;
    this.name = options.name;
    scopes.at(-1)?.add(this);
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  get rank(): number {
    return this.shape.length;
  }

  get dtype(): DType {
    return this.storage.dtype;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Uninitialised tensor of `shape` (category defaults to activations). */
  static empty(backend: Backend, shape: readonly number[], options: TensorOptions = {}): Tensor {
    const storage = backend.alloc(sizeOf(shape), {
      dtype: options.dtype ?? "f32",
      category: options.category ?? "activations",
    });
    return new Tensor(backend, storage, [...shape], options);
  }

  static from(
    backend: Backend,
    data: ArrayLike<number>,
    shape: readonly number[],
    options: TensorOptions = {},
  ): Tensor {
    const n = sizeOf(shape);
    if (data.length !== n) {
      throw new Error(`Tensor.from(): ${data.length} values do not fill shape ${shapeString(shape)} (${n})`);
    }
    const t = Tensor.empty(backend, shape, options);
    backend.write(t.storage, data);
    return t;
  }

  static full(
    backend: Backend,
    shape: readonly number[],
    value: number,
    options: TensorOptions = {},
  ): Tensor {
    const t = Tensor.empty(backend, shape, options);
    backend.run("fill", { out: t.storage, attrs: { n: t.size, value } });
    return t;
  }

  static zeros(backend: Backend, shape: readonly number[], options: TensorOptions = {}): Tensor {
    return Tensor.full(backend, shape, 0, options);
  }

  /** A new tensor sharing this storage with another shape of the same size (no autograd; see ops/shape.ts). */
  view(shape: readonly number[]): Tensor {
    if (sizeOf(shape) !== this.size) {
      throw new Error(`view(): cannot view ${shapeString(this.shape)} as ${shapeString(shape)}`);
    }
    this.backend.retain(this.storage);
    return new Tensor(this.backend, this.storage, [...shape]);
  }

  async data(): Promise<HostArray> {
    this.#check("data");
    return await this.backend.read(this.storage);
  }

  async toArray(): Promise<number[]> {
    return Array.from(await this.data());
  }

  /** Release this tensor's reference to its storage. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.backend.release(this.storage);
    for (const s of scopes) s.delete(this);
  }

  #check(what: string): void {
    if (this.#disposed) throw new Error(`${what}(): tensor ${this.name ?? this.id} was disposed`);
  }
}

function collect(result: unknown, into: Set<Tensor>): void {
  if (result instanceof Tensor) into.add(result);
  else if (Array.isArray(result)) { for (const r of result) collect(r, into); }
  else if (result && typeof result === "object") { for (const r of Object.values(result)) collect(r, into); }
}

/**
 * Run fn and dispose every tensor it created except those it returns (TF.js's tidy). Tensors returned move to
 * the enclosing scope. Synchronous by design: an await inside would let unrelated tensors enter the scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  const kept = new Set<Tensor>();
  collect(result, kept);
  for (const t of scope) if (!kept.has(t)) t.dispose();
  const parent = scopes.at(-1);
  if (parent) { for (const t of kept) parent.add(t); }
  return result;
}

/** Remove t from every open tidy scope so it outlives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}
