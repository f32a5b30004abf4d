/**
 * Transfer learning on the top K blocks: `full`, `bias` and MobileTL (Chiang et al., AAAI 2023), for any
 * model. Blocks come from the graph (src/nn/structure.ts), not from names: residual blocks of a ResNet,
 * ConvNeXt, RegNet or ViT, dense/fire/shuffle units, and inverted residual blocks wherever they are, so a
 * model whose modules are named `layers.N`, `blocks.N` or `body.N` trains the same.
 *
 * Every method trains the region from the K-th block below the output up to the logits (the layers between
 * blocks and the head included); everything below it is frozen and in eval mode, so it saves nothing.
 * Inside the region:
 * - full: every parameter trains and every BN normalises with batch statistics and updates its running ones.
 * - bias: only biases (BN shifts, conv/linear biases) train, BNs keep their running statistics; the
 *   classifier (the last layer with parameters) trains fully.
 * - mobiletl: counts inverted residual blocks only (a depthwise conv between 1x1 convs). In each trained
 *   block, conv weights train; the inner BNs (after the expansion and the depthwise conv) train their shift
 *   only and keep their frozen statistics, so backward needs neither their x-hat nor batch-statistic terms:
 *   nothing is saved for them; the block's last BN trains scale, shift and running statistics. Activations
 *   keep 1-bit masks (the `mask` store: exact for ReLU6 and hard-sigmoid, MobileTL's step for hard-swish).
 *   Layers outside the blocks train fully.
 */
import type { Module } from "../nn/module.ts";
import { BatchNorm2d } from "../nn/layers.ts";
import type { Block } from "../nn/structure.ts";
import { structureOf } from "../nn/trace.ts";
import type { Tensor } from "../tensor.ts";
import type { StoreName } from "../memory/policy.ts";

export const TRANSFER_METHODS = ["full", "bias", "mobiletl"] as const;
export type TransferMethod = typeof TRANSFER_METHODS[number];

export interface TransferPlan {
  method: TransferMethod;
  /** The blocks that train, lowest first. */
  blocks: Block[];
  /** Graph position where the trained region starts (the first trained block's first op). */
  start: number;
  params: Tensor[];
  /** The store the method saves activations with unless --store says otherwise. */
  store: Exclude<StoreName, "auto">;
  /** Put the model in this method's training configuration (trainSupervised's setMode). */
  setMode(model: Module): void;
}

export interface TransferOptions {
  /** Blocks to train, counted from the output; default all of them. */
  topBlocks?: number;
  /** Input shape for tracing a model without its own graph (default: 32x32 of its first layer's channels). */
  inputShape?: readonly number[];
}

/** The blocks `method` counts: inverted residual blocks for MobileTL, every block otherwise. */
export function transferBlocks(
  model: Module,
  method: TransferMethod,
  options: TransferOptions = {},
): Block[] {
  const blocks = structureOf(model, options.inputShape).blocks;
  return method === "mobiletl" ? blocks.filter((b) => b.irb) : blocks;
}

/**
 * Choose what trains for `method` on the top K blocks, set requiresGrad accordingly and tag each block (the
 * ledger's saved_bytes_by_block). Throws when the model has no block of the kind the method needs.
 */
export function prepareTransfer(
  model: Module,
  method: TransferMethod,
  options: TransferOptions = {},
): TransferPlan {
  if (!TRANSFER_METHODS.includes(method)) {
    throw new Error(`prepareTransfer(): unknown method "${method}" (known: ${TRANSFER_METHODS.join(", ")})`);
  }
  const structure = structureOf(model, options.inputShape);
  const all = structure.blocks;
  const blocks = method === "mobiletl" ? all.filter((b) => b.irb) : all;
  if (!blocks.length) {
    throw new Error(
      method === "mobiletl"
        ? "mobiletl: the model has no inverted residual blocks (a depthwise conv between 1x1 convs); " +
          "use --method full or bias"
        : `${method}: the model has no blocks (residual, dense or inverted residual) to count --top-blocks in`,
    );
  }
  const k = options.topBlocks ?? blocks.length;
  if (!Number.isInteger(k) || k < 0 || k > blocks.length) {
    throw new Error(
      `${method}: --top-blocks ${k} must be an integer from 0 to ${blocks.length} (the model's ${
        method === "mobiletl" ? "inverted residual " : ""
      }blocks)`,
    );
  }
  for (const b of all) {
    if (b.owner) b.owner.tag ??= b.name;
    for (const m of b.modules) m.tag ??= b.name;
  }
  // Layers between and around the blocks (stem, transitions, the last conv) report under their parent
  // module's path; the classifier stays untagged.
  const names = new Map(model.namedModules().map(([n, m]) => [m, n]));
  const inBlocks = new Set(all.flatMap((b) => b.modules));
  for (const m of structure.position.keys()) {
    if (inBlocks.has(m) || m === structure.classifier?.layer || !m.namedState().length) continue;
    const path = names.get(m)?.split(".").slice(0, -1).join(".");
    if (path) m.tag ??= path;
  }
  const trained = blocks.slice(blocks.length - k);
  // The region starts at the first trained block, or right after the last block when K = 0.
  const start = k > 0 ? trained[0].start : blocks.at(-1)!.end + 1;
  const position = structure.position;
  const inRegion = (m: Module) => (position.get(m) ?? -1) >= start;
  const innerBns = new Set(trained.flatMap((b) => b.bns.slice(0, -1)));
  const classifier = structure.classifier?.layer;

  const params = model.setTrainable((name, _p, owner) => {
    if (!inRegion(owner)) return false;
    const isBias = name.endsWith(".bias") || name === "bias";
    switch (method) {
      case "full":
        return true;
      case "bias":
        return isBias || owner === classifier;
      case "mobiletl":
        return owner instanceof BatchNorm2d && innerBns.has(owner) ? isBias : true;
    }
  });
  if (!params.length) throw new Error(`${method}: no parameters to train in the top ${k} blocks`);

  const setMode = (m: Module) => {
    m.eval();
    if (method === "bias") return;
    for (const [, mod] of m.namedModules()) {
      if (!inRegion(mod)) continue;
      if (method === "mobiletl" && mod instanceof BatchNorm2d && innerBns.has(mod)) continue;
      mod.training = true;
      if (mod instanceof BatchNorm2d) mod.trackRunningStats = true;
    }
  };
  setMode(model);
  return { method, blocks: trained, start, params, store: method === "mobiletl" ? "mask" : "fp32", setMode };
}
