/**
 * The TENT-like step benchmark of issue #2: forward in train mode (batch statistics), mean softmax entropy,
 * backward to the BN affine parameters only, Adam — on the default MobileNetV2-style IRB net at batch 100,
 * 1x32x32 input. edgetrain (WebGPU, one command buffer per step) next to TF.js (tfjs-backend-webgpu on the
 * same adapter) doing the same work from the same weights; the first step's losses are compared to prove it.
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs"; // registers the gradient functions tfjs-core alone lacks
import "@tensorflow/tfjs-backend-webgpu";
import type { Backend } from "../../src/backend/backend.ts";
import { buildIrbNet, InvertedResidual, type IrbNet } from "../../src/nn/mobilenet.ts";
import { Sequential } from "../../src/nn/module.ts";
import type { Module } from "../../src/nn/module.ts";
import { BatchNorm2d, Conv2d, type Linear } from "../../src/nn/layers.ts";
import { Tent } from "../../src/methods/tent.ts";
import { Tensor } from "../../src/tensor.ts";
import { Rng } from "../../src/random.ts";

export interface StepTiming {
  ms_per_step: number;
  first_loss: number;
  steps: number;
}

export const TENT_BATCH = 100;

function input(batch: number): Float32Array {
  return new Rng(11).normals(batch * 32 * 32);
}

export async function edgetrainTentStep(
  b: Backend,
  steps = 5,
  batch = TENT_BATCH,
): Promise<StepTiming & { peak_saved_bytes: number }> {
  const net = buildIrbNet(b, { inChannels: 1, numClasses: 10 });
  const tent = await Tent.create(net);
  const x = Tensor.from(b, input(batch), [batch, 1, 32, 32]);
  const first = await tent.learn(x); // warm-up: compiles pipelines, fills the pool
  b.ledger.resetPeak();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await tent.learn(x);
  await b.sync();
  const ms = (performance.now() - t0) / steps;
  const peak = b.ledger.snapshot().peak.saved;
  x.dispose();
  tent.dispose();
  net.dispose();
  return { ms_per_step: ms, first_loss: first.entropy!, steps, peak_saved_bytes: peak };
}

/** TF.js weights in its layouts from the edgetrain net's state (so both do the same arithmetic). */
type TfLayer = (x: tf.Tensor4D) => tf.Tensor4D;

function tfConv(m: Conv2d, state: Record<string, Float32Array>, prefix: string): TfLayer {
  const [cout, cinG, kh, kw] = m.weight.shape;
  const w = state[`${prefix}.weight`];
  const depthwise = m.groups > 1;
  if (depthwise && cinG !== 1) throw new Error("bench: only depthwise grouped convs are mirrored");
  // torch [cout, cin/g, kh, kw] -> TF conv [kh, kw, cin, cout] or depthwise [kh, kw, cin, 1].
  const shape: [number, number, number, number] = depthwise ? [kh, kw, cout, 1] : [kh, kw, cinG, cout];
  const data = new Float32Array(w.length);
  for (let o = 0; o < cout; o++) {
    for (let i = 0; i < cinG; i++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          const src = ((o * cinG + i) * kh + y) * kw + x;
          const dst = depthwise ? ((y * kw + x) * cout + o) : (((y * kw + x) * cinG + i) * cout + o);
          data[dst] = w[src];
        }
      }
    }
  }
  const wt = tf.tensor4d(data, shape);
  const pad = m.padding[0];
  const pads: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [pad, pad],
    [pad, pad],
    [0, 0],
  ];
  const s = m.stride[0];
  return (x) =>
    depthwise
      ? tf.depthwiseConv2d(x, wt as tf.Tensor4D, s, pads as unknown as "valid")
      : tf.conv2d(x, wt as tf.Tensor4D, s, pads as unknown as "valid");
}

function tfBn(
  m: BatchNorm2d,
  state: Record<string, Float32Array>,
  prefix: string,
  vars: tf.Variable[],
): TfLayer {
  const gamma = tf.variable(tf.tensor1d(state[`${prefix}.weight`]));
  const beta = tf.variable(tf.tensor1d(state[`${prefix}.bias`]));
  vars.push(gamma, beta);
  return (x) => {
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    return tf.batchNorm(x, mean, variance, beta, gamma, m.eps) as tf.Tensor4D;
  };
}

function mirror(
  m: Module,
  prefix: string,
  state: Record<string, Float32Array>,
  vars: tf.Variable[],
): TfLayer {
  const p = (s: string) => (prefix ? `${prefix}.${s}` : s);
  if (m instanceof Sequential) {
    const layers = m.layers.map((l, i) => mirror(l, p(String(i)), state, vars));
    return (x) => layers.reduce((h, f) => f(h), x);
  }
  if (m instanceof InvertedResidual) {
    const body = mirror(m.conv, p("conv"), state, vars);
    return (x) => (m.useResidual ? tf.add(x, body(x)) : body(x)) as tf.Tensor4D;
  }
  if (m instanceof Conv2d) return tfConv(m, state, prefix);
  if (m instanceof BatchNorm2d) return tfBn(m, state, prefix, vars);
  if ((m as { kind?: string }).kind === "ReLU6") return (x) => tf.relu6(x);
  throw new Error(`bench: cannot mirror ${m.constructor.name} at "${prefix}"`);
}

export async function tfjsTentStep(
  net: IrbNet,
  steps = 5,
  batch = TENT_BATCH,
): Promise<StepTiming & { backend: string }> {
  await tf.setBackend("webgpu");
  await tf.ready();
  const state = await net.state();
  const vars: tf.Variable[] = [];
  const features = mirror(net.features, "features", state, vars);
  const lin = net.classifier.layers[1] as Linear;
  const [out, inF] = lin.weight.shape;
  const wT = tf.transpose(tf.tensor2d(state["classifier.1.weight"], [out, inF]));
  const bias = tf.tensor1d(state["classifier.1.bias"]);
  // NHWC input with the same values as edgetrain's NCHW [batch, 1, 32, 32] (one channel: same order).
  const x = tf.tensor4d(input(batch), [batch, 32, 32, 1]);
  const opt = tf.train.adam(1e-3, 0.9, 0.999, 1e-8);
  const loss = () =>
    tf.tidy(() => {
      const h = features(x);
      const pooled = tf.mean(h, [1, 2]) as tf.Tensor2D;
      const logits = tf.add(tf.matMul(pooled, wT), bias) as tf.Tensor2D;
      const logp = tf.logSoftmax(logits);
      return tf.neg(tf.mean(tf.sum(tf.mul(tf.exp(logp), logp), 1))) as tf.Scalar;
    });
  const first = opt.minimize(loss, true, vars)!;
  const firstLoss = (await first.data())[0];
  first.dispose();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const l = opt.minimize(loss, true, vars)!;
    await l.data(); // same as edgetrain: the loss (logits) is read back every step
    l.dispose();
  }
  const ms = (performance.now() - t0) / steps;
  x.dispose();
  for (const v of vars) v.dispose();
  return { ms_per_step: ms, first_loss: firstLoss, steps, backend: tf.getBackend() };
}
