/**
 * Layers over the ops in src/ops/: Conv2d, BatchNorm2d, LayerNorm, Linear, activations, pooling, Flatten,
 * Identity.
 *
 * Parameter and buffer names are PyTorch's (weight, bias, running_mean, running_var) so state dicts map 1:1.
 * Initialisation is deterministic from a seeded Rng: conv weights kaiming-normal over fan-out (what
 * torchvision's MobileNetV2 and ResNet use), Linear as PyTorch's default (uniform +-1/sqrt(fan_in)), BN 1/0.
 */
import type { Backend } from "../backend/backend.ts";
import { Tensor } from "../tensor.ts";
import { Rng } from "../random.ts";
import { conv2d } from "../ops/conv.ts";
import { batchNorm2d } from "../ops/norm.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { linear } from "../ops/linear.ts";
import { globalAvgPool } from "../ops/reduce.ts";
import { flatten } from "../ops/shape.ts";
import { hardsigmoid, hardswish, relu, relu6, sigmoid } from "../ops/activation.ts";
import { Module } from "./module.ts";

function weight(b: Backend, data: Float32Array, shape: number[]): Tensor {
  return Tensor.from(b, data, shape, { category: "weights", requiresGrad: true });
}

function pair(v: number | [number, number]): [number, number] {
  return typeof v === "number" ? [v, v] : v;
}

export interface Conv2dOptions {
  inChannels: number;
  outChannels: number;
  kernelSize: number | [number, number];
  stride?: number | [number, number];
  /** Default 0, as PyTorch. */
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
  /** Default true, as PyTorch. */
  bias?: boolean;
  rng?: Rng;
  /** Draw the initial weights (default true); false leaves zeros for a caller that loads them (imports). */
  init?: boolean;
}

export class Conv2d extends Module {
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;

  constructor(b: Backend, options: Conv2dOptions) {
    super();
    const { inChannels: cin, outChannels: cout } = options;
    const groups = options.groups ?? 1;
    if (cin % groups !== 0 || cout % groups !== 0) {
      throw new Error(`Conv2d(): channels ${cin} -> ${cout} are not divisible by groups=${groups}`);
    }
    const [kh, kw] = pair(options.kernelSize);
    this.stride = pair(options.stride ?? 1);
    this.padding = pair(options.padding ?? 0);
    this.dilation = pair(options.dilation ?? 1);
    this.groups = groups;
    const rng = options.rng ?? new Rng(0);
    // kaiming_normal_(mode="fan_out"): std = sqrt(2 / fan_out), fan_out = cout * kh * kw / groups.
    const std = Math.sqrt(2 / ((cout / groups) * kh * kw));
    const n = cout * (cin / groups) * kh * kw;
    this.addParam(
      "weight",
      weight(b, options.init === false ? new Float32Array(n) : rng.normals(n, std), [
        cout,
        cin / groups,
        kh,
        kw,
      ]),
    );
    if (options.bias ?? true) this.addParam("bias", weight(b, new Float32Array(cout), [cout]));
  }

  // Read through the parameter table, so replaceParam (a new 1x1 classifier) takes effect.
  get weight(): Tensor {
    return this.param("weight")!;
  }

  get bias(): Tensor | null {
    return this.param("bias");
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, {
      bias: this.bias,
      stride: this.stride,
      padding: this.padding,
      dilation: this.dilation,
      groups: this.groups,
    });
  }
}

export interface BatchNorm2dOptions {
  numFeatures: number;
  eps?: number;
  /** PyTorch convention: running = (1 - momentum) * running + momentum * batch. Default 0.1. */
  momentum?: number;
  /** Learnable gamma (weight) and beta (bias). Default true. */
  affine?: boolean;
}

/** Train mode normalises with batch statistics and updates the running ones; eval mode uses the running ones. */
export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly eps: number;
  /** Weight of a batch in the running statistics; streaming adaptation sets its own (robust BN). */
  momentum: number;
  readonly affine: boolean;
  /**
   * Update the running statistics in train mode (PyTorch's track_running_stats). TENT-style adaptation turns
   * this off: batch statistics normalise, the source running statistics stay as they were.
   */
  trackRunningStats = true;

  constructor(b: Backend, options: BatchNorm2dOptions) {
    super();
    const c = options.numFeatures;
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    this.affine = options.affine ?? true;
    const ones = () => Tensor.full(b, [c], 1, { category: "weights" });
    const zeros = () => Tensor.zeros(b, [c], { category: "weights" });
    if (this.affine) {
      this.weight = this.addParam("weight", ones());
      this.bias = this.addParam("bias", zeros());
      this.weight.requiresGrad = this.bias.requiresGrad = true;
    } else {
      // The kernels always scale and shift: constant 1/0 that are not state (PyTorch has no such keys).
      this.weight = this.addOwned(ones());
      this.bias = this.addOwned(zeros());
    }
    this.runningMean = this.addBuffer("running_mean", zeros());
    this.runningVar = this.addBuffer("running_var", ones());
  }

  forward(x: Tensor): Tensor {
    return batchNorm2d(
      x,
      { gamma: this.weight, beta: this.bias, runningMean: this.runningMean, runningVar: this.runningVar },
      {
        training: this.training,
        momentum: this.momentum,
        eps: this.eps,
        updateStats: this.trackRunningStats,
      },
    );
  }
}

