/**
 * Domain keys without labels: per-channel mean and variance of the inputs of a model's first BatchNorm
 * layers, as diagonal Gaussians, compared by their symmetric KL divergence.
 *
 * Which layers: the BN layers with no BN (and so no adapted state) between them and the model input — in a
 * conv net the stem's BN, whose input is the stem conv of the raw image. Their input does not depend on which
 * slot is active, so a key recorded while one slot answered compares with a window seen under another.
 * Deeper BN inputs would (they follow the active slot's normalisation). Their source key is free: the BN's
 * running mean and variance are exactly these statistics over the training data.
 *
 * A key keeps the mean of per-frame means and of per-frame mean squares, so keys and windows pool exactly
 * (variance = E[x^2] - E[x]^2 over every pixel of every frame) and merge by weighting with frame counts.
 */
import { noGrad } from "../../autograd/tape.ts";
import { BatchNorm2d } from "../../nn/layers.ts";
import { type Module, onForward } from "../../nn/module.ts";
import { structureOf } from "../../nn/trace.ts";
import { mul } from "../../ops/elementwise.ts";
import { mean } from "../../ops/reduce.ts";
import type { Tensor } from "../../tensor.ts";
import { predictMode } from "../tta.ts";

/** Per-frame statistics of a chunk: row i holds frame i's channel means and mean squares. */
export interface FrameMoments {
  n: number;
  channels: number;
  /** [n * channels] */
  mu: Float32Array;
  /** [n * channels] */
  sq: Float32Array;
}

/** A domain key: mean of per-frame channel means and mean squares over `count` frames. */
export interface Key {
  count: number;
  mu: Float32Array;
  sq: Float32Array;
}

/** Variances below this are noise (a dead channel, a blank frame): they must not dominate the distance. */
const VAR_FLOOR = 1e-6;
/** One channel's divergence is capped, so that a channel gone flat cannot outvote the others. */
const CHANNEL_CAP = 50;

/**
 * Symmetric KL divergence between two diagonal Gaussians, averaged over channels:
 * KL(p||q) + KL(q||p) = (vp + dm^2) / 2vq + (vq + dm^2) / 2vp - 1 per channel.
 */
export function symmetricKl(aMu: ArrayLike<number>, aVar: ArrayLike<number>, b: Key): number {
  const c = aMu.length;
  let total = 0;
  for (let k = 0; k < c; k++) {
    const vb = Math.max(b.sq[k] - b.mu[k] * b.mu[k], VAR_FLOOR);
    const va = Math.max(aVar[k], VAR_FLOOR);
    const dm2 = (aMu[k] - b.mu[k]) ** 2;
    total += Math.min((va + dm2) / (2 * vb) + (vb + dm2) / (2 * va) - 1, CHANNEL_CAP);
  }
  return c ? total / c : 0;
}

/** The distance between two keys. */
export function keyDistance(a: Key, b: Key): number {
  return symmetricKl(a.mu, variances(a), b);
}

export function variances(k: Key): Float64Array {
  return Float64Array.from(k.mu, (m, i) => Math.max(k.sq[i] - m * m, VAR_FLOOR));
}

/** The key of frames `rows` of m (all when omitted). */
export function pool(m: FrameMoments, rows?: readonly number[]): Key {
  const c = m.channels;
  // Sums in double precision; the key itself is float32, so that a checkpoint holds it exactly.
  const mu = new Float64Array(c), sq = new Float64Array(c);
  const take = rows ?? Array.from({ length: m.n }, (_, i) => i);
  for (const i of take) {
    for (let k = 0; k < c; k++) {
      mu[k] += m.mu[i * c + k];
      sq[k] += m.sq[i * c + k];
    }
  }
  const n = Math.max(take.length, 1);
  return {
    count: take.length,
    mu: Float32Array.from(mu, (v) => v / n),
    sq: Float32Array.from(sq, (v) => v / n),
  };
}

/** The distance of frame i alone (its own pixels' Gaussian) to a key. */
export function frameDistance(m: FrameMoments, i: number, key: Key): number {
  const c = m.channels;
  const mu = m.mu.subarray(i * c, (i + 1) * c);
  const v = new Float64Array(c);
  for (let k = 0; k < c; k++) v[k] = m.sq[i * c + k] - mu[k] * mu[k];
  return symmetricKl(mu, v, key);
}

/**
 * The key of m's frames without its outliers: frames whose own distance to the median frame (channel by
 * channel, a centre one odd frame cannot move) is more than `factor` times the typical frame's are left out
 * (at most a quarter of them), so one odd frame in a window (a flash, a blocked lens) does not move its key.
 */
export function robustPool(m: FrameMoments, factor = 8): Key {
  if (m.n < 4) return pool(m);
  const c = m.channels;
  const median = (v: Float32Array, k: number) => {
    const xs = Array.from({ length: m.n }, (_, i) => v[i * c + k]).sort((a, b) => a - b);
    return xs[xs.length >> 1];
  };
  const centre: Key = {
    count: 1,
    mu: Float32Array.from({ length: c }, (_, k) => median(m.mu, k)),
    sq: Float32Array.from({ length: c }, (_, k) => median(m.sq, k)),
  };
  const d = Array.from({ length: m.n }, (_, i) => frameDistance(m, i, centre));
  const sorted = [...d].sort((a, b) => a - b);
  const limit = factor * sorted[sorted.length >> 1] + 1e-6;
  const keep = d.flatMap((v, i) => (v <= limit ? [i] : []));
  return keep.length >= m.n - Math.floor(m.n / 4) ? pool(m, keep) : pool(m);
}

