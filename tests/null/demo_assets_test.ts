import { equal } from "node:assert/strict";
import { renderDemoAssets } from "../../tools/gen_demo_assets.ts";

Deno.test("renderDemoAssets() matches the committed src/cli/_demo_assets.ts (run tools/gen_demo_assets.ts)", async () => {
  const committed = await Deno.readTextFile("src/cli/_demo_assets.ts");
  equal(committed === (await renderDemoAssets()), true, "src/cli/_demo_assets.ts is stale");
});