export interface LinearOptions {
  inFeatures: number;
  outFeatures: number;
  /** Default true. */
  bias?: boolean;
  rng?: Rng;
  /** Draw the initial weights (default true); false leaves zeros for a caller that loads them (imports). */
  init?: boolean;
}

export interface LayerNormOptions {
  /** The normalised trailing shape (PyTorch's normalized_shape). */
  shape: number[];
  eps?: number;
  /** Learnable weight and bias (PyTorch's elementwise_affine, default true). */
  affine?: boolean;
  /** With affine: whether there is a bias (default true; ONNX LayerNormalization's B is optional). */
  bias?: boolean;
}

/** PyTorch nn.LayerNorm over the trailing `shape` (weight 1, bias 0). */
export class LayerNorm extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly eps: number;
  readonly shape: number[];

  constructor(b: Backend, options: LayerNormOptions) {
    super();
    this.shape = [...options.shape];
    this.eps = options.eps ?? 1e-5;
    const n = this.shape.reduce((p, d) => p * d, 1);
    const affine = options.affine ?? true;
    this.weight = affine ? this.addParam("weight", weight(b, new Float32Array(n).fill(1), this.shape)) : null;
    this.bias = affine && (options.bias ?? true)
      ? this.addParam("bias", weight(b, new Float32Array(n), this.shape))
      : null;
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, { axis: x.rank - this.shape.length, eps: this.eps });
  }
}

export class Linear extends Module {
  constructor(b: Backend, options: LinearOptions) {
    super();
    const { inFeatures: fin, outFeatures: fout } = options;
    const rng = options.rng ?? new Rng(0);
    const bound = 1 / Math.sqrt(fin);
    const draw = (
      n: number,
    ) => (options.init === false ? new Float32Array(n) : rng.uniforms(n, -bound, bound));
    this.addParam("weight", weight(b, draw(fout * fin), [fout, fin]));
    if (options.bias ?? true) this.addParam("bias", weight(b, draw(fout), [fout]));
  }

  // Read through the parameter table, so replaceParam (a new head for another label set) takes effect.
  get weight(): Tensor {
    return this.param("weight")!;
  }

  get bias(): Tensor | null {
    return this.param("bias");
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** A parameter-free layer applying one op. */
class Functional extends Module {
  constructor(readonly kind: string, readonly fn: (x: Tensor) => Tensor) {
    super();
  }

  forward(x: Tensor): Tensor {
    return this.fn(x);
  }
}

export class ReLU extends Functional {
  constructor() {
    super("ReLU", relu);
  }
}

export class ReLU6 extends Functional {
  constructor() {
    super("ReLU6", relu6);
  }
}

export class Hardswish extends Functional {
  constructor() {
    super("Hardswish", hardswish);
  }
}

export class Hardsigmoid extends Functional {
  constructor() {
    super("Hardsigmoid", hardsigmoid);
  }
}

export class Sigmoid extends Functional {
  constructor() {
    super("Sigmoid", sigmoid);
  }
}

/** [N, C, H, W] -> [N, C, 1, 1] (adaptive_avg_pool2d(x, 1)). */
export class GlobalAvgPool extends Functional {
  constructor() {
    super("GlobalAvgPool", globalAvgPool);
  }
}

/** Collapse dims from `axis` on into one (torch.flatten(x, axis)). */
export class Flatten extends Functional {
  constructor(readonly axis = 1) {
    super("Flatten", (x) => flatten(x, axis));
  }
}

/** Returns its input (a stand-in for Dropout, so indices match torchvision's state names). */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** TENT's choice of trainable parameters: the affine weight and bias of every BatchNorm. */
export const bnAffine = (_name: string, _p: Tensor, owner: Module): boolean => owner instanceof BatchNorm2d;
