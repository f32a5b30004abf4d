/**
 * Transfer learning on the top K inverted residual blocks: `full`, `bias` and MobileTL (Chiang et al.,
 * AAAI 2023), for nets built here (buildIrbNet, buildMobileNetV3) and for ONNX-imported torchvision
 * MobileNetV2/V3, whose blocks are found from state names "features.N...".
 *
 * Every method trains the region from the K-th inverted residual block below the output up to the logits
 * (so also the 1x1 conv after the last block and the classifier); everything below it is frozen and in eval
 * mode, so it saves nothing. Inside the region:
 * - full: every parameter trains and every BN normalises with batch statistics and updates its running ones.
 * - bias: only biases (BN shifts, conv/linear biases) train, BNs keep their running statistics; the
 *   classifier trains fully.
 * - mobiletl: in each trained block, conv weights train; the inner BNs (after the expansion and the
 *   depthwise conv) train their shift only and keep their frozen statistics, so backward needs neither their
 *   x-hat nor batch-statistic terms: nothing is saved for them; the block's last BN trains scale, shift and
 *   running statistics. Activations keep 1-bit masks (the `mask` store: exact for ReLU6 and hard-sigmoid,
 *   MobileTL's step for hard-swish). Layers outside the blocks train fully.
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d, Conv2d } from "../nn/layers.ts";
import type { Tensor } from "../tensor.ts";
import type { StoreName } from "../memory/policy.ts";

export const TRANSFER_METHODS = ["full", "bias", "mobiletl"] as const;
export type TransferMethod = typeof TRANSFER_METHODS[number];

/** One child "features.N" of a model, with its convolutions and BatchNorms in forward order. */
export interface FeatureBlock {
  name: string;
  index: number;
  module: Module;
  /** Every module below the block (dotted names), the block itself first. */
  modules: [string, Module][];
  convs: Conv2d[];
  bns: BatchNorm2d[];
  /** An inverted residual block: a depthwise convolution and at least two BatchNorms. */
  irb: boolean;
}

const FEATURE = /^features\.(\d+)$/;

function isDepthwise(c: Conv2d): boolean {
  return c.groups > 1 && c.weight.shape[1] === 1;
}

/** The "features.N" blocks of a model in index order (empty when it has no such names). */
export function featureBlocks(model: Module): FeatureBlock[] {
  const all = model.namedModules();
  const blocks: FeatureBlock[] = [];
  for (const [name, module] of all) {
    const m = FEATURE.exec(name);
    if (!m) continue;
    const modules = all.filter(([n]) => n === name || n.startsWith(`${name}.`));
    const convs = modules.map(([, x]) => x).filter((x): x is Conv2d => x instanceof Conv2d);
    const bns = modules.map(([, x]) => x).filter((x): x is BatchNorm2d => x instanceof BatchNorm2d);
    blocks.push({
      name,
      index: Number(m[1]),
      module,
      modules,
      convs,
      bns,
      irb: convs.some(isDepthwise) && bns.length >= 2,
    });
  }
  return blocks.sort((a, b) => a.index - b.index);
}

export interface TransferPlan {
  method: TransferMethod;
  /** The inverted residual blocks that train, lowest first. */
  blocks: FeatureBlock[];
  /** Index of the first trained feature block. */
  firstIndex: number;
  params: Tensor[];
  /** The store the method saves activations with unless --store says otherwise. */
  store: Exclude<StoreName, "auto">;
  /** Put the model in this method's training configuration (trainSupervised's setMode). */
  setMode(model: Module): void;
}

export interface TransferOptions {
  /** Inverted residual blocks to train, counted from the output; default all of them. */
  topBlocks?: number;
}

/**
 * Choose what trains for `method` on the top K blocks, set requiresGrad accordingly and tag every module of
 * each feature block with the block's name (the ledger's saved_bytes_by_block). Throws when the model has
 * no inverted residual blocks named "features.N".
 */
export function prepareTransfer(
  model: Module,
  method: TransferMethod,
  options: TransferOptions = {},
): TransferPlan {
  if (!TRANSFER_METHODS.includes(method)) {
    throw new Error(`prepareTransfer(): unknown method "${method}" (known: ${TRANSFER_METHODS.join(", ")})`);
  }
  const features = featureBlocks(model);
  const irbs = features.filter((b) => b.irb);
  if (!irbs.length) {
    throw new Error(
      `${method}: the model has no inverted residual blocks named "features.N" (a depthwise conv and 2+ BatchNorms)`,
    );
  }
  const k = options.topBlocks ?? irbs.length;
  if (!Number.isInteger(k) || k < 0 || k > irbs.length) {
    throw new Error(
      `${method}: --top-blocks ${k} must be an integer from 0 to ${irbs.length} (the model's blocks)`,
    );
  }
  for (const block of features) {
    for (const [, m] of block.modules) m.tag ??= block.name;
  }
  const trained = irbs.slice(irbs.length - k);
  const firstIndex = k > 0 ? trained[0].index : irbs.at(-1)!.index + 1;
  const blockOf = (name: string): number | null => {
    const m = /^features\.(\d+)(\.|$)/.exec(name);
    return m ? Number(m[1]) : null;
  };
  const inRegion = (name: string) => {
    const i = blockOf(name);
    return i === null || i >= firstIndex;
  };
  const trainedBlock = new Map(trained.map((b) => [b.index, b]));
  const innerBns = new Set(trained.flatMap((b) => b.bns.slice(0, -1)));

  const params = model.setTrainable((name, _p, owner) => {
    if (!inRegion(name)) return false;
    const isBias = name.endsWith(".bias") || name === "bias";
    const i = blockOf(name);
    switch (method) {
      case "full":
        return true;
      case "bias":
        return isBias || i === null;
      case "mobiletl":
        if (i === null || !trainedBlock.has(i)) return true;
        return owner instanceof BatchNorm2d && innerBns.has(owner) ? isBias : true;
    }
  });
  if (!params.length) throw new Error(`${method}: no parameters to train in the top ${k} blocks`);

  const setMode = (m: Module) => {
    m.eval();
    if (method === "bias") return;
    for (const [name, mod] of m.namedModules()) {
      if (!name || !inRegion(name)) continue;
      if (method === "mobiletl" && mod instanceof BatchNorm2d && innerBns.has(mod)) continue;
      mod.training = true;
      if (mod instanceof BatchNorm2d) mod.trackRunningStats = true;
    }
  };
  setMode(model);
  return {
    method,
    blocks: trained,
    firstIndex,
    params,
    store: method === "mobiletl" ? "mask" : "fp32",
    setMode,
  };
}
