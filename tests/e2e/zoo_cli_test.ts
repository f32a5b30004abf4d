/**
 * Bringing your own model, through the CLI as a user would: the small torchvision zoo (fixtures/models/zoo)
 * adapts and trains, blocks are found whatever the modules are named, a new label set gets a new classifier,
 * fixed-batch exports run at any batch or say how to re-export, and each friction ends in one clear line.
 */
import { equal, match, ok } from "node:assert/strict";
import { encode } from "fast-png";
import { runCli } from "./_cli.ts";
import { Rng } from "../../src/random.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { importOnnx } from "../../src/onnx/import.ts";
import { loadModel } from "../../src/onnx/model.ts";
import { Tensor } from "../../src/tensor.ts";

const ZOO = "fixtures/models/zoo";

/** An ImageFolder of `classes` sub-folders with `per` 24x24 RGB PNGs each, class-dependent brightness. */
async function imageFolder(classes: string[], per: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "edgetrain-zoo-" });
  const rng = new Rng(11);
  for (const [k, c] of classes.entries()) {
    await Deno.mkdir(`${dir}/${c}`);
    for (let i = 0; i < per; i++) {
      const data = Uint8Array.from(rng.uniforms(24 * 24 * 3, 0, 1), (v) => Math.round(40 + 60 * k + 50 * v));
      await Deno.writeFile(`${dir}/${c}/${i}.png`, encode({ width: 24, height: 24, data, channels: 3 }));
    }
  }
  return dir;
}

