/**
 * Backend decorators of the governor.
 *
 * GuardedBackend records what is allocated inside a transaction, so the runtime guard (guard.ts) can undo a
 * step that ran out of memory: every storage born during it in a transient category (activations, saved,
 * workspace, grads; a partial graph holds its saved tensors through nodes nobody can reach any more) is
 * released; persistent state created lazily in the step (optimizer moments) is kept.
 *
 * MemoryCappedBackend gives any backend a soft cap that throws OutOfMemoryError like a full device: tests and
 * the governor table use it to simulate small devices on the CPU backend.
 */
import { type AllocOptions, type Backend, OutOfMemoryError, type Storage } from "../backend/backend.ts";
import { BackendDecorator } from "../backend/decorator.ts";
import type { Category } from "../memory/ledger.ts";

const TRANSIENT: readonly Category[] = ["activations", "saved", "workspace", "grads"];

export interface AllocationFailure {
  /** What the failing allocation asked for, and the ledger's live bytes then. */
  requestedBytes: number;
  liveBytes: number;
}

export class GuardedBackend extends BackendDecorator {
  #born: Storage[] | null = null;
  #failure: AllocationFailure | null = null;

  override alloc(length: number, options: AllocOptions): Storage {
    try {
      const s = super.alloc(length, options);
      this.#born?.push(s);
      return s;
    } catch (e) {
      if (e instanceof OutOfMemoryError && this.#born) {
        this.#failure = { requestedBytes: length * 4, liveBytes: this.ledger.liveBytes };
      }
      throw e;
    }
  }

  /** Start recording allocations (one transaction at a time). */
  begin(): void {
    if (this.#born) throw new Error("GuardedBackend.begin(): a transaction is already open");
    this.#born = [];
    this.#failure = null;
  }

  /** Stop recording; the allocations stay. */
  commit(): void {
    this.#born = null;
  }

  /**
   * Release every transient storage born since begin(), whoever still holds it, and close the transaction.
   * Returns the allocation that failed, if one did.
   */
  rollback(): AllocationFailure | null {
    const born = this.#born ?? [];
    this.#born = null;
    for (const s of born) {
      if (!TRANSIENT.includes(s.category)) continue;
      while (s.refs > 0) this.release(s);
    }
    return this.#failure;
  }
}

/** A soft memory cap over a backend: an allocation past `limitBytes` live bytes throws OutOfMemoryError. */
export class MemoryCappedBackend extends BackendDecorator {
  /** When set to n, the n-th allocation from now throws OutOfMemoryError once (an OOM at a chosen point). */
  failAfterAllocs: number | undefined;
  /** Allocations so far. */
  allocations = 0;

  constructor(inner: Backend, public limitBytes: number) {
    super(inner);
  }

  override alloc(length: number, options: AllocOptions): Storage {
    const bytes = length * 4;
    const forced = this.failAfterAllocs !== undefined && --this.failAfterAllocs <= 0;
    if (forced) this.failAfterAllocs = undefined;
    if (forced || this.ledger.liveBytes + bytes > this.limitBytes) {
      throw new OutOfMemoryError(
        `alloc(): ${bytes} bytes of ${options.category} would exceed the memory limit of ${this.limitBytes} ` +
          `bytes (${this.ledger.liveBytes} live${forced ? ", simulated" : ""})`,
        bytes,
      );
    }
    this.allocations++;
    return super.alloc(length, options);
  }
}
