/**
 * A backend that forwards everything to another one (burn's decorator pattern): subclasses override what
 * they add (a memory cap, allocation tracking for the runtime guard) and share the inner backend's ledger,
 * storages and kernels, so tensors made through a decorator are the inner backend's tensors.
 */
import type { Category, Ledger } from "../memory/ledger.ts";
import type { AllocOptions, Backend, HostArray, Storage } from "./backend.ts";
import type { KernelArgs, KernelName } from "./kernels.ts";

export class BackendDecorator implements Backend {
  constructor(readonly inner: Backend) {}

  get name(): string {
    return this.inner.name;
  }

  get ledger(): Ledger {
    return this.inner.ledger;
  }

  get floatPrecision(): "f32" | "f64" {
    return this.inner.floatPrecision;
  }

  get maxElements(): number {
    return this.inner.maxElements;
  }

  alloc(length: number, options: AllocOptions): Storage {
    return this.inner.alloc(length, options);
  }

  retain(s: Storage): void {
    this.inner.retain(s);
  }

  release(s: Storage): void {
    this.inner.release(s);
  }

  recategorize(s: Storage, category: Category, tag?: string): void {
    this.inner.recategorize(s, category, tag);
  }

  write(s: Storage, data: ArrayLike<number>, offset?: number): void {
    this.inner.write(s, data, offset);
  }

  read(s: Storage): Promise<HostArray> {
    return this.inner.read(s);
  }

  run<K extends KernelName>(kernel: K, args: KernelArgs<K>): void {
    this.inner.run(kernel, args);
  }

  sync(): Promise<void> {
    return this.inner.sync();
  }

  dispose(): void {
    this.inner.dispose();
  }
}

/** The backend under every decorator (to read a concrete backend's own settings, e.g. a memory cap). */
export function innermost(b: Backend): Backend {
  while (b instanceof BackendDecorator) b = b.inner;
  return b;
}
