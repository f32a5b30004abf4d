/**
 * EcoTTA's step on the symbolic ledger (src/methods/ecotta.ts): the frozen backbone runs as feature blocks
 * and a head (ecotta_partition.ts: an IrbNet's own feature blocks, or an ONNX MobileNetV2's blocks rebuilt
 * as conv/BN/ReLU6 units with residuals), a meta network beside each of K partitions (BN_k on the frozen
 * output plus a k x k convolution from the partition input, ecotta_meta.ts) and the self-distilled L1
 * regulariser. Only the meta networks train, so the frozen parts keep 1-bit masks and per-channel
 * variances once the input of a partition carries a gradient.
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, Conv2d, Linear } from "../nn/layers.ts";
import { IrbNet } from "../nn/mobilenet.ts";
import { splitBlocks } from "../methods/ecotta.ts";
import {
  bnLayer,
  callModule,
  chain,
  convLayer,
  type Forward,
  linearLayer,
  type SimContext,
} from "./shapes.ts";
import type { SimTensor } from "./sim.ts";
import * as op from "./sim_ops.ts";
import * as layers from "./sim_layers.ts";
import { type SimOptimizer, sumAll, weightedEntropy } from "./steps.ts";

type T = SimTensor;

interface Stage {
  run: (ctx: SimContext, x: T) => T;
  inChannels: number;
  outChannels: number;
  stride: number;
}

export interface EcottaOptions {
  /** Feature blocks run frozen before the first partition, without a meta network (0). */
  leading?: number;
  /** K (4). */
  partitions?: number;
  /** Meta conv kernel size (3). */
  kernelSize?: number;
  /** Weight of the regulariser (0.5); 0 drops it. */
  lambda?: number;
  /** BN_k normalises with batch statistics (after a warm-up) instead of as a per-channel affine (false). */
  batchStats?: boolean;
}

export interface EcottaPlan {
  /** Parameters and buffers of the meta networks, in bytes. */
  metaBytes: number;
  /** Trainable elements of the meta networks (conv weight and bias, BN affine). */
  trainable: number;
  step(ctx: SimContext, x: T, optimizer: SimOptimizer): void;
}

function geometry(name: string, block: Module): Omit<Stage, "run"> {
  const layers = block.namedModules().map(([, m]) => m)
    .filter((m): m is Conv2d | BatchNorm2d => m instanceof Conv2d || m instanceof BatchNorm2d);
  const convs = layers.filter((l): l is Conv2d => l instanceof Conv2d);
  if (!convs.length) throw new Error(`estimate(): EcoTTA block "${name}" has no convolution`);
  const last = layers.at(-1)!;
  return {
    inChannels: convs[0].weight.shape[1] * convs[0].groups,
    outChannels: last instanceof Conv2d ? last.weight.shape[0] : last.runningMean.size,
    stride: convs.reduce((s, c) => s * c.stride[0], 1),
  };
}

interface Unit {
  conv: Conv2d;
  bn: BatchNorm2d | null;
  act: boolean;
}

/** ecotta_partition.ts blockUnits: torchvision's layout of an imported MobileNetV2 block. */
function blockUnits(block: Module): Unit[] {
  const body = block.namedModules().find(([n]) => n === "conv")?.[1];
  const units: Unit[] = [];
  for (const g of body ? body.children() : [block]) {
    if (g instanceof Conv2d) units.push({ conv: g, bn: null, act: false });
    else if (g instanceof BatchNorm2d) units.at(-1)!.bn = g;
    else {
      const [conv, bn] = g.children();
      units.push({ conv: conv as Conv2d, bn: (bn as BatchNorm2d | undefined) ?? null, act: true });
    }
  }
  return units;
}

function unitStage(name: string, block: Module): Stage {
  const units = blockUnits(block), g = geometry(name, block);
  const residual = units.length > 1 && g.stride === 1 && g.inChannels === g.outChannels;
  const runUnit = (ctx: SimContext, u: Unit, x: T): T => {
    const c = convLayer(ctx, u.conv, x);
    let h = c;
    if (u.bn) {
      h = bnLayer(ctx, u.bn, c);
      c.dispose();
    }
    if (!u.act) return h;
    const a = op.windowed(ctx.sim, h);
    h.dispose();
    return a;
  };
  return {
    ...g,
    run: (ctx, x) => {
      const h = chain(x, units.map((u) => (v: T) => runUnit(ctx, u, v)));
      if (!residual) return h;
      const out = op.add(ctx.sim, x, h);
      h.dispose();
      return out;
    },
  };
}

