/**
 * mobilenet_v2 (torchvision, PRESERVE export) at 224x224: the fixture with its input's spatial dims
 * rewritten, made at test time so that no second 9 MB fixture is committed. The graph has no fixed spatial
 * sizes elsewhere (convolutions and a global pool), so the rewrite is all it takes.
 */
import { decodeModelProto, encodeModelProto } from "../../src/onnx/onnx_proto.ts";

export const MOBILENET_V2 = "fixtures/models/mobilenet_v2_preserve.onnx";

/** Write mobilenet_v2 with a [1, 3, size, size] input to `path`. */
export async function writeMobileNetV2At(path: string, size = 224): Promise<void> {
  const root = new URL("../../", import.meta.url).pathname;
  const model = decodeModelProto(await Deno.readFile(root + MOBILENET_V2));
  const dims = model.graph!.input[0].type!.tensorType!.shape!.dim;
  dims[2] = { dimValue: size };
  dims[3] = { dimValue: size };
  await Deno.writeFile(path, encodeModelProto(model));
}

if (import.meta.main) await writeMobileNetV2At(Deno.args[0] ?? "M224.onnx", Number(Deno.args[1] ?? 224));
