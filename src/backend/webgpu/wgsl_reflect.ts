/**
 * What the host needs to know about a WGSL kernel file, read from its source: the resource bindings each
 * @compute entry statically uses, the layout of the uniform struct it reads, its `override` constants and its
 * op codes. One parser serves both sides of the host/WGSL contract: tools/gen_kernels.ts turns it into typed
 * TS interfaces (src/backend/webgpu/_kernels_gen.ts, so a missing, misspelled or extra uniform field is a type
 * error), and the pipeline cache uses it at runtime to pack uniforms by field name in WGSL order and type.
 *
 * Uniform fields may be u32, i32, f32, vecN of those, or arrays of vec4 (a uniform array's stride must be a
 * multiple of 16 bytes). Op codes are module-scope constants named `OP_<GROUP>_<NAME>` (e.g. `OP_UNARY_NEG`);
 * the host selects one through an `override OP`, and switch cases name the constants, so the numbers live in
 * the WGSL alone.
 */

export type BindingKind = "uniform" | "read" | "read_write";
export type Scalar = "u32" | "i32" | "f32";

export interface EntryBinding {
  binding: number;
  kind: BindingKind;
  name: string;
}

/** One field of a uniform struct: `count` scalars of `scalar` from byte `offset`, `stride` bytes apart per vector. */
export interface UniformField {
  name: string;
  scalar: Scalar;
  /** WGSL type as written, e.g. "u32", "array<vec4<u32>, 5>". */
  type: string;
  offset: number;
  /** Scalars in the field (1 for a scalar, 4 for vec4, 20 for array<vec4<u32>, 5>). */
  count: number;
  /** True when the field is a vector or array: the host passes a number[] of up to `count` values. */
  vector: boolean;
}

export interface UniformLayout {
  struct: string;
  fields: UniformField[];
  /** Bytes of the struct, rounded up to 16 (uniform buffer bindings are 16-byte multiples). */
  bytes: number;
}

export interface EntryInfo {
  bindings: EntryBinding[];
  /** The uniform struct the entry reads, or null when it binds no uniform. */
  uniform: UniformLayout | null;
}

export interface KernelReflection {
  entries: Map<string, EntryInfo>;
  structs: Map<string, UniformLayout>;
  overrides: string[];
  /** Op codes by group: OP_UNARY_NEG = 1u gives opCodes.get("UNARY").get("neg") = 1. */
  opCodes: Map<string, Map<string, number>>;
}

/** Remove comments so identifiers inside them do not count as uses. */
function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
}

const VAR_RE =
  /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>\s*([A-Za-z_]\w*)\s*:\s*([A-Za-z_]\w*)/g;
const FN_RE = /\bfn\s+([A-Za-z_]\w*)\s*\(/g;
const IDENT_RE = /[A-Za-z_]\w*/g;
const STRUCT_RE = /\bstruct\s+([A-Za-z_]\w*)\s*\{([^}]*)\}/g;
const OVERRIDE_RE = /\boverride\s+([A-Za-z_]\w*)/g;
const OP_RE = /\bconst\s+OP_([A-Z0-9]+)_([A-Z0-9_]+)\s*(?::\s*u32\s*)?=\s*(\d+)u?\s*;/g;

interface TypeLayout {
  scalar: Scalar;
  align: number;
  size: number;
  count: number;
  vector: boolean;
}

function roundUp(k: number, n: number): number {
  return Math.ceil(n / k) * k;
}

