import { deepEqual as assertEquals } from "node:assert/strict";
import { backendTest } from "../_backends.ts";
import { Tensor } from "../../src/tensor.ts";
import { relu6 } from "../../src/ops/activation.ts";
import { backward } from "../../src/autograd/tape.ts";

backendTest("relu6() backward uses a 1-bit mask and matches the derivative", async (b) => {
  // y = relu6(x); dy/dx = 1 on (0, 6), else 0 (PyTorch: 0 at both kinks).
  const x = Tensor.from(b, [-1, 0, 0.5, 3, 6, 7, 5.999, -0.001], [8], {
    requiresGrad: true,
    category: "weights",
  });
  const before = b.ledger.snapshot().live.saved;
  const y = relu6(x);
  assertEquals(b.ledger.snapshot().live.saved - before, 4, "one u32 word holds the mask of 8 elements");
  assertEquals(Array.from(await y.data()), [0, 0, 0.5, 3, 6, 6, 5.999, 0].map(Math.fround));
  const seed = Tensor.from(b, [1, 2, 3, 4, 5, 6, 7, 8], [8]);
  backward(y, seed);
  assertEquals(Array.from(await x.grad!.data()), [0, 0, 3, 4, 0, 0, 7, 0]);
  assertEquals(b.ledger.snapshot().live.saved, before, "backward released the mask");
}, { backends: ["cpu"] });
