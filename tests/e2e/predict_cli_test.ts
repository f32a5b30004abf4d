import { equal, match, ok } from "node:assert/strict";
import { runCli, stream, STREAMS } from "./_cli.ts";
import { decodeModelProto, encodeModelProto } from "../../src/onnx/onnx_proto.ts";

const TORCH = "fixtures/models/torch_mnist_cnn";

Deno.test("edgetrain predict reproduces PyTorch's accuracy on a PyTorch-exported model (eval and PRESERVE forms)", async () => {
  const expected = JSON.parse(await Deno.readTextFile(`${TORCH}.errors.json`)).errors as Record<
    string,
    number
  >;
  const names = ["clean", "gaussian_noise-s5", "motion_blur-s5"];
  for (const form of ["eval", "preserve"]) {
    const r = await runCli([
      "predict",
      "--model",
      `${TORCH}_${form}.onnx`,
      ...names.flatMap(stream),
      "--backend",
      "cpu",
      "--json",
    ]);
    equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    equal(lines.length, 1, "exactly one JSON object on stdout");
    const out = JSON.parse(lines[0]);
    equal(out.n, 1500);
    equal(out.backend, "cpu");
    ok(out.ms_per_batch > 0);
    names.forEach((name, i) => {
      const gap = Math.abs(out.streams[i].error - expected[name]);
      // Within 0.1 point: with 500 images that means the same number of wrong predictions.
      ok(gap <= 0.001, `${form} ${name}: edgetrain ${out.streams[i].error} vs PyTorch ${expected[name]}`);
    });
  }
});

Deno.test("edgetrain predict ends bad input with one clear line on stderr and a non-zero exit", async () => {
  const dir = await Deno.makeTempDir();
  const model = ["--model", `${TORCH}_eval.onnx`, "--backend", "cpu"];
  const cases: [string, string[], RegExp][] = [
    ["missing file", [...model, "--images", `${dir}/nope-idx3-ubyte`], /Cannot read images .*no such file/],
    [
      "missing model",
      ["--model", `${dir}/nope.onnx`, "--images", `${STREAMS}/clean-images-idx3-ubyte.gz`],
      /nope\.onnx/,
    ],
  ];
  // IDX with a wrong magic, and one truncated.
  await Deno.writeFile(
    `${dir}/bad-magic-idx3-ubyte`,
    new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28]),
  );
  cases.push([
    "wrong magic",
    [...model, "--images", `${dir}/bad-magic-idx3-ubyte`],
    /magic 0x00000000 is not 0x00000803/,
  ]);
  await Deno.writeFile(
    `${dir}/short-idx3-ubyte`,
    new Uint8Array([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3]),
  );
  cases.push(["truncated", [...model, "--images", `${dir}/short-idx3-ubyte`], /short-idx3-ubyte/]);
  // 28x28 digits padded to 32x32 do not fit a 28x28 model.
  cases.push([
    "size",
    [...model, ...stream("clean"), "--pad", "2"],
    /preprocess to 1x32x32, but model .* expects 1x28x28/,
  ]);
  // Labels of another stream length.
  await Deno.writeFile(`${dir}/three-labels-idx1-ubyte`, new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]));
  cases.push([
    "labels count",
    [
      ...model,
      "--images",
      `${STREAMS}/clean-images-idx3-ubyte.gz`,
      "--labels",
      `${dir}/three-labels-idx1-ubyte`,
    ],
    /3 labels.*500|500.*3/,
  ]);
  cases.push(["NaN flag", [...model, ...stream("clean"), "--std", "0"], /std/]);
  // A real export with two nodes changed to ops edgetrain does not implement: one error names both.
  const proto = decodeModelProto(await Deno.readFile(`${TORCH}_eval.onnx`));
  const [r1, r2] = proto.graph!.node.filter((n) => n.opType === "Relu");
  r1.opType = "Celu";
  r2.opType = "Selu";
  await Deno.writeFile(`${dir}/celu.onnx`, encodeModelProto(proto));
  cases.push([
    "unsupported ops",
    ["--model", `${dir}/celu.onnx`, "--backend", "cpu", ...stream("clean")],
    new RegExp(
      `2 nodes cannot run: unsupported ONNX op "Celu" in node "${r1.name}"; ` +
        `unsupported ONNX op "Selu" in node "${r2.name}"`,
    ),
  ]);
  for (const [what, args, pattern] of cases) {
    const r = await runCli(["predict", ...args]);
    ok(r.code !== 0, `${what}: exit code ${r.code}`);
    const lines = r.stderr.trim().split("\n").filter((l) => !l.startsWith("edgetrain: WebGPU unavailable"));
    equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
    match(lines[0], pattern, what);
    equal(r.stdout, "", `${what}: nothing on stdout`);
  }
  await Deno.remove(dir, { recursive: true });
});
