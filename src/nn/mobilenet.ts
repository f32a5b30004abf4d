/**
 * MobileNetV2-style nets of inverted residual blocks (Sandler et al. 2018, Table 2), small enough to adapt on
 * a CPU or lavapipe. State names are torchvision's MobileNetV2 keys ("features.2.conv.1.0.weight",
 * "classifier.1.weight"), so tools/goldens/irb_golden.py builds the same net in PyTorch and its weights load
 * here by name.
 */
import type { Backend } from "../backend/backend.ts";
import { add } from "../ops/elementwise.ts";
import { Rng } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import { chain, Module, Sequential } from "./module.ts";
import { BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Identity, Linear, ReLU6 } from "./layers.ts";

export interface BnSettings {
  /** PyTorch convention, default 0.1. */
  momentum?: number;
  /** Default 1e-5. */
  eps?: number;
}

/** Conv (no bias) + BN + ReLU6, indexed .0/.1/.2 as torchvision's Conv2dNormActivation. */
export function convBnRelu6(
  b: Backend,
  options: {
    inChannels: number;
    outChannels: number;
    kernelSize: number;
    stride?: number;
    groups?: number;
    rng: Rng;
    bn?: BnSettings;
  },
): Sequential {
  const k = options.kernelSize;
  return new Sequential([
    new Conv2d(b, {
      inChannels: options.inChannels,
      outChannels: options.outChannels,
      kernelSize: k,
      stride: options.stride ?? 1,
      padding: (k - 1) >> 1,
      groups: options.groups ?? 1,
      bias: false,
      rng: options.rng,
    }),
    new BatchNorm2d(b, { numFeatures: options.outChannels, ...options.bn }),
    new ReLU6(),
  ]);
}

export interface InvertedResidualOptions {
  inChannels: number;
  outChannels: number;
  stride: number;
  /** Hidden width = round(inChannels * expandRatio); 1 drops the expanding 1x1 conv. */
  expandRatio: number;
  rng: Rng;
  bn?: BnSettings;
}

/**
 * [1x1 expand conv + BN + ReLU6] (when expandRatio != 1), 3x3 depthwise conv + BN + ReLU6, 1x1 linear
 * projection conv + BN; the input is added back when the stride is 1 and the channel count is unchanged.
 */
export class InvertedResidual extends Module {
  readonly conv: Sequential;
  readonly useResidual: boolean;

  constructor(b: Backend, options: InvertedResidualOptions) {
    super();
    const { inChannels: cin, outChannels: cout, stride, expandRatio: t, rng, bn } = options;
    if (stride !== 1 && stride !== 2) {
      throw new Error(`InvertedResidual(): stride must be 1 or 2, got ${stride}`);
    }
    const hidden = Math.round(cin * t);
    this.useResidual = stride === 1 && cin === cout;
    const layers: Module[] = [];
    if (t !== 1) {
      layers.push(convBnRelu6(b, { inChannels: cin, outChannels: hidden, kernelSize: 1, rng, bn }));
    }
    layers.push(
      convBnRelu6(b, {
        inChannels: hidden,
        outChannels: hidden,
        kernelSize: 3,
        stride,
        groups: hidden,
        rng,
        bn,
      }),
      new Conv2d(b, { inChannels: hidden, outChannels: cout, kernelSize: 1, bias: false, rng }),
      new BatchNorm2d(b, { numFeatures: cout, ...bn }),
    );
    this.conv = this.addChild("conv", new Sequential(layers));
  }

  forward(x: Tensor): Tensor {
    const y = this.conv.call(x);
    if (!this.useResidual) return y;
    const out = add(x, y);
    y.dispose();
    return out;
  }
}

/** [expand ratio t, output channels c, repeats n, stride of the first repeat s]. */
export type IrbStage = [t: number, c: number, n: number, s: number];

export interface IrbNetConfig {
  inChannels: number;
  numClasses: number;
  /** Channel multiplier (rounded to multiples of 8 as torchvision). Default 1. */
  width?: number;
  stemChannels?: number;
  stemStride?: number;
  blocks?: IrbStage[];
  lastChannels?: number;
  /** Seed of the deterministic initialisation. Default 0. */
  seed?: number;
  bn?: BnSettings;
}

/** The default: ~70k parameters for 1x32x32 MNIST-like input (must match tools/goldens/irb_golden.py). */
export const DEFAULT_IRB_CONFIG = {
  width: 1,
  stemChannels: 16,
  stemStride: 2,
  blocks: [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 1, 1]] as IrbStage[],
  lastChannels: 128,
} as const;

/** torchvision's _make_divisible: a multiple of `divisor`, never more than 10% below v. */
export function makeDivisible(v: number, divisor = 8): number {
  let out = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (out < 0.9 * v) out += divisor;
  return out;
}

export class IrbNet extends Module {
  readonly features: Sequential;
  readonly pool: GlobalAvgPool;
  readonly flatten: Flatten;
  readonly classifier: Sequential;

  constructor(features: Sequential, classifier: Sequential) {
    super();
    this.features = this.addChild("features", features);
    this.pool = this.addChild("pool", new GlobalAvgPool());
    this.flatten = this.addChild("flatten", new Flatten(1));
    this.classifier = this.addChild("classifier", classifier);
  }

  /** x [N, Cin, H, W] -> logits [N, numClasses]. */
  forward(x: Tensor): Tensor {
    return chain(x, [this.features, this.pool, this.flatten, this.classifier]);
  }

  /** Tags of the feature blocks ("features.0" ... ), as the ledger reports their saved bytes. */
  get blockTags(): string[] {
    return this.features.layers.map((m) => m.tag!);
  }
}

/** Build a MobileNetV2-style net: stem conv3x3 + BN + ReLU6, IRB stages, 1x1 conv + BN + ReLU6, pool, linear. */
export function buildIrbNet(b: Backend, config: IrbNetConfig): IrbNet {
  const width = config.width ?? DEFAULT_IRB_CONFIG.width;
  const blocks = config.blocks ?? DEFAULT_IRB_CONFIG.blocks;
  const rng = new Rng(config.seed ?? 0);
  const bn = config.bn;
  let c = makeDivisible((config.stemChannels ?? DEFAULT_IRB_CONFIG.stemChannels) * width);
  const features: Module[] = [
    convBnRelu6(b, {
      inChannels: config.inChannels,
      outChannels: c,
      kernelSize: 3,
      stride: config.stemStride ?? DEFAULT_IRB_CONFIG.stemStride,
      rng,
      bn,
    }),
  ];
  for (const [t, ch, n, s] of blocks) {
    const out = makeDivisible(ch * width);
    for (let i = 0; i < n; i++) {
      features.push(
        new InvertedResidual(b, {
          inChannels: c,
          outChannels: out,
          stride: i === 0 ? s : 1,
          expandRatio: t,
          rng,
          bn,
        }),
      );
      c = out;
    }
  }
  const last = makeDivisible((config.lastChannels ?? DEFAULT_IRB_CONFIG.lastChannels) * Math.max(1, width));
  features.push(convBnRelu6(b, { inChannels: c, outChannels: last, kernelSize: 1, rng, bn }));
  features.forEach((m, i) => m.tag = `features.${i}`);
  // Identity stands in for torchvision's Dropout so the Linear is "classifier.1".
  const classifier = new Sequential([
    new Identity(),
    new Linear(b, { inFeatures: last, outFeatures: config.numClasses, rng }),
  ]);
  return new IrbNet(new Sequential(features), classifier);
}
