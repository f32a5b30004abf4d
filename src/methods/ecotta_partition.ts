/**
 * EcoTTA needs the frozen backbone as a chain of blocks it can run one at a time (to put a meta network
 * beside each partition): a stem, the feature blocks "features.1" ... "features.L-1", and a head.
 *
 * - buildIrbNet() nets: the blocks are `features.layers`.
 * - ONNX-imported MobileNetV2-style models (OnnxModule): the compiled graph cannot run a sub-range, so the
 *   blocks are rebuilt over the imported Conv2d/BatchNorm2d layers (shared, not copied) from the torchvision
 *   layout their state names follow ("features.N.conv.K"), and the rebuilt chain is checked against the
 *   graph's own forward on a probe input. A model that does not match fails with a message naming it.
 */
import { noGrad, withTag } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, Conv2d, Linear, ReLU6 } from "../nn/layers.ts";
import { InvertedResidual, IrbNet } from "../nn/mobilenet.ts";
import { Sequential } from "../nn/module.ts";
import type { StageTail } from "./ecotta_stats.ts";
import { OnnxModule } from "../onnx/import.ts";
import { add } from "../ops/elementwise.ts";
import { relu6 } from "../ops/activation.ts";
import { globalAvgPool } from "../ops/reduce.ts";
import { flatten } from "../ops/shape.ts";
import { linear } from "../ops/linear.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

/** One frozen block: `run` leaves its input to the caller. */
export interface Stage {
  name: string;
  run(x: Tensor): Tensor;
  inChannels: number;
  outChannels: number;
  /** Product of the strides of the block's convolutions (the spatial downsampling factor). */
  stride: number;
  /** How the block ends, for data-free source statistics (null: not a BN-ended block). */
  tail: StageTail | null;
}

export interface StagedModel {
  /** "features.0" (the stem) ... "features.L-1", in order. */
  stages: Stage[];
  head(x: Tensor): Tensor;
  /** False until the rebuilt chain of an ONNX graph has been checked against the graph (see stagedMismatch). */
  verified: boolean;
}

/** Run x through stages in order, disposing intermediates (never x). */
export function runStages(x: Tensor, stages: Stage[]): Tensor {
  let h = x;
  for (const s of stages) {
    const next = s.run(h);
    if (h !== x) h.dispose();
    h = next;
  }
  return h;
}

function convsAndNorms(m: Module): (Conv2d | BatchNorm2d)[] {
  return m.namedModules().map(([, c]) => c).filter((c): c is Conv2d | BatchNorm2d =>
    c instanceof Conv2d || c instanceof BatchNorm2d
  );
}

/** Channels and stride of a block from its layers, in graph order. */
function geometry(
  name: string,
  layers: (Conv2d | BatchNorm2d)[],
  model: string,
): Omit<Stage, "run" | "name" | "tail"> {
  const convs = layers.filter((l): l is Conv2d => l instanceof Conv2d);
  if (convs.length === 0) throw new Error(`EcoTTA: block "${name}" of ${model} has no convolution`);
  let stride = 1;
  for (const c of convs) {
    if (c.stride[0] !== c.stride[1]) {
      throw new Error(`EcoTTA: block "${name}" of ${model} has a non-square stride ${c.stride.join("x")}`);
    }
    stride *= c.stride[0];
  }
  const last = layers.at(-1)!;
  return {
    inChannels: convs[0].weight.shape[1] * convs[0].groups,
    outChannels: last instanceof Conv2d ? last.weight.shape[0] : last.runningMean.size,
    stride,
  };
}

function irbTail(m: Module): StageTail | null {
  if (m instanceof InvertedResidual) {
    const bn = m.conv.layers.at(-1);
    return bn instanceof BatchNorm2d ? { bn, relu6: false, residual: m.useResidual } : null;
  }
  if (m instanceof Sequential && m.layers.length === 3) {
    const [conv, bn, act] = m.layers;
    if (conv instanceof Conv2d && bn instanceof BatchNorm2d && act instanceof ReLU6) {
      return { bn, relu6: true, residual: false };
    }
  }
  return null;
}

function irbStages(net: IrbNet): StagedModel {
  const stages = net.features.layers.map((m, i): Stage => ({
    name: m.tag ?? `features.${i}`,
    run: (x) => m.call(x),
    tail: irbTail(m),
    ...geometry(`features.${i}`, convsAndNorms(m), "the IRB net"),
  }));
  return {
    stages,
    verified: true,
    head: (x) => {
      const p = net.pool.call(x);
      const f = net.flatten.call(p);
      p.dispose();
      const out = net.classifier.call(f);
      f.dispose();
      return out;
    },
  };
}

/** A conv (+ BN) (+ ReLU6) unit of a torchvision block. */
interface Unit {
  conv: Conv2d;
  bn: BatchNorm2d | null;
  act: boolean;
}

function runUnit(u: Unit, x: Tensor): Tensor {
  const c = u.conv.call(x);
  let h = c;
  if (u.bn) {
    h = u.bn.call(c);
    c.dispose();
  }
  if (!u.act) return h;
  const a = relu6(h);
  h.dispose();
  return a;
}

/**
 * Units of "features.i" from the module tree torch's names give it: an IRB block holds "conv" whose children
 * are conv+BN+ReLU6 groups (Containers) and then a bare projection conv and BN; the stem and the last layer
 * are one conv+BN+ReLU6 group. BN may be missing (folded into the conv by an eval export).
 */
