/**
 * Regenerate src/onnx/onnx_pb.json (the protobufjs descriptor of ONNX's onnx.proto) from tools/onnx/onnx.proto.
 *
 *   deno run --allow-read --allow-write tools/onnx/gen_onnx_json.ts
 *
 * tools/onnx/onnx.proto is Debian's python3-onnx 1.12.0 copy (/usr/lib/python3/dist-packages/onnx/onnx.proto,
 * IR version 8). A JSON descriptor rather than generated classes: protobufjs builds the codecs from it at load
 * time, and the JSON diffs readably when the proto is updated.
 */
import protobuf from "protobufjs";

const protoPath = new URL("./onnx.proto", import.meta.url);
const outPath = new URL("../../src/onnx/onnx_pb.json", import.meta.url);

const parsed = protobuf.parse(await Deno.readTextFile(protoPath), { keepCase: false });
const json = JSON.stringify(parsed.root.toJSON({ keepComments: false }), null, 2);
await Deno.writeTextFile(outPath, json + "\n");
console.error(`Wrote ${outPath.pathname} (${json.length} bytes)`);
