/**
 * A seeded slice of `deno task fuzz` (tools/fuzz.ts), issue 14: mutated PNG, JPEG, WebP, BMP, IDX, ONNX and
 * checkpoint bytes through the real parsers; none may throw anything but the parser's own error. The whole
 * campaign (100,000 inputs) is the task; this slice keeps the harness itself honest in every test run.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { AttributeType, decodeModelProto, encodeModelProto } from "../../src/onnx/onnx_proto.ts";
import { decodeModel } from "../../src/onnx/model.ts";
import { HttpError, parseHead } from "../../src/service/http1_wire.ts";
import { FORMATS, runFuzz } from "../../tools/fuzz.ts";

Deno.test("runFuzz() over 1,400 mutated inputs of every format finds no crash (issue 14: fuzz)", async () => {
  const report = await runFuzz({ seed: 14, count: 1400 });
  equal(report.inputs, 1400);
  deepEqual(Object.keys(report.byFormat).sort(), [...FORMATS].sort());
  deepEqual(report.crashes, []);
  // The mutations reach past the parsers' first checks: some inputs of each image format still decode.
  for (const f of ["png", "jpeg", "webp", "bmp", "onnx"]) {
    ok((report.accepted[f] ?? 0) > 0, `${f}: ${JSON.stringify(report.accepted)}`);
  }
});

Deno.test("parseHead(), decodeModel(): inputs the fuzzer once crashed on now get the parser's own error (issue 14: fuzz)", async () => {
  // A header value with bytes 0x80-0x9f: windows-1252 decoding made it a non-ByteString (TypeError).
  const head = new Uint8Array([
    ...new TextEncoder().encode("GET / HTTP/1.1\r\nX-A: "),
    0x80,
    0x9f,
    13,
    10,
    13,
    10,
  ]);
  equal(parseHead(head).headers.get("x-a"), "\x80\x9f", "obs-text is a valid header value, byte for byte");
  throws(() => parseHead(new TextEncoder().encode("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n")), HttpError);
  // An ONNX attribute typed TENSOR without a tensor (TypeError on null), and one typed STRING with its bytes
  // unset (protobufjs's default [] is not a Uint8Array).
  const proto = decodeModelProto(
    await Deno.readFile(new URL("../../fixtures/models/small_cnn_preserve.onnx", import.meta.url)),
  );
  const attr = proto.graph!.node.find((n) => n.attribute.length)!.attribute[0];
  attr.type = AttributeType.TENSOR;
  attr.t = null;
  throws(
    () => decodeModel(encodeModelProto(proto)),
    (e: Error) => !(e instanceof TypeError) && /holds no tensor/.test(e.message),
  );
  attr.type = AttributeType.STRING;
  attr.s = [] as unknown as Uint8Array;
  try {
    decodeModel(encodeModelProto(proto));
  } catch (e) {
    ok(!(e instanceof TypeError), (e as Error).message);
  }
});