/** WGSL's alignment and size rules (WGSL spec, "Alignment and Size") for the types a uniform may hold here. */
function typeLayout(type: string, where: string): TypeLayout {
  const t = type.replace(/\s+/g, "");
  if (t === "u32" || t === "i32" || t === "f32") {
    return { scalar: t, align: 4, size: 4, count: 1, vector: false };
  }
  const vec = /^vec([234])<(u32|i32|f32)>$/.exec(t);
  if (vec) {
    const n = Number(vec[1]);
    return { scalar: vec[2] as Scalar, align: n === 2 ? 8 : 16, size: 4 * n, count: n, vector: true };
  }
  const arr = /^array<(.+),(\d+)u?>$/.exec(t);
  if (arr) {
    const e = typeLayout(arr[1], where);
    const stride = roundUp(e.align, e.size);
    if (stride % 16 !== 0) {
      throw new Error(
        `${where}: uniform array ${type} has a ${stride}-byte stride, not a multiple of 16; use array<vec4<...>, N>`,
      );
    }
    const n = Number(arr[2]);
    if (e.count * 4 !== stride) {
      throw new Error(`${where}: uniform array ${type} has padding between elements`);
    }
    return { scalar: e.scalar, align: 16, size: n * stride, count: n * e.count, vector: true };
  }
  throw new Error(`${where}: uniform field type ${type} is not u32, i32, f32, vecN or array<vec4, N>`);
}

