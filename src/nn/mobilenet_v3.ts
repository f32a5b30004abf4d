/**
 * MobileNetV3-style nets (Howard et al. 2019): inverted residual blocks with hard-swish or ReLU, and
 * squeeze-excite gated by hard-sigmoid, built from the existing layers and ops. Small enough to train on a
 * CPU or lavapipe. State names follow torchvision's MobileNetV3 ("features.4.block.2.fc1.weight",
 * "classifier.3.weight") so the block structure MobileTL looks for is the same as in an imported torchvision
 * model.
 */
import type { Backend } from "../backend/backend.ts";
import { add, mul } from "../ops/elementwise.ts";
import { globalAvgPool } from "../ops/reduce.ts";
import { hardsigmoid, relu } from "../ops/activation.ts";
import { Rng } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import { Module, Sequential } from "./module.ts";
import { BatchNorm2d, Conv2d, Hardswish, Identity, Linear, ReLU } from "./layers.ts";
import { type BnSettings, IrbNet, makeDivisible } from "./mobilenet.ts";

export type V3Activation = "RE" | "HS";

/** [kernel size, expand ratio, output channels, squeeze-excite, activation, stride of the block]. */
export type V3Stage = [k: number, t: number, c: number, se: boolean, act: V3Activation, s: number];

function activation(act: V3Activation): Module {
  return act === "HS" ? new Hardswish() : new ReLU();
}

/** Conv (no bias) + BN (+ activation), indexed .0/.1/.2 as torchvision's Conv2dNormActivation. */
function convBnAct(
  b: Backend,
  o: {
    cin: number;
    cout: number;
    k: number;
    stride?: number;
    groups?: number;
    act: V3Activation | null;
    rng: Rng;
    bn?: BnSettings;
  },
): Sequential {
  const layers: Module[] = [
    new Conv2d(b, {
      inChannels: o.cin,
      outChannels: o.cout,
      kernelSize: o.k,
      stride: o.stride ?? 1,
      padding: (o.k - 1) >> 1,
      groups: o.groups ?? 1,
      bias: false,
      rng: o.rng,
    }),
    new BatchNorm2d(b, { numFeatures: o.cout, ...o.bn }),
  ];
  if (o.act) layers.push(activation(o.act));
  return new Sequential(layers);
}

/**
 * Squeeze-excite (Hu et al. 2018) as MobileNetV3 uses it: x * hardsigmoid(fc2(relu(fc1(avgpool(x))))),
 * fc1/fc2 being 1x1 convolutions with bias (torchvision's SqueezeExcitation).
 */
export class SqueezeExcite extends Module {
  readonly fc1: Conv2d;
  readonly fc2: Conv2d;

  constructor(b: Backend, options: { channels: number; squeeze: number; rng: Rng }) {
    super();
    const { channels: c, squeeze: s, rng } = options;
    this.fc1 = this.addChild("fc1", new Conv2d(b, { inChannels: c, outChannels: s, kernelSize: 1, rng }));
    this.fc2 = this.addChild("fc2", new Conv2d(b, { inChannels: s, outChannels: c, kernelSize: 1, rng }));
  }

  forward(x: Tensor): Tensor {
    const pooled = globalAvgPool(x);
    const h = this.fc1.call(pooled);
    pooled.dispose();
    const r = relu(h);
    h.dispose();
    const g = this.fc2.call(r);
    r.dispose();
    const scale = hardsigmoid(g);
    g.dispose();
    const out = mul(x, scale);
    scale.dispose();
    return out;
  }
}

export interface InvertedResidualV3Options {
  inChannels: number;
  outChannels: number;
  kernelSize: number;
  expandRatio: number;
  se: boolean;
  act: V3Activation;
  stride: number;
  rng: Rng;
  bn?: BnSettings;
}

/**
 * [1x1 expand conv + BN + act] (when the ratio is not 1), kxk depthwise conv + BN + act, [squeeze-excite],
 * 1x1 projection conv + BN; the input is added back when the stride is 1 and the channels are unchanged.
 */
export class InvertedResidualV3 extends Module {
  readonly block: Sequential;
  readonly useResidual: boolean;

