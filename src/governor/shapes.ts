/**
 * Static shape inference over a model: the forward of an nn Module tree (IrbNet, MobileNetV3-style nets,
 * Sequential and the layers of src/nn/layers.ts; imported ONNX graphs are in shapes_onnx.ts), replayed on the
 * symbolic ledger (sim.ts):
 * every output shape follows from the input shape and the layers' attributes, and every intermediate is
 * disposed where the real forward disposes it (chain() after the next module, an ONNX value after its last
 * use), because that decides what is live at the peak.
 */
import type { Tensor } from "../tensor.ts";
import { type Module, Sequential } from "../nn/module.ts";
import {
  BatchNorm2d,
  Conv2d,
  Flatten,
  GlobalAvgPool,
  Hardsigmoid,
  Hardswish,
  Identity,
  Linear,
  ReLU,
  ReLU6,
  Sigmoid,
} from "../nn/layers.ts";
import { InvertedResidual, IrbNet } from "../nn/mobilenet.ts";
import { InvertedResidualV3, SqueezeExcite } from "../nn/mobilenet_v3.ts";
import type { Sim, SimTensor } from "./sim.ts";
import * as op from "./sim_ops.ts";
import * as layers from "./sim_layers.ts";

/** What a method sets on the model before it runs (sampled from the real selection code, see config.ts). */
export interface MethodConfig {
  trains(t: Tensor): boolean;
  training(m: Module): boolean;
  tracks(bn: BatchNorm2d): boolean;
}

/** One simulated run's view of the model: parameters become symbolic leaves that collect gradients. */
export class SimContext {
  readonly #params = new Map<object, SimTensor>();

  constructor(readonly sim: Sim, readonly config: MethodConfig) {}

  /** The symbolic leaf of a real parameter or buffer (trainable as the method config says). */
  param(t: Tensor): SimTensor {
    return this.leaf(t, t.shape, this.config.trains(t));
  }

  /** A leaf keyed by any object (a parameter the estimator models without a real tensor: EcoTTA's meta nets). */
  leaf(key: object, shape: readonly number[], trains: boolean): SimTensor {
    let p = this.#params.get(key);
    if (!p) {
      p = this.sim.fixed(shape);
      p.requiresGrad = trains;
      this.#params.set(key, p);
    }
    return p;
  }

  /** A persistent constant of `shape` (an ONNX operand owned by the model). */
  constant(shape: readonly number[]): SimTensor {
    return this.sim.fixed(shape);
  }

  /** Leaves that train, in first-use order (an optimizer's parameter list). */
  trainable(): SimTensor[] {
    return [...this.#params.values()].filter((p) => p.requiresGrad);
  }

  /** Optimizer.zeroGrad / Module.zeroGrad: drop every parameter gradient. */
  zeroGrad(): void {
    for (const p of this.#params.values()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }
}

export type Forward = (ctx: SimContext, x: SimTensor) => SimTensor;

export function convLayer(ctx: SimContext, l: Conv2d, x: SimTensor): SimTensor {
  return layers.conv2d(ctx.sim, x, ctx.param(l.weight), l.bias ? ctx.param(l.bias) : null, {
    stride: l.stride,
    padding: l.padding,
    dilation: l.dilation,
    groups: l.groups,
  });
}

export function bnLayer(ctx: SimContext, l: BatchNorm2d, x: SimTensor): SimTensor {
  return layers.batchNorm2d(ctx.sim, x, {
    gamma: ctx.param(l.weight),
    beta: ctx.param(l.bias),
    training: ctx.config.training(l),
    updateStats: ctx.config.tracks(l),
  });
}

export function linearLayer(ctx: SimContext, l: Linear, x: SimTensor): SimTensor {
  return layers.linear(ctx.sim, x, ctx.param(l.weight), l.bias ? ctx.param(l.bias) : null);
}

/** nn/module.ts chain(): each intermediate is disposed once the next module has consumed it. */
export function chain(x: SimTensor, run: ((h: SimTensor) => SimTensor)[]): SimTensor {
  let h = x;
  for (const f of run) {
    const next = f(h);
    if (h !== x && next !== h) h.dispose();
    h = next;
  }
  return h;
}

/** Module.call over the module kinds the estimator knows; anything else fails naming it. */
export function callModule(ctx: SimContext, m: Module, x: SimTensor): SimTensor {
  const s = ctx.sim;
  const call = (c: Module) => (h: SimTensor) => callModule(ctx, c, h);
  if (m instanceof Conv2d) return convLayer(ctx, m, x);
  if (m instanceof BatchNorm2d) return bnLayer(ctx, m, x);
  if (m instanceof Linear) return linearLayer(ctx, m, x);
  if (m instanceof ReLU || m instanceof ReLU6) return op.windowed(s, x);
  if (m instanceof Hardswish) return op.smooth(s, x, "hardswish");
  if (m instanceof Hardsigmoid) return op.smooth(s, x, "hardsigmoid");
  if (m instanceof Sigmoid) return op.smooth(s, x, "sigmoid");
  if (m instanceof GlobalAvgPool) return op.globalAvgPool(s, x);
  if (m instanceof Flatten) return op.flatten(s, x, m.axis);
  if (m instanceof Identity) return x;
  if (m instanceof Sequential) return chain(x, m.layers.map(call));
  if (m instanceof IrbNet) return chain(x, [m.features, m.pool, m.flatten, m.classifier].map(call));
  if (m instanceof InvertedResidual || m instanceof InvertedResidualV3) {
    const y = callModule(ctx, m instanceof InvertedResidual ? m.conv : m.block, x);
    if (!m.useResidual) return y;
    const out = op.add(s, x, y);
    y.dispose();
    return out;
  }
  if (m instanceof SqueezeExcite) {
    const pooled = op.globalAvgPool(s, x);
    const h = convLayer(ctx, m.fc1, pooled);
    pooled.dispose();
    const r = op.windowed(s, h);
    h.dispose();
    const g = convLayer(ctx, m.fc2, r);
    r.dispose();
    const gate = op.smooth(s, g, "hardsigmoid");
    g.dispose();
    const out = op.mul(s, x, gate);
    gate.dispose();
    return out;
  }
  throw new Error(
    `estimate(): cannot infer the memory of a ${m.constructor.name} module (known: nn layers, Sequential, ` +
      `IrbNet, inverted residual blocks, squeeze-excite, ONNX graphs)`,
  );
}

/** Bytes of a module's parameters and buffers, plus the constants BN keeps when it is not affine. */
export function stateBytes(m: Module): number {
  let n = 0;
  for (const [, t] of m.namedState()) n += t.size;
  for (const [, c] of m.namedModules()) {
    if (c instanceof BatchNorm2d && !c.affine) n += 2 * c.runningMean.size;
  }
  return 4 * n;
}
