/**
 * Module: a tree of layers with named parameters and buffers, PyTorch's nn.Module reduced to what training on a
 * device needs.
 *
 * Dotted names follow PyTorch's state_dict (own parameters, then own buffers, then children in insertion
 * order), so a model that mirrors a torch model loads its weights by name. Parameters and buffers are ledger
 * category "weights"; only parameters with requiresGrad receive gradients.
 *
 * Memory: containers dispose each intermediate output as soon as the next layer has consumed it. What
 * backward needs is held by the autograd nodes through their Saved handles, so the ledger's peak reflects what
 * backward truly keeps, not every activation of the forward.
 */
import { withTag } from "../autograd/tape.ts";
import { shapeString, type Tensor } from "../tensor.ts";

/** Chooses parameters: `name` is the dotted state name, `owner` the module that holds the parameter. */
export type ParamFilter = (name: string, p: Tensor, owner: Module) => boolean;

/**
 * Called after every `Module.call` with the module, its output and its input (for tracing shapes, activation
 * bytes and the op graph, src/nn/trace.ts).
 */
export type ForwardHook = (module: Module, out: Tensor, input: Tensor) => void;

const forwardHooks = new Set<ForwardHook>();

/** Observe every module output until the returned function is called. */
export function onForward(hook: ForwardHook): () => void {
  forwardHooks.add(hook);
  return () => forwardHooks.delete(hook);
}

interface ParamEntry {
  name: string;
  tensor: Tensor;
  owner: Module;
}

export abstract class Module {
  /** Train mode: batch statistics in BatchNorm. Set with train()/eval() so children follow. */
  training = true;
  /** Saved bytes made inside this module's forward are reported under this tag by the ledger. */
  tag?: string;
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();
  /** Tensors the module owns but does not expose as state (constants); disposed with it. */
  readonly #owned: Tensor[] = [];

  /** The computation. Callers use call(), which also applies the tag and the forward hooks. */
  abstract forward(x: Tensor): Tensor;

  call(x: Tensor): Tensor {
    const tag = this.tag;
    const out = tag === undefined ? this.forward(x) : withTag(tag, () => this.forward(x));
    for (const h of forwardHooks) h(this, out, x);
    return out;
  }

  protected addParam(name: string, t: Tensor): Tensor {
    this.#checkName(name);
    t.name ??= name;
    this.#params.set(name, t);
    return t;
  }

  protected addBuffer(name: string, t: Tensor): Tensor {
    this.#checkName(name);
    t.name ??= name;
    this.#buffers.set(name, t);
    return t;
  }

  protected addChild<M extends Module>(name: string, m: M): M {
    this.#checkName(name);
    this.#children.set(name, m);
    return m;
  }

  /** The parameter `name` of this module itself, or null. */
  param(name: string): Tensor | null {
    return this.#params.get(name) ?? null;
  }

  /**
   * Put `t` in place of the parameter `name` (a new classifier for another label set): same name and owner,
   * the old tensor disposed. Conv2d and Linear read their parameters through param(), so the swap takes
   * effect at once.
   */
  replaceParam(name: string, t: Tensor): void {
    const old = this.#params.get(name);
    if (!old) throw new Error(`Module: no parameter "${name}" to replace`);
    t.name ??= old.name;
    this.#params.set(name, t);
    old.grad?.dispose();
    old.dispose();
  }

  protected addOwned(t: Tensor): Tensor {
    this.#owned.push(t);
    return t;
  }

