/** Issue 14 (NaN/Inf): a model whose weights hold NaN or infinity is refused at load, naming the tensor. */
import { ok, throws } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { buildIrbNet } from "../../src/nn/mobilenet.ts";
import { encodeModel } from "../../src/onnx/export.ts";
import { moduleToOnnx } from "../../src/onnx/from_module.ts";
import { decodeModel, loadModel } from "../../src/onnx/model.ts";

async function smallOnnx(): Promise<Uint8Array> {
  const b = new CpuBackend();
  const net = buildIrbNet(b, {
    inChannels: 1,
    numClasses: 10,
    stemChannels: 8,
    blocks: [[1, 8, 1, 1]],
    lastChannels: 16,
    seed: 3,
  });
  const bytes = await moduleToOnnx(net, { inputShape: [1, 16, 16] });
  b.dispose();
  return bytes;
}

Deno.test("decodeModel() and loadModel() refuse a NaN or infinite weight, naming the tensor (issue 14: NaN/Inf)", async () => {
  const clean = decodeModel(await smallOnnx());
  const [name, weight] = [...clean.graph.initializers].find(([, t]) =>
    t.dtype === "float32" && t.data.length > 8
  )!;
  for (const bad of [NaN, Infinity, -Infinity]) {
    const values = Float32Array.from(weight.data as Float32Array);
    values[5] = bad;
    const bytes = encodeModel(clean, { initializers: { [name]: values } });
    throws(() => decodeModel(bytes), (e: Error) => {
      ok(e.message.includes(`"${name}"`) && e.message.includes(String(bad)), e.message);
      return true;
    });
    const dir = await Deno.makeTempDir();
    await Deno.writeFile(`${dir}/m.onnx`, bytes);
    await loadModel(`${dir}/m.onnx`).then(
      () => ok(false, "loadModel() accepted a non-finite weight"),
      (e: Error) => ok(e.message.includes(`${dir}/m.onnx`) && e.message.includes(`"${name}"`), e.message),
    );
    await Deno.remove(dir, { recursive: true });
  }
});
