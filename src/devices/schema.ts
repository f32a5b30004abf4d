/**
 * A small JSON Schema subset (type, required, properties, additionalProperties, enum, minimum, items,
 * pattern), enough to validate device profiles against devices/schema.json with errors that name the
 * field's path and the offending value.
 */

export interface Schema {
  type?: "object" | "array" | "string" | "number" | "integer" | "boolean";
  required?: string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean;
  enum?: unknown[];
  minimum?: number;
  items?: Schema;
  pattern?: string;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function matchesType(v: unknown, type: NonNullable<Schema["type"]>): boolean {
  switch (type) {
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "array":
      return Array.isArray(v);
    case "object":
      return typeOf(v) === "object";
    case "string":
      return typeof v === "string";
    case "boolean":
      return typeof v === "boolean";
  }
}

/** Every violation as "path: problem"; empty when the value conforms. */
export function validate(value: unknown, schema: Schema, path = "$"): string[] {
  const errors: string[] = [];
  if (schema.type && !matchesType(value, schema.type)) {
    return [`${path}: expected ${schema.type}, got ${typeOf(value)} ${JSON.stringify(value)}`];
  }
  if (schema.enum && !schema.enum.includes(value)) {
    errors.push(
      `${path}: ${JSON.stringify(value)} is not one of ${
        schema.enum.map((e) => JSON.stringify(e)).join(", ")
      }`,
    );
  }
  if (schema.minimum !== undefined && typeof value === "number" && value < schema.minimum) {
    errors.push(`${path}: ${value} is below the minimum ${schema.minimum}`);
  }
  if (schema.pattern && typeof value === "string" && !new RegExp(schema.pattern).test(value)) {
    errors.push(`${path}: "${value}" does not match ${schema.pattern}`);
  }
  if (schema.items && Array.isArray(value)) {
    value.forEach((v, i) => errors.push(...validate(v, schema.items!, `${path}[${i}]`)));
  }
  if (typeOf(value) === "object") {
    const obj = value as Record<string, unknown>;
    for (const key of schema.required ?? []) {
      if (!(key in obj)) errors.push(`${path}: missing required field "${key}"`);
    }
    for (const [key, v] of Object.entries(obj)) {
      const sub = schema.properties?.[key];
      if (sub) errors.push(...validate(v, sub, `${path}.${key}`));
      else if (schema.additionalProperties === false) errors.push(`${path}: unknown field "${key}"`);
    }
  }
  return errors;
}
