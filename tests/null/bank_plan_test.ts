import { equal, ok } from "node:assert/strict";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { Estimator } from "../../src/governor/estimate.ts";
import { need } from "../../src/governor/planner.ts";
import { bankOf, withBank } from "../../src/methods/bank/mod.ts";
import { MAX_DEFAULT_SLOTS, planSlots } from "../../src/methods/bank/plan.ts";
import { createMethod } from "../../src/methods/registry.ts";
import { AdaptStream } from "../../src/methods/stream.ts";
import { buildIrbNet, type IrbNetConfig } from "../../src/nn/mobilenet.ts";
import { Rng } from "../../src/random.ts";
import { Tensor } from "../../src/tensor.ts";

const NET: IrbNetConfig = {
  inChannels: 1,
  numClasses: 10,
  stemChannels: 8,
  blocks: [[1, 8, 1, 1], [4, 16, 1, 2]],
  lastChannels: 32,
  seed: 3,
};
const BASE = { method: "tent" as const, batch: 16, store: "fp32" as const };

Deno.test("estimate() counts the bank's slots: one slot's ledger bytes is what a slot holds in a real run", async () => {
  const est = new Estimator((b) => buildIrbNet(b, NET), [1, 16, 16]);
  const at = async (slots: number) =>
    (await est.estimate({ ...BASE, bank: { slots, adapter: "bn" } })).peak_by_category;
  const [two, three, five] = [await at(2), await at(3), await at(5)];
  const perSlot = three.adapters - two.adapters;
  ok(perSlot > 0);
  equal(five.adapters, 5 * perSlot, "every slot holds a full state in the plan");
  // A real run on the CPU: the slot of a domain that has learned holds the same bytes.
  const b = new CpuBackend();
  const m = await createMethod(
    "tent",
    buildIrbNet(b, NET),
    withBank({ stream: { capacity: 16 } }, { slots: 5, adapter: "bn" }),
  );
  const stream = new AdaptStream(m);
  const rng = new Rng(1);
  for (const mean of [1, -2, 1]) {
    for (let k = 0; k < 4; k++) {
      const x = Tensor.from(b, rng.normals(16 * 256).map((v) => v + mean), [16, 1, 16, 16]);
      await stream.process(x);
      x.dispose();
    }
  }
  equal(bankOf(m)!.summary().bytes_per_slot, perSlot);
  m.dispose();
});

Deno.test("planSlots() gives as many slots as fit the budget next to the run, at least 2 and at most 8", async () => {
  const est = new Estimator((b) => buildIrbNet(b, NET), [1, 16, 16]);
  const e2 = await est.estimate({ ...BASE, bank: { slots: 2, adapter: "bn" } });
  const e3 = await est.estimate({ ...BASE, bank: { slots: 3, adapter: "bn" } });
  const roomy = await planSlots(est, BASE, { slots: 0, adapter: "bn" }, 100 * need(e3));
  equal(roomy.slots, MAX_DEFAULT_SLOTS);
  const tight = await planSlots(
    est,
    BASE,
    { slots: 0, adapter: "bn" },
    need(e2) + Math.floor((need(e3) - need(e2)) / 2),
  );
  equal(tight.slots, 2);
  const four = await planSlots(est, BASE, { slots: 0, adapter: "bn" }, need(e2) + 2 * (need(e3) - need(e2)));
  ok(four.slots >= 3 && four.slots <= 4, `${four.slots} slots`);
  ok(need(four.estimate) <= need(e2) + 2 * (need(e3) - need(e2)), "the chosen bank fits");
});
