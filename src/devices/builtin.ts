/** Device profiles shipped in devices/*.json, embedded so bundles and compiled binaries carry them. */
import schema from "../../devices/schema.json" with { type: "json" };
import nano from "../../devices/jetson-nano-4gb.json" with { type: "json" };
import tx2 from "../../devices/jetson-tx2.json" with { type: "json" };
import xavierNx from "../../devices/jetson-xavier-nx.json" with { type: "json" };
import orinNano from "../../devices/jetson-orin-nano-8gb.json" with { type: "json" };
import orinNx from "../../devices/jetson-orin-nx-16gb.json" with { type: "json" };
import agxOrin from "../../devices/jetson-agx-orin-64gb.json" with { type: "json" };
import laptopDgpu from "../../devices/laptop-dgpu-4gb.json" with { type: "json" };
import laptopIgpu from "../../devices/laptop-igpu.json" with { type: "json" };
import rpi4 from "../../devices/cpu-board-rpi4-4gb.json" with { type: "json" };
import type { Schema } from "./schema.ts";

export const profileSchema = schema as unknown as Schema;

export const builtinProfiles: Record<string, unknown> = Object.fromEntries(
  [nano, tx2, xavierNx, orinNano, orinNx, agxOrin, laptopDgpu, laptopIgpu, rpi4].map((p) => [p.name, p]),
);