function structLayout(name: string, body: string, file: string): UniformLayout {
  const fields: UniformField[] = [];
  let offset = 0, align = 4;
  // Split on commas outside angle brackets (array<vec4<u32>, 5> holds one).
  const parts: string[] = [];
  let depth = 0, cur = "";
  for (const ch of body) {
    if (ch === "<") depth++;
    if (ch === ">") depth--;
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  for (const part of parts.map((p) => p.trim()).filter(Boolean)) {
    const m = /^([A-Za-z_]\w*)\s*:\s*(.+)$/s.exec(part);
    if (!m) throw new Error(`kernels/${file}.wgsl: cannot read field "${part}" of struct ${name}`);
    const t = typeLayout(m[2], `kernels/${file}.wgsl struct ${name}.${m[1]}`);
    offset = roundUp(t.align, offset);
    fields.push({
      name: m[1],
      scalar: t.scalar,
      type: m[2].replace(/\s+/g, " ").trim(),
      offset,
      count: t.count,
      vector: t.vector,
    });
    offset += t.size;
    align = Math.max(align, t.align);
  }
  return { struct: name, fields, bytes: roundUp(16, roundUp(align, offset)) };
}

/**
 * Everything the host needs from one kernel file. `file` names it in errors. Struct layouts are computed
 * only for structs bound as uniforms.
 */
export function reflectWgsl(source: string, file = "shader"): KernelReflection {
  const src = stripComments(source);
  const vars = new Map<string, EntryBinding & { group: number; type: string }>();
  for (const m of src.matchAll(VAR_RE)) {
    const kind: BindingKind = m[3] === "uniform" ? "uniform" : m[4] === "read_write" ? "read_write" : "read";
    vars.set(m[5], { group: Number(m[1]), binding: Number(m[2]), kind, name: m[5], type: m[6] });
  }
  const bodies = new Map<string, string>();
  for (const m of src.matchAll(STRUCT_RE)) bodies.set(m[1], m[2]);
  const structs = new Map<string, UniformLayout>();
  for (const v of vars.values()) {
    if (v.kind !== "uniform" || structs.has(v.type)) continue;
    const body = bodies.get(v.type);
    if (body === undefined) {
      throw new Error(`kernels/${file}.wgsl: uniform ${v.name} has no struct ${v.type}`);
    }
    structs.set(v.type, structLayout(v.type, body, file));
  }

  const fnUses = new Map<string, Set<string>>();
  const entryNames: string[] = [];
  for (const m of src.matchAll(FN_RE)) {
    const open = src.indexOf("{", m.index!);
    let depth = 0, end = open;
    for (; end < src.length; end++) {
      if (src[end] === "{") depth++;
      else if (src[end] === "}" && --depth === 0) break;
    }
    fnUses.set(m[1], new Set(src.slice(m.index! + m[0].length, end).match(IDENT_RE) ?? []));
    // The attributes before `fn` (back to the previous `}` or `;`) mark an entry point.
    const before = src.slice(
      Math.max(src.lastIndexOf("}", m.index!), src.lastIndexOf(";", m.index!)) + 1,
      m.index!,
    );
    if (/@compute\b/.test(before)) entryNames.push(m[1]);
  }
  const entries = new Map<string, EntryInfo>();
  for (const entry of entryNames) {
    // WGSL's "statically used": referenced by the entry or by any function it calls.
    const seen = new Set<string>([entry]);
    const queue = [entry];
    const used = new Map<number, EntryBinding & { type: string }>();
    while (queue.length) {
      for (const id of fnUses.get(queue.pop()!)!) {
        const v = vars.get(id);
        if (v && v.group === 0) used.set(v.binding, v);
        if (fnUses.has(id) && !seen.has(id)) {
          seen.add(id);
          queue.push(id);
        }
      }
    }
    const sorted = [...used.values()].sort((a, b) => a.binding - b.binding);
    const uniforms = sorted.filter((b) => b.kind === "uniform");
    if (uniforms.length > 1) {
      throw new Error(
        `kernels/${file}.wgsl: entry ${entry} uses ${uniforms.length} uniforms; the host packs one`,
      );
    }
    entries.set(entry, {
      bindings: sorted.map(({ binding, kind, name }) => ({ binding, kind, name })),
      uniform: uniforms.length ? structs.get(uniforms[0].type)! : null,
    });
  }

  const overrides = [...new Set([...src.matchAll(OVERRIDE_RE)].map((m) => m[1]))];
  const opCodes = new Map<string, Map<string, number>>();
  for (const m of src.matchAll(OP_RE)) {
    const group = opCodes.get(m[1]) ?? new Map<string, number>();
    opCodes.set(m[1], group);
    const name = m[2].toLowerCase();
    if (group.has(name)) throw new Error(`kernels/${file}.wgsl: op code OP_${m[1]}_${m[2]} is defined twice`);
    if ([...group.values()].includes(Number(m[3]))) {
      throw new Error(`kernels/${file}.wgsl: op code OP_${m[1]}_${m[2]} reuses the value ${m[3]}`);
    }
    group.set(name, Number(m[3]));
  }
  return { entries, structs, overrides, opCodes };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const i32 = new Int32Array(f32.buffer);

/** The 32-bit word that holds `v` as `scalar`; u32 wraps negative integers modulo 2^32 (offsets do so on purpose). */
function word(v: number, scalar: Scalar, what: string): number {
  if (scalar === "f32") {
    f32[0] = v;
    return u32[0];
  }
  if (!Number.isInteger(v)) throw new Error(`${what} is ${v}, not an integer (${scalar})`);
  if (scalar === "i32") {
    if (v < -(2 ** 31) || v >= 2 ** 31) throw new Error(`${what} = ${v} is out of the i32 range`);
    i32[0] = v;
    return u32[0];
  }
  return v >>> 0;
}

/**
 * Write `values` (field name -> number, or number[] for vectors and arrays) into `out` (bytes/4 words) as
 * the struct lays them out. Every field must be given and no other: the generated types check this at
 * compile time, this at runtime (registered shaders, untyped callers). Short vectors are zero-filled.
 */
export function packUniforms(
  layout: UniformLayout,
  values: Readonly<Record<string, number | readonly number[]>>,
  out: Uint32Array,
  where: string,
): void {
  out.fill(0);
  let given = 0;
  for (const f of layout.fields) {
    const v = values[f.name];
    const what = `${where}: uniform ${layout.struct}.${f.name}`;
    if (v === undefined) throw new Error(`${what} is missing`);
    given++;
    const base = f.offset / 4;
    if (typeof v === "number") {
      if (f.vector) throw new Error(`${what} is a ${f.type}: pass an array`);
      out[base] = word(v, f.scalar, what);
      continue;
    }
    if (!f.vector) throw new Error(`${what} is a ${f.type}: pass a number`);
    if (v.length > f.count) throw new Error(`${what} takes ${f.count} values, got ${v.length}`);
    for (let i = 0; i < v.length; i++) out[base + i] = word(v[i], f.scalar, `${what}[${i}]`);
  }
  if (given !== Object.keys(values).length) {
    const known = new Set(layout.fields.map((f) => f.name));
    const extra = Object.keys(values).filter((k) => !known.has(k));
    throw new Error(
      `${where}: uniform ${layout.struct} has no field ${extra.map((k) => `"${k}"`).join(", ")}`,
    );
  }
}
