/**
 * The small torchvision zoo (fixtures/models/zoo, tools/fixtures/export_zoo.py) against PyTorch's logits on
 * every backend: eval and PRESERVE exports, opsets 17 and 13, and fixed-batch-1 exports run at batch 2.
 * docs/zoo.md's limit: max |logit - torch| / max |torch logit| <= 1e-4.
 */
import { ok } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import { zooParity } from "../../tools/zoo_parity.ts";

const DIR = new URL("../../fixtures/models/zoo", import.meta.url).pathname;

backendTest("importOnnx() runs the torchvision zoo within 1e-4 of PyTorch's logits", async (b) => {
  const rows = await zooParity(DIR, { [b.name]: b });
  ok(rows.length >= 30, `${rows.length} exports`);
  for (const r of rows) {
    const e = r.errors[b.name];
    ok(e <= 1e-4, `${r.file}: relative logit error ${e.toExponential(2)} on ${b.name}`);
  }
});
