/**
 * One step of each method on the symbolic ledger, in the order the real code allocates: the input batch
 * (runAdaptation / trainSupervised), the forward, the loss head (composed from the same ops as
 * src/ops/loss.ts and src/methods/losses.ts), backward, the optimizer (state created lazily at its first
 * step, as src/ops/optim.ts does) and the method's extra state (EATA's Fisher and anchors, SAR's second
 * forward/backward at the perturbed weights). A few steps run in a row so that lazily created state is live
 * in the steady state, as it is from the second batch of a real run.
 *
 * Data-dependent branches take their most expensive side: EATA/SAR/EcoTTA filters keep at least one sample
 * (a batch that keeps none skips backward and peaks lower).
 */
import type { Forward, SimContext } from "./shapes.ts";
import type { Sim, SimTensor } from "./sim.ts";
import * as op from "./sim_ops.ts";
import type { GovernedMethod } from "./config.ts";
import type { EcottaPlan } from "./ecotta_sim.ts";

type T = SimTensor;

// ---- loss heads (ops/loss.ts, methods/losses.ts) ----

function entropyPerSample(s: Sim, logits: T): T {
  const p = op.softmax(s, logits, false);
  const lp = op.softmax(s, logits, true);
  const plp = op.mul(s, p, lp);
  const sm = op.reduceOp(s, plp, [1], false);
  const h = op.scale(s, sm);
  for (const t of [p, lp, plp, sm]) t.dispose();
  return h;
}

function entropy(s: Sim, logits: T): T {
  const h = entropyPerSample(s, logits);
  const loss = op.reduceOp(s, h, [0], false);
  h.dispose();
  return loss;
}

function crossEntropy(s: Sim, logits: T): T {
  const w = s.empty(logits.shape);
  const lp = op.softmax(s, logits, true);
  const picked = op.mul(s, lp, w);
  const loss = op.reduceOp(s, picked, [0, 1], false);
  for (const t of [w, lp, picked]) t.dispose();
  return loss;
}

export function weightedEntropy(s: Sim, logits: T): T {
  const h = entropyPerSample(s, logits);
  const w = s.empty([logits.shape[0]]);
  const hw = op.mul(s, h, w);
  const loss = op.reduceOp(s, hw, [0], false);
  for (const t of [h, w, hw]) t.dispose();
  return loss;
}

function ewcPenalty(s: Sim, params: T[], fisher: T[], anchors: T[]): T {
  let total: T | null = null;
  params.forEach((p, i) => {
    const d = op.sub(s, p, anchors[i]);
    const d2 = op.mul(s, d, d);
    const fd2 = op.mul(s, d2, fisher[i]);
    const sm = op.reduceOp(s, fd2, [0], false);
    for (const t of [d, d2, fd2]) t.dispose();
    if (total) {
      const next: T = op.add(s, total, sm);
      total.dispose();
      sm.dispose();
      total = next;
    } else total = sm;
  });
  const scaled = op.scale(s, total!);
  (total as T | null)?.dispose();
  return scaled;
}

/** Add a list of scalars left to right (EcoTTA's regulariser sum), disposing the parts. */
export function sumAll(s: Sim, parts: T[]): T {
  let total = parts[0];
  for (const r of parts.slice(1)) {
    const next = op.add(s, total, r);
    total.dispose();
    r.dispose();
    total = next;
  }
  return total;
}

// ---- optimizers (ops/optim.ts) ----

/** Lazily created optimizer state: `slots` tensors per parameter at its first update. */
export class SimOptimizer {
  readonly #state = new Map<T, T[]>();

  constructor(readonly ctx: SimContext, readonly slots: number) {}

  step(): void {
    const s = this.ctx.sim;
    for (const p of this.ctx.trainable()) {
      if (!p.grad || this.#state.has(p)) continue;
      this.#state.set(p, Array.from({ length: this.slots }, () => s.empty(p.shape, "optimizer")));
    }
  }
}

/** Optimizer slots of each method's default optimizer: Adam keeps m and v, SGD with momentum one buffer. */
export function optimizerSlots(method: GovernedMethod): number {
  return method === "tent" || method === "full" || method === "bias" || method === "mobiletl" ? 2 : 1;
}

// ---- steps ----

export interface StepProgram {
  forward: Forward;
  method: GovernedMethod;
  input: readonly number[];
  ecotta?: EcottaPlan;
}

/** Per-run state that outlives a step (optimizer, EATA's Fisher/anchors). */
export interface RunState {
  optimizer: SimOptimizer;
  fisher?: T[];
  anchors?: T[];
}

/** EATA estimates its Fisher information on the first 2 batches (eata.ts fisherBatches). */
const FISHER_BATCHES = 2;

/** Simulate batch number `k` (0-based) of a run. */
export function simulateStep(ctx: SimContext, program: StepProgram, state: RunState, k: number): void {
  const s = ctx.sim;
  const { method, forward } = program;
  const x = s.empty(program.input);
  if (method === "source" || method === "bn") {
    s.noGrad(() => forward(ctx, x)).dispose();
    x.dispose();
    return;
  }
  if (method === "full" || method === "bias" || method === "mobiletl") {
    const logits = forward(ctx, x);
    x.dispose();
    const loss = crossEntropy(s, logits);
    s.backward(loss);
    state.optimizer.step();
    ctx.zeroGrad();
    loss.dispose();
    logits.dispose();
    return;
  }
  if (method === "ecotta") {
    program.ecotta!.step(ctx, x, state.optimizer);
    x.dispose();
    return;
  }
  const fisherPhase = method === "eata" && k < FISHER_BATCHES;
  const logits = forward(ctx, x);
  let loss: T;
  if (method === "tent") loss = entropy(s, logits);
  else if (fisherPhase) loss = crossEntropy(s, logits);
  else {
    loss = weightedEntropy(s, logits);
    if (method === "eata" && state.fisher && state.anchors) {
      const ewc = ewcPenalty(s, ctx.trainable(), state.fisher, state.anchors);
      const total = op.add(s, loss, ewc);
      loss.dispose();
      ewc.dispose();
      loss = total;
    }
  }
  s.backward(loss);
  loss.dispose();
  logits.dispose();
  if (fisherPhase) {
    const params = ctx.trainable();
    state.fisher ??= params.map((p) => s.empty(p.shape, "optimizer"));
    for (const p of params) if (p.grad) s.empty(p.shape).dispose(); // grad * grad
    ctx.zeroGrad();
    if (k === FISHER_BATCHES - 1) state.anchors = params.map((p) => s.empty(p.shape, "optimizer"));
  } else if (method === "sar") {
    const params = ctx.trainable();
    const perturb = () => params.forEach((p) => s.empty(p.shape, "workspace").dispose());
    perturb();
    ctx.zeroGrad();
    const second = forward(ctx, x);
    const loss2 = weightedEntropy(s, second);
    s.backward(loss2);
    loss2.dispose();
    second.dispose();
    perturb();
    state.optimizer.step();
    ctx.zeroGrad();
  } else {
    state.optimizer.step();
    ctx.zeroGrad();
  }
  x.dispose();
}
