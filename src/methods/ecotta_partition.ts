/**
 * EcoTTA needs the frozen backbone as a chain of blocks it can run one at a time (to put a meta network
 * beside each partition): a stem, the blocks, and a head.
 *
 * - buildIrbNet() nets: the blocks are `features.layers`.
 * - ONNX models (OnnxModule): the blocks come from the graph (src/nn/structure.ts), whatever the modules are
 *   named; each stage runs its range of the compiled graph (OnnxModule.runRange), and the chain of stages is
 *   checked against the graph's own forward on a probe input.
 */
import { noGrad, withTag } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, Conv2d, ReLU6 } from "../nn/layers.ts";
import { InvertedResidual, IrbNet } from "../nn/mobilenet.ts";
import { Sequential } from "../nn/module.ts";
import type { StageTail } from "./ecotta_stats.ts";
import { OnnxModule } from "../onnx/import.ts";
import { structureOf } from "../nn/trace.ts";
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

/** Where each stage ends: the blocks of the structure, and the layers before, between and after them. */
function stageRanges(
  model: OnnxModule,
  fail: (why: string) => Error,
): { ranges: [number, number, string | null][]; head: number } {
  const s = structureOf(model);
  const nodes = s.graph.nodes;
  // The head starts at the global pooling after the last block (and the layers after it).
  const last = s.blocks.at(-1);
  if (!last) throw fail("it has no blocks");
  let head = -1;
  for (let i = last.end + 1; i < nodes.length; i++) {
    if (nodes[i].op === "GlobalAveragePool" || nodes[i].op === "ReduceMean") {
      head = i;
      break;
    }
  }
  if (head < 0 || !s.cuts.includes(head - 1)) {
    throw fail("its head does not start with a global pooling after the last block");
  }
  const ranges: [number, number, string | null][] = [];
  let at = 0;
  for (const b of s.blocks) {
    if (b.start > at) ranges.push([at, b.start - 1, null]);
    ranges.push([b.start, b.end, b.name]);
    at = b.end + 1;
  }
  if (head > at) ranges.push([at, head - 1, null]);
  return { ranges, head };
}

/** How a stage ends (BN, BN + ReLU6, or a residual add of a BN), for data-free source statistics. */
function stageTail(model: OnnxModule, from: number, to: number): StageTail | null {
  const nodes = model.opGraph().nodes;
  const last = nodes[to];
  const bnOf = (
    i: number,
  ) => (i >= from && nodes[i]?.layer instanceof BatchNorm2d ? nodes[i].layer as BatchNorm2d : null);
  if (last.layer instanceof BatchNorm2d) return { bn: last.layer, relu6: false, residual: false };
  if (last.op === "Clip" && last.inputs.length === 1 && bnOf(last.inputs[0])) {
    return { bn: bnOf(last.inputs[0])!, relu6: true, residual: false };
  }
  if (last.op === "Add" && last.inputs.length === 2) {
    const bns = last.inputs.map(bnOf).filter((b): b is BatchNorm2d => b !== null);
    if (bns.length === 1 && last.inputs.includes(from - 1)) {
      return { bn: bns[0], relu6: false, residual: true };
    }
  }
  return null;
}

/**
 * The stages of an ONNX model from its graph (src/nn/structure.ts): the stem, every block and the layers
 * between blocks, each run as its range of the compiled graph (OnnxModule.runRange), so a stage computes
 * exactly what the graph does; their channels and stride come from running a probe through them.
 */
function onnxStages(model: OnnxModule, name: string): StagedModel {
  const fail = (why: string) =>
    new Error(
      `EcoTTA cannot partition ${name}: ${why}. It needs a conv net whose blocks end where every path ` +
        `passes one tensor and whose head starts with a global pooling`,
    );
  const { ranges, head } = stageRanges(model, fail);
  const nodes = model.opGraph().nodes;
  if (ranges.length < 2) throw fail(`it has ${ranges.length} stage`);
  const layerNames = new Map(model.namedModules().map(([n, m]) => [m, n]));
  const stages = ranges.map(([from, to, blockName], i): Stage => {
    // A block's name; else the module path of the stage's first layer, less its own last part.
    const first = nodes.slice(from, to + 1).find((n) => n.layer)?.layer;
    const path = first ? layerNames.get(first)?.split(".").slice(0, -1).join(".") : "";
    const tag = blockName ?? (path || `stage${i}`);
    return {
      name: tag,
      inChannels: 0,
      outChannels: 0,
      stride: 1,
      tail: stageTail(model, from, to),
      run: (x) => withTag(tag, () => model.runRange(x, from, to)),
    };
  });
  return {
    stages,
    verified: false,
    head: (x) => model.runRange(x, head, nodes.length - 1),
  };
}

/** Channels and stride of every stage, from a probe run (the ONNX stages know only their graph ranges). */
function measureStages(staged: StagedModel, probe: Tensor): void {
  noGrad(() => {
    let h = probe;
    for (const s of staged.stages) {
      const next = s.run(h);
      if (next.rank !== 4) throw new Error(`EcoTTA: stage "${s.name}" does not output an image batch`);
      s.inChannels = h.shape[1];
      s.outChannels = next.shape[1];
      s.stride = Math.round(h.shape[2] / next.shape[2]);
      if (h !== probe) h.dispose();
      h = next;
    }
    if (h !== probe) h.dispose();
  });
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
      `EcoTTA cannot partition ${name}: it runs buildIrbNet() nets and ONNX models only`,
    );
  }
  const staged = onnxStages(model, name);
  const dims = model.inputShape?.slice(1);
  const fixed = dims && dims.length === 3 && dims.every((d) => typeof d === "number");
  // Any spatial size shows the strides: 64x64 when the model does not fix its own.
  const [c, h, w] = fixed ? dims as number[] : [Number(dims?.[0] ?? 3), 64, 64];
  const backend = model.namedState()[0][1].backend;
  const probe = Tensor.from(backend, new Rng(7).normals(2 * c * h * w), [2, c, h, w]);
  try {
    measureStages(staged, probe);
    if (fixed) {
      checkMismatch(await stagedMismatch(model, staged, probe), name, "a probe input");
      staged.verified = true;
    }
  } finally {
    probe.dispose();
  }
  return staged;
}