function json(r: { code: number; stdout: string; stderr: string }) {
  equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

const COMMON = ["--size", "64", "--backend", "cpu", "--json"];

Deno.test("edgetrain train --top-blocks 2 trains the top two blocks of ResNet, MobileNetV2 and ConvNeXt", async () => {
  const dir = await imageFolder([...Array(10).keys()].map((i) => `c${i}`), 2);
  const expected: Record<string, string[]> = {
    resnet18: ["layer3", "layer4"],
    mobilenet_v2: ["features.4", "features.5"],
    convnext_tiny: ["features.3", "features.5"],
  };
  for (const [model, blocks] of Object.entries(expected)) {
    const out = json(
      await runCli([
        "train",
        "--model",
        `${ZOO}/${model}_preserve.onnx`,
        "--images",
        dir,
        "--method",
        "full",
        "--top-blocks",
        "2",
        "--epochs",
        "1",
        "--batch",
        "10",
        ...COMMON,
      ]),
    );
    equal(out.top_blocks, 2, model);
    equal(JSON.stringify(out.trained_blocks), JSON.stringify(blocks), model);
    ok(out.trainable_parameters > 0 && Number.isFinite(out.train_loss), JSON.stringify(out));
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain train --method mobiletl finds inverted residual blocks in a model named stem/body/head", async () => {
  const dir = await imageFolder([...Array(10).keys()].map((i) => `c${i}`), 2);
  const out = json(
    await runCli([
      "train",
      "--model",
      `${ZOO}/irb_custom_preserve.onnx`,
      "--images",
      dir,
      "--method",
      "mobiletl",
      "--top-blocks",
      "2",
      "--epochs",
      "1",
      "--batch",
      "10",
      ...COMMON,
    ]),
  );
  equal(JSON.stringify(out.trained_blocks), JSON.stringify(["body.3", "body.4"]));
  equal(out.store, "mask");
  ok(Object.keys(out.saved_bytes_by_block).includes("body.4"), JSON.stringify(out.saved_bytes_by_block));
  // A net without a depthwise conv between 1x1 convs has nothing MobileTL trains: said in one line.
  const r = await runCli([
    "train",
    "--model",
    `${ZOO}/resnet18_preserve.onnx`,
    "--images",
    dir,
    "--method",
    "mobiletl",
    ...COMMON,
  ]);
  ok(r.code !== 0);
  match(r.stderr.trim(), /mobiletl: the model has no inverted residual blocks .*use --method full or bias/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain train --num-classes puts a new classifier on the model and --out writes it", async () => {
  const dir = await imageFolder(["cat", "dog", "owl"], 4);
  const args = ["--images", dir, "--method", "full", "--top-blocks", "1", "--epochs", "3", "--batch", "12"];
  // Without --num-classes: a 3-class folder on a 10-class model says what to add.
  const r = await runCli(["train", "--model", `${ZOO}/squeezenet1_1_preserve.onnx`, ...args, ...COMMON]);
  ok(r.code !== 0);
  equal(r.stderr.trim().split("\n").filter((l) => !l.includes(": warning: ")).length, 1, r.stderr);
  match(r.stderr, /has 3 classes but model .* outputs 10: add --num-classes 3/);
  // A flat folder without a labels file: where labels can come from, in one line.
  const flat = `${dir}/flat`;
  await Deno.mkdir(flat);
  for (const f of ["0.png", "1.png"]) await Deno.copyFile(`${dir}/cat/${f}`, `${flat}/${f}`);
  const u = await runCli([
    "train",
    "--model",
    `${ZOO}/resnet18_preserve.onnx`,
    "--images",
    flat,
    "--method",
    "full",
    ...COMMON,
  ]);
  equal(u.code, 2, u.stderr);
  match(
    u.stderr,
    /train learns from labelled images, but ".*flat" has no labels: give --labels, a labels\.csv/,
  );
  await Deno.remove(flat, { recursive: true });
  // A Linear head and SqueezeNet's 1x1 conv head.
  for (const model of ["resnet18", "squeezenet1_1"]) {
    const file = `${dir}/${model}_3.onnx`;
    const out = json(
      await runCli([
        "train",
        "--model",
        `${ZOO}/${model}_preserve.onnx`,
        ...args,
        "--num-classes",
        "3",
        "--out",
        file,
        ...COMMON,
      ]),
    );
    equal(out.classifier.classes, 3, model);
    equal(out.classifier.oldClasses, 10, model);
    // The written model reads back with 3 outputs, and predicts the folder it learned.
    const back = importOnnx(new CpuBackend(), await loadModel(file));
    const y = back.call(Tensor.zeros(back.parameters()[0].backend, [1, 3, 64, 64]));
    equal(y.shape.join(), "1,3", model);
    const p = json(await runCli(["predict", "--model", file, "--images", dir, ...COMMON]));
    equal(p.n, 12, model);
    if (model === "resnet18") {
      ok(p.error <= 0.5, `${model}: error ${p.error} after training on these images`);
    }
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain runs fixed-batch-1 exports at any batch, or says how to re-export", async () => {
  const dir = await imageFolder(["a", "b"], 3);
  for (const model of ["resnet18", "shufflenet_v2_x0_5", "vit"]) {
    const out = json(
      await runCli([
        "predict",
        "--model",
        `${ZOO}/${model}_eval_batch1.onnx`,
        "--images",
        dir,
        "--batch",
        "6",
        ...COMMON,
      ]),
    );
    equal(out.n, 6, model);
  }
  const r = await runCli([
    "predict",
    "--model",
    `${ZOO}/batch_baked_eval_batch1.onnx`,
    "--images",
    dir,
    "--batch",
    "6",
    ...COMMON,
  ]);
  ok(r.code !== 0);
  const lines = r.stderr.trim().split("\n").filter((l) => !l.includes(": warning: "));
  equal(lines.length, 1, r.stderr);
  match(lines[0], /exported with a fixed batch of 1/);
  match(lines[0], /dynamic_axes=\{"input": \{0: "batch"\}, "logits": \{0: "batch"\}\}/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain adapt --method bn and tent run on PRESERVE exports across the zoo", async () => {
  const dir = await imageFolder(["a", "b"], 4);
  // BN-adapt and TENT across the families (deno task zoo runs both on every PRESERVE export: docs/zoo.md).
  const cases: [string, string][] = [
    ["resnet50", "tent"],
    ["densenet121", "tent"],
    ["shufflenet_v2_x0_5", "tent"],
    ["efficientnet_b0", "bn"],
    ["convnext_tiny", "bn"],
    ["vit", "bn"],
    // LayerNorm-only models adapt their LayerNorm affine (issue 13 item 3).
    ["convnext_tiny", "tent"],
    ["vit", "rotta"],
  ];
  for (const [model, method] of cases) {
    const out = json(
      await runCli([
        "adapt",
        "--model",
        `${ZOO}/${model}_preserve.onnx`,
        "--images",
        dir,
        "--method",
        method,
        "--batch",
        "4",
        "--memory",
        "4",
        ...COMMON,
      ]),
    );
    equal(out.n, 8, `${model} ${method}`);
    ok(Number.isFinite(out.mean_entropy), `${model} ${method}: ${JSON.stringify(out)}`);
    if (method !== "bn") ok(out.updates > 0, `${model}: ${method} made no update`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("edgetrain adapt, plan and train name the PRESERVE re-export when a model has no normalisation layer to adapt (issue 13 item 3)", async () => {
  const dir = await imageFolder(["a", "b"], 2);
  const fix = /training=torch\.onnx\.TrainingMode\.PRESERVE/;
  for (const model of ["resnet18_eval", "squeezenet1_1_preserve"]) {
    const adapt = await runCli([
      "adapt",
      "--model",
      `${ZOO}/${model}.onnx`,
      "--images",
      dir,
      "--method",
      "tent",
      ...COMMON,
    ]);
    equal(adapt.code, 1, adapt.stderr);
    // One line says it all (after the preprocessing warning this test's images get).
    match(adapt.stderr.trim().split("\n").at(-1)!, fix);
    const plan = await runCli([
      "plan",
      "--model",
      `${ZOO}/${model}.onnx`,
      "--method",
      "tent",
      "--input",
      "3,64,64",
    ]);
    equal(plan.code, 1, plan.stderr);
    match(plan.stdout + plan.stderr, fix);
  }
  const train = await runCli([
    "train",
    "--model",
    `${ZOO}/mobilenet_v2_eval.onnx`,
    "--images",
    dir,
    "--method",
    "mobiletl",
    "--num-classes",
    "2",
    ...COMMON,
  ]);
  match(train.stderr, fix);
  equal(train.code, 0, train.stderr);
  await Deno.remove(dir, { recursive: true });
});
