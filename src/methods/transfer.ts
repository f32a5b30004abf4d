/**
 * The transfer-learning methods of `train` (labels, cross-entropy): what each trains is chosen by
 * prepareTransfer (mobiletl.ts); these descriptors register them. All train with Adam (`--lr`).
 */

export const TRAIN_OPTIMIZER: OptimizerConfig = { kind: "adam", lr: 1e-3 };
import type { OptimizerConfig } from "./backprop_method.ts";
import type { TrainDescriptor } from "./descriptor.ts";
import { prepareTransfer } from "./mobiletl.ts";

export const full: TrainDescriptor<"full"> = {
  name: "full",
  task: "train",
  summary: "every parameter of the top blocks and the head, BN with batch statistics",
  backward: true,
  store: "fp32",
  rank: 3,
  optimizer: TRAIN_OPTIMIZER,
  prepare: (model, o) => prepareTransfer(model, "full", o),
};

export const bias: TrainDescriptor<"bias"> = {
  name: "bias",
  task: "train",
  summary: "biases and BN shifts of the top blocks, the head in full (TinyTL-style)",
  backward: true,
  store: "fp32",
  rank: 1,
  optimizer: TRAIN_OPTIMIZER,
  prepare: (model, o) => prepareTransfer(model, "bias", o),
};

export const mobiletl: TrainDescriptor<"mobiletl"> = {
  name: "mobiletl",
  task: "train",
  summary: "MobileTL: inner BN shifts, 1-bit activation masks (Chiang et al., AAAI 2023)",
  backward: true,
  store: "mask",
  rank: 2,
  optimizer: TRAIN_OPTIMIZER,
  prepare: (model, o) => prepareTransfer(model, "mobiletl", o),
};
