import { equal, ok, rejects, throws } from "node:assert/strict";
import { builtinProfileNames, loadProfile, parseProfile } from "../../src/devices/profile.ts";

Deno.test("loadProfile() validates every built-in profile", async () => {
  const names = builtinProfileNames();
  equal(names.length, 9);
  for (const name of names) {
    const p = await loadProfile(name);
    equal(p.name, name);
    ok(p.memory.usable_bytes <= p.memory.total_bytes, name);
    ok(p.sources.length > 0, `${name} cites its datasheet`);
  }
});

Deno.test("loadProfile() reads a profile file and reports malformed ones clearly", async () => {
  const dir = await Deno.makeTempDir();
  const good = JSON.parse(await Deno.readTextFile("devices/jetson-orin-nano-8gb.json"));
  await Deno.writeTextFile(`${dir}/ok.json`, JSON.stringify({ ...good, name: "my-box" }));
  equal((await loadProfile(`${dir}/ok.json`)).name, "my-box");

  await Deno.writeTextFile(`${dir}/bad.json`, "{ not json");
  await rejects(loadProfile(`${dir}/bad.json`), /is not valid JSON/);

  const missing = { ...good };
  delete missing.memory;
  await Deno.writeTextFile(`${dir}/missing.json`, JSON.stringify(missing));
  await rejects(loadProfile(`${dir}/missing.json`), /missing required field "memory"/);

  await rejects(loadProfile(`${dir}/nope.json`), /Unknown device .*not a built-in profile/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("parseProfile() names the field and value that break the schema", () => {
  const base = {
    name: "x",
    display_name: "X",
    kind: "board",
    memory: { total_bytes: 100, shared: true, usable_bytes: 50 },
    bandwidth_gbps: 1,
    fp32_gflops: 1,
    webgpu: { available: false },
    sources: ["s"],
  };
  equal(parseProfile(base, "x").name, "x");
  const wrong = (patch: Record<string, unknown>) => () => parseProfile({ ...base, ...patch }, "f.json");
  throws(wrong({ kind: "toaster" }), /Invalid device profile "f.json": \$\.kind: "toaster" is not one of/);
  throws(
    wrong({ memory: { total_bytes: 100, shared: true, usable_bytes: 500 } }),
    /usable_bytes 500 exceeds total_bytes 100/,
  );
  throws(wrong({ bandwidth_gbps: "fast" }), /\$\.bandwidth_gbps: expected number, got string "fast"/);
  throws(wrong({ extra: 1 }), /unknown field "extra"/);
});