  constructor(b: Backend, o: InvertedResidualV3Options) {
    super();
    if (o.stride !== 1 && o.stride !== 2) {
      throw new Error(`InvertedResidualV3(): stride must be 1 or 2, got ${o.stride}`);
    }
    const hidden = makeDivisible(o.inChannels * o.expandRatio);
    this.useResidual = o.stride === 1 && o.inChannels === o.outChannels;
    const { rng, bn } = o;
    const layers: Module[] = [];
    if (hidden !== o.inChannels) {
      layers.push(convBnAct(b, { cin: o.inChannels, cout: hidden, k: 1, act: o.act, rng, bn }));
    }
    layers.push(
      convBnAct(b, {
        cin: hidden,
        cout: hidden,
        k: o.kernelSize,
        stride: o.stride,
        groups: hidden,
        act: o.act,
        rng,
        bn,
      }),
    );
    if (o.se) {
      layers.push(new SqueezeExcite(b, { channels: hidden, squeeze: makeDivisible(hidden / 4), rng }));
    }
    layers.push(convBnAct(b, { cin: hidden, cout: o.outChannels, k: 1, act: null, rng, bn }));
    this.block = this.addChild("block", new Sequential(layers));
  }

  forward(x: Tensor): Tensor {
    const y = this.block.call(x);
    if (!this.useResidual) return y;
    const out = add(x, y);
    y.dispose();
    return out;
  }
}

export interface MobileNetV3Config {
  inChannels: number;
  numClasses: number;
  stemChannels?: number;
  stemStride?: number;
  blocks?: V3Stage[];
  lastChannels?: number;
  /** Width of the classifier's hidden layer. */
  hiddenFeatures?: number;
  seed?: number;
  bn?: BnSettings;
}

/**
 * The default for 1x32x32 MNIST-like input (~0.1M parameters): a hard-swish stem, two ReLU stages, three
 * hard-swish squeeze-excite blocks of expansion 6 on top, a 1x1 hard-swish conv and a 2-layer classifier.
 */
export const DEFAULT_V3_CONFIG = {
  stemChannels: 16,
  stemStride: 2,
  blocks: [
    [3, 1, 16, true, "RE", 1],
    [3, 4, 24, false, "RE", 2],
    [3, 4, 24, false, "RE", 1],
    [5, 6, 40, true, "HS", 2],
    [5, 6, 40, true, "HS", 1],
    [5, 6, 48, true, "HS", 1],
  ] as V3Stage[],
  lastChannels: 144,
  hiddenFeatures: 128,
} as const;

/**
 * Build a MobileNetV3-style net. It is an IrbNet (features, pool, flatten, classifier) whose feature blocks
 * are tagged "features.N" for the ledger's per-block saved bytes.
 */
export function buildMobileNetV3(b: Backend, config: MobileNetV3Config): IrbNet {
  const d = DEFAULT_V3_CONFIG;
  const rng = new Rng(config.seed ?? 0);
  const bn = config.bn;
  let c = config.stemChannels ?? d.stemChannels;
  const features: Module[] = [
    convBnAct(b, {
      cin: config.inChannels,
      cout: c,
      k: 3,
      stride: config.stemStride ?? d.stemStride,
      act: "HS",
      rng,
      bn,
    }),
  ];
  for (const [k, t, out, se, act, s] of config.blocks ?? d.blocks) {
    const cout = makeDivisible(out);
    features.push(
      new InvertedResidualV3(b, {
        inChannels: c,
        outChannels: cout,
        kernelSize: k,
        expandRatio: t,
        se,
        act,
        stride: s,
        rng,
        bn,
      }),
    );
    c = cout;
  }
  const last = config.lastChannels ?? d.lastChannels;
  features.push(convBnAct(b, { cin: c, cout: last, k: 1, act: "HS", rng, bn }));
  features.forEach((m, i) => m.tag = `features.${i}`);
  const hidden = config.hiddenFeatures ?? d.hiddenFeatures;
  // Identity stands in for torchvision's Dropout so the layers are classifier.0 and classifier.3.
  const classifier = new Sequential([
    new Linear(b, { inFeatures: last, outFeatures: hidden, rng }),
    new Hardswish(),
    new Identity(),
    new Linear(b, { inFeatures: hidden, outFeatures: config.numClasses, rng }),
  ]);
  return new IrbNet(new Sequential(features), classifier);
}