/** `into` absorbs `from` (frame-count weighted); counts are capped at `memory` so old frames fade. */
export function mergeKey(into: Key, from: Key, memory = Infinity): Key {
  const total = into.count + from.count;
  if (total === 0) return { count: 0, mu: into.mu.slice(), sq: into.sq.slice() };
  const w = from.count / total;
  return {
    count: Math.min(total, memory),
    mu: into.mu.map((v, i) => v + w * (from.mu[i] - v)),
    sq: into.sq.map((v, i) => v + w * (from.sq[i] - v)),
  };
}

/** Rows [from, to) of m. */
export function rowsOf(m: FrameMoments, from: number, to: number): FrameMoments {
  const c = m.channels;
  return { n: to - from, channels: c, mu: m.mu.slice(from * c, to * c), sq: m.sq.slice(from * c, to * c) };
}

/** Frames of a and then b as one set. */
export function concatMoments(a: FrameMoments, b: FrameMoments): FrameMoments {
  if (a.n === 0) return b;
  const join = (x: Float32Array, y: Float32Array) => {
    const out = new Float32Array(x.length + y.length);
    out.set(x);
    out.set(y, x.length);
    return out;
  };
  return { n: a.n + b.n, channels: a.channels, mu: join(a.mu, b.mu), sq: join(a.sq, b.sq) };
}

export function emptyMoments(channels: number): FrameMoments {
  return { n: 0, channels, mu: new Float32Array(0), sq: new Float32Array(0) };
}

/**
 * Computes the per-frame moments of the key layers' inputs for a chunk. An ONNX import runs only the ops up
 * to the last key layer (its stem: a small fraction of the forward), so the slot can be chosen before the
 * chunk is answered; another model runs one forward without recording a graph.
 */
export class KeyProbe {
  readonly layers: BatchNorm2d[];
  readonly channels: number;
  /** Layers the key layers' inputs depend on (no adapter may sit there, or keys would follow the slot). */
  readonly front = new Set<Module>();
  /** The last graph step the probe must run (ONNX imports), or null: the whole forward. */
  readonly #lastStep: number | null;

  constructor(readonly model: Module) {
    const s = structureOf(model);
    const nodes = s.graph.nodes;
    const isBn = (i: number) => nodes[i].layer instanceof BatchNorm2d;
    // below[i]: some BN lies on a path from the input to node i (exclusive).
    const below: boolean[] = [];
    const layers: BatchNorm2d[] = [];
    let last = -1;
    nodes.forEach((n, i) => {
      below[i] = n.inputs.some((j) => j >= 0 && (below[j] || isBn(j)));
      if (!below[i] && n.layer && !isBn(i)) this.front.add(n.layer);
      if (isBn(i) && !below[i] && !layers.includes(n.layer as BatchNorm2d)) {
        layers.push(n.layer as BatchNorm2d);
        last = i;
      }
    });
    if (!layers.length) {
      throw new Error(
        "The adapter bank keys domains by BatchNormalization inputs and the model has none (was BN folded " +
          "into Conv at export? Export with training=TrainingMode.PRESERVE)",
      );
    }
    this.layers = layers;
    this.channels = layers.reduce((s, l) => s + l.runningMean.size, 0);
    this.#lastStep = "runRange" in model ? last : null;
  }

  /** The source domain's key: the key layers' running statistics (population mean and variance). */
  async sourceKey(count: number): Promise<Key> {
    const mu = new Float32Array(this.channels), sq = new Float32Array(this.channels);
    let at = 0;
    for (const l of this.layers) {
      const m = await l.runningMean.data(), v = await l.runningVar.data();
      for (let k = 0; k < m.length; k++) {
        mu[at + k] = m[k];
        sq[at + k] = v[k] + m[k] * m[k];
      }
      at += m.length;
    }
    return { count, mu, sq };
  }

  /** Per-frame moments of x [n, ...]'s key-layer inputs. */
  async moments(x: Tensor): Promise<FrameMoments> {
    const n = x.shape[0];
    const wanted = new Set<Module>(this.layers);
    const got = new Map<Module, [Tensor, Tensor]>();
    predictMode(this.model);
    const stop = onForward((module, _out, input) => {
      if (!wanted.has(module) || got.has(module)) return;
      const sq = mul(input, input);
      got.set(module, [mean(input, [2, 3]), mean(sq, [2, 3])]);
      sq.dispose();
    });
    try {
      noGrad(() => {
        const out = this.#lastStep === null
          ? this.model.call(x)
          : (this.model as unknown as { runRange(x: Tensor, a: number, b: number): Tensor })
            .runRange(x, 0, this.#lastStep);
        out.dispose();
      });
    } finally {
      stop();
    }
    const out: FrameMoments = {
      n,
      channels: this.channels,
      mu: new Float32Array(n * this.channels),
      sq: new Float32Array(n * this.channels),
    };
    let at = 0;
    try {
      for (const l of this.layers) {
        const pair = got.get(l);
        if (!pair) {
          throw new Error("The adapter bank's key probe did not reach a key BatchNormalization layer");
        }
        const c = l.runningMean.size;
        const [m, s] = await Promise.all(pair.map((t) => t.data()));
        for (let i = 0; i < n; i++) {
          for (let k = 0; k < c; k++) {
            out.mu[i * this.channels + at + k] = m[i * c + k];
            out.sq[i * this.channels + at + k] = s[i * c + k];
          }
        }
        at += c;
      }
    } finally {
      for (const pair of got.values()) for (const t of pair) t.dispose();
    }
    return out;
  }
}
