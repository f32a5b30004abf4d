/**
 * Lossy saved-activation codecs: fp16 (2 per u32 word), int8 (4 per word) and int4 (8 per word, S2A-style
 * packing), each a new "saved" storage that the ledger counts at its real size, so the memory they save is
 * measured. The forward's fp32 tensor is not retained: it dies with the forward like any activation.
 *
 * int8/int4 are affine (asymmetric) per group, Mesa-style per-channel scales: scale = (max - min) / (2^b - 1)
 * and offset min per group, so ReLU-family outputs (all >= 0) spend no code on negative values. A group is
 * one (sample, channel) plane of an NCHW tensor when the plane has at least MIN_GROUP elements, else
 * MIN_GROUP consecutive elements (small planes, [N, C] features): per-group parameters cost 8 bytes, which
 * would dominate tiny groups. Round trip: |x - q(x)| <= scale/2 per element (kernels.ts quantize).
 */
import type { Backend, Storage } from "../backend/backend.ts";
import { activeTag } from "../autograd/tape.ts";
import { Tensor } from "../tensor.ts";
import type { Codec, CodecName, SavedTensor } from "./codecs.ts";

/** Smallest group of a quantised codec, in elements (see the module comment). */
export const MIN_GROUP = 64;

/** Elements per group that the int8/int4 codecs use for a tensor of `shape`. */
export function groupSizeFor(shape: readonly number[]): number {
  const plane = shape.length === 4 ? shape[2] * shape[3] : 0;
  return plane >= MIN_GROUP ? plane : MIN_GROUP;
}

/** A saved tensor backed by codec-owned storages; get() decodes into a fresh tensor. */
function savedOf(
  b: Backend,
  storages: Storage[],
  shape: readonly number[],
  decode: (out: Tensor) => void,
): SavedTensor {
  let released = false;
  return {
    bytes: storages.reduce((s, st) => s + st.bytes, 0),
    get: () => {
      if (released) throw new Error("Saved tensor used after release");
      const out = Tensor.empty(b, shape);
      decode(out);
      return out;
    },
    release: () => {
      if (released) return;
      released = true;
      for (const s of storages) b.release(s);
    },
  };
}

export const fp16Codec: Codec = {
  name: "fp16",
  encode(t: Tensor): SavedTensor {
    const b = t.backend, n = t.size;
    const packed = b.alloc(Math.ceil(n / 2), { dtype: "u32", category: "saved", tag: activeTag() });
    b.run("f16_pack", { x: t.storage, out: packed, attrs: { n } });
    return savedOf(b, [packed], t.shape, (out) => {
      b.run("f16_unpack", { packed, out: out.storage, attrs: { n } });
    });
  },
};

function intCodec(name: CodecName, bits: 4 | 8): Codec {
  return {
    name,
    encode(t: Tensor): SavedTensor {
      const b = t.backend, n = t.size;
      const groupSize = groupSizeFor(t.shape);
      const tag = activeTag();
      const packed = b.alloc(Math.ceil(n / (32 / bits)), { dtype: "u32", category: "saved", tag });
      const params = b.alloc(2 * Math.ceil(n / groupSize), { category: "saved", tag });
      const attrs = { n, bits, groupSize };
      b.run("quantize", { x: t.storage, params, out: packed, attrs });
      return savedOf(b, [packed, params], t.shape, (out) => {
        b.run("dequantize", { packed, params, out: out.storage, attrs });
      });
    },
  };
}

export const int8Codec: Codec = intCodec("int8", 8);
export const int4Codec: Codec = intCodec("int4", 4);

/** Bytes a codec keeps for n elements of `shape` (what the ledger will count), for planners and tests. */
export function encodedBytes(codec: CodecName, shape: readonly number[]): number {
  const n = shape.reduce((p, d) => p * d, 1);
  switch (codec) {
    case "fp32":
      return 4 * n;
    case "fp16":
      return 4 * Math.ceil(n / 2);
    case "int8":
    case "int4": {
      const bits = codec === "int8" ? 8 : 4;
      return 4 * Math.ceil(n / (32 / bits)) + 8 * Math.ceil(n / groupSizeFor(shape));
    }
  }
}
