/**
 * A new label set for an imported classifier (`train --num-classes N`): the final classifier, found from the
 * graph (the last layer with parameters before the logits: a Linear, i.e. Gemm or MatMul+Add, or a 1x1
 * convolution as in SqueezeNet), gets a fresh weight and bias with N outputs, initialised as PyTorch
 * initialises a new nn.Linear / nn.Conv2d (uniform +-1/sqrt(fan_in)). The tensors take the old ones'
 * initializer names, so `--out` writes them back with the new dims (and the output's class dim).
 */
import { Conv2d, Linear } from "../nn/layers.ts";
import { structureOf } from "../nn/trace.ts";
import { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";
import type { OnnxModule } from "./onnx_module.ts";

export interface ReplacedClassifier {
  /** Module path of the classifier layer. */
  name: string;
  inFeatures: number;
  oldClasses: number;
  classes: number;
}

export function replaceClassifier(model: OnnxModule, classes: number, seed = 0): ReplacedClassifier {
  if (!Number.isInteger(classes) || classes < 1) {
    throw new Error(`--num-classes ${classes} must be a positive integer`);
  }
  const found = structureOf(model).classifier;
  const name = model.namedModules().find(([, m]) => m === found?.layer)?.[0] ?? "?";
  const layer = found?.layer;
  const conv1x1 = layer instanceof Conv2d && layer.groups === 1 && layer.weight.shape[2] === 1 &&
    layer.weight.shape[3] === 1;
  if (!(layer instanceof Linear) && !conv1x1) {
    throw new Error(
      `--num-classes: the last layer before the logits ("${name}", ${
        layer?.constructor.name ?? "none"
      }) is not a Linear (Gemm, MatMul+Add) or 1x1 Conv classifier edgetrain can replace`,
    );
  }
  const l = layer as Linear | Conv2d;
  const w = l.weight;
  const oldClasses = w.shape[0], fanIn = w.size / oldClasses;
  const bound = 1 / Math.sqrt(fanIn);
  const rng = new Rng(seed);
  const make = (shape: number[], n: number) =>
    Tensor.from(w.backend, rng.uniforms(n, -bound, bound), shape, {
      category: "weights",
      requiresGrad: true,
    });
  const weight = make([classes, ...w.shape.slice(1)], classes * fanIn);
  model._replaceSource(w, weight);
  l.replaceParam("weight", weight);
  const b = l.bias;
  if (b) {
    const bias = make([classes], classes);
    model._replaceSource(b, bias);
    l.replaceParam("bias", bias);
  }
  return { name, inFeatures: fanIn, oldClasses, classes };
}