function stagesOf(model: Module): { stages: Stage[]; head: Forward } {
  if (model instanceof IrbNet) {
    const stages = model.features.layers.map((m, i): Stage => ({
      ...geometry(`features.${i}`, m),
      run: (ctx, x) => callModule(ctx, m, x),
    }));
    const head: Forward = (ctx, x) =>
      chain(
        x,
        [model.pool, model.flatten, model.classifier].map((m) => (h: T) => callModule(ctx, m, h)),
      );
    return { stages, head };
  }
  const byName = new Map(model.namedModules());
  const stages: Stage[] = [];
  for (let i = 0; byName.has(`features.${i}`); i++) {
    stages.push(unitStage(`features.${i}`, byName.get(`features.${i}`)!));
  }
  const fc = model.namedModules().find(([n, m]) => n.startsWith("classifier") && m instanceof Linear)?.[1] as
    | Linear
    | undefined;
  if (stages.length < 2 || !fc) {
    throw new Error(
      `estimate(): EcoTTA needs "features.N" blocks and a Linear classifier (a MobileNetV2 layout)`,
    );
  }
  const head: Forward = (ctx, x) => {
    const p = op.globalAvgPool(ctx.sim, x);
    const f = op.flatten(ctx.sim, p, 1);
    p.dispose();
    const out = linearLayer(ctx, fc, f);
    f.dispose();
    return out;
  };
  return { stages, head };
}

interface Meta {
  conv: { shape: number[]; stride: number; padding: number };
  channels: number;
  keys: object[];
}

/** ecotta_meta.ts MetaNet + l1ToConstant + EcoTta.step, over the model's stages. */
export function ecottaPlan(model: Module, options: EcottaOptions = {}): EcottaPlan {
  const { stages, head } = stagesOf(model);
  const leading = stages.slice(0, options.leading ?? 0);
  const blocks = stages.slice(options.leading ?? 0);
  const sizes = splitBlocks(blocks.length, options.partitions ?? 4);
  const lambda = options.lambda ?? 0.5;
  let start = 0;
  const parts = sizes.map((n) => {
    const bs = blocks.slice(start, start += n);
    const stride = bs.reduce((s, b) => s * b.stride, 1);
    const k = Math.max(options.kernelSize ?? 3, 2 * Math.floor(stride / 2) + 1);
    const cin = bs[0].inChannels, cout = bs.at(-1)!.outChannels;
    const meta: Meta = {
      conv: { shape: [cout, cin, k, k], stride, padding: (k - 1) >> 1 },
      channels: cout,
      keys: [{}, {}, {}, {}],
    };
    return { blocks: bs, meta };
  });
  const trainable = parts.reduce(
    (s, { meta }) => s + meta.conv.shape.reduce((p, d) => p * d, 1) + 3 * meta.channels,
    0,
  );
  const metaBytes = 4 * (trainable + 2 * parts.reduce((s, { meta }) => s + meta.channels, 0));

  const adapt = (ctx: SimContext, meta: Meta, h: T, y: T): T => {
    const s = ctx.sim;
    const [kw, kb, kg, kbeta] = meta.keys;
    const c = layers.conv2d(s, h, ctx.leaf(kw, meta.conv.shape, true), ctx.leaf(kb, [meta.channels], true), {
      stride: meta.conv.stride,
      padding: meta.conv.padding,
    });
    const n = layers.batchNorm2d(s, y, {
      gamma: ctx.leaf(kg, [meta.channels], true),
      beta: ctx.leaf(kbeta, [meta.channels], true),
      training: options.batchStats ?? false,
      updateStats: false,
    });
    const out = op.add(s, n, c);
    c.dispose();
    n.dispose();
    return out;
  };
  const l1 = (ctx: SimContext, a: T, y: T): T => {
    const s = ctx.sim;
    const target = s.view(y, y.shape);
    const d = op.sub(s, a, target);
    target.dispose();
    const pos = op.windowed(s, d);
    const negD = op.scale(s, d);
    const neg = op.windowed(s, negD);
    const axes = a.shape.map((_, i) => i);
    const sp = op.reduceOp(s, pos, axes, false);
    const sn = op.reduceOp(s, neg, axes, false);
    const sum = op.add(s, sp, sn);
    const out = op.scale(s, sum);
    for (const t of [d, pos, negD, neg, sp, sn, sum]) t.dispose();
    return out;
  };

  return {
    metaBytes,
    trainable,
    step(ctx, x, optimizer) {
      const s = ctx.sim;
      const reg: T[] = [];
      const run = (list: Stage[]) => list.map((b) => (v: T) => b.run(ctx, v));
      let h = chain(x, run(leading));
      for (const part of parts) {
        const y = chain(h, run(part.blocks));
        const adapted = adapt(ctx, part.meta, h, y);
        if (lambda > 0) reg.push(l1(ctx, adapted, y));
        y.dispose();
        if (h !== x) h.dispose();
        h = adapted;
      }
      const logits = head(ctx, h);
      h.dispose();
      let loss = weightedEntropy(s, logits);
      if (reg.length) {
        const total = sumAll(s, reg);
        const scaled = op.scale(s, total);
        total.dispose();
        const sum = op.add(s, loss, scaled);
        loss.dispose();
        scaled.dispose();
        loss = sum;
      }
      s.backward(loss);
      loss.dispose();
      optimizer.step();
      ctx.zeroGrad();
      s.releaseGraph(logits);
      logits.dispose();
    },
  };
}