function blockUnits(block: Module): Unit[] {
  const body = block.namedModules().find(([n]) => n === "conv")?.[1];
  const groups = body ? body.children() : [block];
  const units: Unit[] = [];
  for (const g of groups) {
    if (g instanceof Conv2d) units.push({ conv: g, bn: null, act: false });
    else if (g instanceof BatchNorm2d) {
      const u = units.at(-1);
      if (!u || u.bn) throw new Error("a BatchNormalization without a convolution before it");
      u.bn = g;
    } else {
      const [conv, bn, ...rest] = g.children();
      if (!(conv instanceof Conv2d) || (bn !== undefined && !(bn instanceof BatchNorm2d)) || rest.length) {
        throw new Error("a layer group that is not Conv (+ BatchNormalization)");
      }
      units.push({ conv, bn: bn ?? null, act: true });
    }
  }
  return units;
}

function onnxStages(model: OnnxModule, name: string): StagedModel {
  const byName = new Map(model.namedModules());
  const fail = (why: string) =>
    new Error(
      `EcoTTA cannot partition ${name}: ${why}. It runs buildIrbNet() nets and ONNX MobileNetV2-style models ` +
        `whose blocks are named "features.N" (torchvision's layout)`,
    );
  const stages: Stage[] = [];
  for (let i = 0; byName.has(`features.${i}`); i++) {
    const block = byName.get(`features.${i}`)!;
    let units: Unit[];
    try {
      units = blockUnits(block);
    } catch (e) {
      throw fail(`block "features.${i}" has ${(e as Error).message}`);
    }
    const g = geometry(`features.${i}`, convsAndNorms(block), name);
    const residual = units.length > 1 && g.stride === 1 && g.inChannels === g.outChannels;
    const tag = `features.${i}`;
    const last = units.at(-1)!;
    stages.push({
      name: tag,
      ...g,
      tail: last.bn ? { bn: last.bn, relu6: last.act, residual } : null,
      run: (x) =>
        withTag(tag, () => {
          let h = x;
          for (const u of units) {
            const next = runUnit(u, h);
            if (h !== x) h.dispose();
            h = next;
          }
          if (!residual) return h;
          const out = add(x, h);
          h.dispose();
          return out;
        }),
    });
  }
  if (stages.length < 2) throw fail(`it has no "features.0", "features.1", ... layers`);
  const linears = model.namedModules().filter(([n, m]) => n.startsWith("classifier") && m instanceof Linear)
    .map(([, m]) => m as Linear);
  if (linears.length !== 1) throw fail(`its classifier has ${linears.length} Linear layers, expected 1`);
  const fc = linears[0];
  return {
    stages,
    verified: false,
    head: (x) => {
      const p = globalAvgPool(x);
      const f = flatten(p, 1);
      p.dispose();
      const out = linear(f, fc.weight, fc.bias);
      f.dispose();
      return out;
    },
  };
}

/** Max |a - b| / max(1, max |a|) of the staged forward against the model's own, on x (no gradients). */
export async function stagedMismatch(
  model: Module,
  staged: Omit<StagedModel, "verified">,
  x: Tensor,
): Promise<number> {
  const [ref, got] = noGrad(() => {
    const features = runStages(x, staged.stages);
    const logits = staged.head(features);
    if (features !== x) features.dispose();
    return [model.call(x), logits];
  });
  const a = await ref.data(), c = await got.data();
  ref.dispose();
  got.dispose();
  if (a.length !== c.length) return Infinity;
  let diff = 0, scale = 1;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - c[i]));
    scale = Math.max(scale, Math.abs(a[i]));
  }
  return Number.isNaN(diff) ? Infinity : diff / scale;
}

/** Relative tolerance of the rebuilt chain against the ONNX graph (same kernels, same order: ~1e-6). */
export const STAGED_TOLERANCE = 1e-4;

/** Throws unless the rebuilt chain matched the graph within STAGED_TOLERANCE. */
export function checkMismatch(err: number, name: string, on: string): void {
  if (err <= STAGED_TOLERANCE) return;
  throw new Error(
    `EcoTTA cannot partition ${name}: its blocks rebuilt as MobileNetV2 blocks (conv, BN, ReLU6, residual) ` +
      `differ from the ONNX graph (relative difference ${err.toExponential(2)} on ${on})`,
  );
}

/**
 * The stem, blocks and head of `model`. For an OnnxModule with a fixed input shape the rebuilt chain is
 * verified here; with symbolic dims, call `stagedMismatch` on the first real batch.
 */
export async function stagesOf(model: Module, options: { name?: string } = {}): Promise<StagedModel> {
  const name = options.name ?? `the ${model.constructor.name} model`;
  if (model instanceof IrbNet) return irbStages(model);
  if (!(model instanceof OnnxModule)) {
    throw new Error(
      `EcoTTA cannot partition ${name}: it runs buildIrbNet() nets and ONNX MobileNetV2-style models only`,
    );
  }
  const staged = onnxStages(model, name);
  const dims = model.inputShape?.slice(1);
  if (dims && dims.length === 3 && dims.every((d) => typeof d === "number")) {
    const [c, h, w] = dims as number[];
    const backend = model.namedState()[0][1].backend;
    const probe = Tensor.from(backend, new Rng(7).normals(2 * c * h * w), [2, c, h, w]);
    const err = await stagedMismatch(model, staged, probe);
    probe.dispose();
    checkMismatch(err, name, "a probe input");
    staged.verified = true;
  }
  return staged;
}