  #checkName(name: string): void {
    if (!name || name.includes(".")) throw new Error(`Module: invalid member name "${name}"`);
    if (this.#params.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new Error(`Module: member "${name}" is already defined`);
    }
  }

  children(): Module[] {
    return [...this.#children.values()];
  }

  /** This module (name "") and every descendant, depth first, with dotted names. */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [k, c] of this.#children) out.push(...c.namedModules(join(prefix, k)));
    return out;
  }

  #paramEntries(prefix: string, into: ParamEntry[]): ParamEntry[] {
    for (const [k, t] of this.#params) into.push({ name: join(prefix, k), tensor: t, owner: this });
    for (const [k, c] of this.#children) c.#paramEntries(join(prefix, k), into);
    return into;
  }

  namedParameters(filter?: ParamFilter): [string, Tensor][] {
    return this.#paramEntries("", [])
      .filter((e) => !filter || filter(e.name, e.tensor, e.owner))
      .map((e) => [e.name, e.tensor]);
  }

  parameters(filter?: ParamFilter): Tensor[] {
    return this.namedParameters(filter).map(([, t]) => t);
  }

  /** Parameters that currently receive gradients. */
  trainableParameters(): Tensor[] {
    return this.parameters((_n, p) => p.requiresGrad);
  }

  /** Make exactly the parameters chosen by `filter` trainable (e.g. TENT: BN affine only); returns them. */
  setTrainable(filter: ParamFilter): Tensor[] {
    const chosen: Tensor[] = [];
    for (const e of this.#paramEntries("", [])) {
      e.tensor.requiresGrad = filter(e.name, e.tensor, e.owner);
      if (e.tensor.requiresGrad) chosen.push(e.tensor);
    }
    return chosen;
  }

  namedBuffers(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, t] of this.#buffers) out.push([join(prefix, k), t]);
    for (const [k, c] of this.#children) out.push(...c.namedBuffers(join(prefix, k)));
    return out;
  }

  /** Parameters and buffers in PyTorch state_dict order. */
  namedState(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, t] of this.#params) out.push([join(prefix, k), t]);
    for (const [k, t] of this.#buffers) out.push([join(prefix, k), t]);
    for (const [k, c] of this.#children) out.push(...c.namedState(join(prefix, k)));
    return out;
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** A copy of every parameter and buffer as float32, keyed by dotted name. */
  async state(): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {};
    for (const [k, t] of this.namedState()) {
      const d = await t.data();
      out[k] = d instanceof Float32Array ? d : Float32Array.from(d);
    }
    return out;
  }

  /**
   * Overwrite parameters and buffers from a state keyed by dotted name. strict (default): every entry must be
   * present and every key known, except PyTorch's `num_batches_tracked` (momentum is always set here).
   */
  loadState(state: Record<string, ArrayLike<number>>, options: { strict?: boolean } = {}): void {
    const strict = options.strict ?? true;
    const entries = this.namedState();
    const known = new Set(entries.map(([k]) => k));
    if (strict) {
      const unknown = Object.keys(state).filter((k) => !known.has(k) && !k.endsWith("num_batches_tracked"));
      if (unknown.length) {
        throw new Error(`loadState(): unknown keys ${unknown.slice(0, 5).map((k) => `"${k}"`).join(", ")}`);
      }
      const missing = entries.filter(([k]) => !(k in state)).map(([k]) => `"${k}"`);
      if (missing.length) throw new Error(`loadState(): missing keys ${missing.slice(0, 5).join(", ")}`);
    }
    for (const [k, t] of entries) {
      const v = state[k];
      if (v === undefined) continue;
      if (v.length !== t.size) {
        throw new Error(
          `loadState(): "${k}" has ${v.length} values but the model's is ${shapeString(t.shape)}`,
        );
      }
    }
    for (const [k, t] of entries) if (state[k] !== undefined) t.backend.write(t.storage, state[k]);
  }

  /** Dispose gradients of every parameter. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Free every parameter, gradient, buffer and owned constant of this module and its children. */
  dispose(): void {
    this.zeroGrad();
    for (const [, t] of this.namedState()) t.dispose();
    for (const [, m] of this.namedModules()) for (const t of m.#owned) t.dispose();
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

/**
 * Run x through modules in order, disposing each intermediate output once the next module has consumed it.
 * x itself belongs to the caller and is never disposed.
 */
export function chain(x: Tensor, modules: Module[]): Tensor {
  let h = x;
  for (const m of modules) {
    const next = m.call(h);
    if (h !== x && next !== h) h.dispose();
    h = next;
  }
  return h;
}

/** Children named "0", "1", ... as torch.nn.Sequential. */
export class Sequential extends Module {
  readonly layers: Module[];

  constructor(layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.addChild(String(i), m));
  }

  forward(x: Tensor): Tensor {
    return chain(x, this.layers);
  }
}
