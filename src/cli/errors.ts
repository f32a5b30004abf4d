/** Errors the CLI maps to exit codes: UsageError → 2 (bad flags), anything else → 1. */
export class UsageError extends Error {
  override name = "UsageError";
}
