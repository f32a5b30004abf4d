/** Method names to implementations: the one place the CLI and the service create a TTA method. */
import type { Module } from "../nn/module.ts";
import type { ImageSet } from "../data/images.ts";
import type { PreprocessOptions } from "../data/preprocess.ts";
import { BnAdapt, SourceOnly } from "./bn_adapt.ts";
import { Eata } from "./eata.ts";
import { Sar } from "./sar.ts";
import { Tent } from "./tent.ts";
import type { MethodName, TtaMethod } from "./tta.ts";

export const METHODS: readonly MethodName[] = ["source", "bn", "tent", "eata", "sar", "ecotta"];

export interface MethodOptions {
  lr?: number;
  /** EcoTTA's clean warm-up data. */
  warmup?: { set: ImageSet; preprocess?: PreprocessOptions };
  /** The model's file, for error messages. */
  name?: string;
}

export async function createMethod(
  name: string,
  model: Module,
  options: MethodOptions = {},
): Promise<TtaMethod> {
  const lr = options.lr === undefined ? {} : { lr: options.lr };
  switch (name) {
    case "source":
      return new SourceOnly(model);
    case "bn":
      return await BnAdapt.create(model);
    case "tent":
      return await Tent.create(model, lr);
    case "eata":
      return await Eata.create(model, lr);
    case "sar":
      return await Sar.create(model, lr);
    case "ecotta": {
      const { EcoTta } = await import("./ecotta.ts");
      return await EcoTta.create(model, { ...lr, warmup: options.warmup, name: options.name });
    }
  }
  throw new Error(`Unknown method "${name}" (known: ${METHODS.join(", ")})`);
}
