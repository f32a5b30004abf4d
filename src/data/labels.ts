/**
 * Labels files, class names and the checks that keep a bad label from being scored silently.
 *
 * A labels file (`labels.csv` or `labels.txt` inside an image folder, or any path given as `--labels`):
 * - blank lines and lines starting with `#` are ignored;
 * - either every line is `name,label` (comma or tab between, or spaces when there is neither; a first line
 *   such as `name,label` or `file,class` is a header) and names are file names inside the folder,
 * - or every line is one label, in the folder's sorted file order.
 * A label is a class index (an integer >= 0) or a class name. Names map through the class list when there is
 * one (`--classes`, the model's sidecar), otherwise through the sorted distinct names (torchvision's rule for
 * ImageFolder). Every error names the file and the line.
 */
import { parseIdxLabels, readMaybeGzip } from "./idx.ts";

/** One label and the line of the file it came from (1-based). */
export interface LabelEntry {
  label: number;
  line: number;
}

export type ParsedLabels =
  & ({ byName: Map<string, LabelEntry> } | { list: LabelEntry[] })
  & { /** Class names, when labels were given by name and no class list was passed. */ classes?: string[] };

const HEADER_FIRST = /^(name|file|filename|fname|path|filepath|image|img|image_name)$/i;
const isInt = (s: string) => /^[+-]?\d+$/.test(s);

function fields(line: string): string[] {
  if (/[,\t]/.test(line)) return line.split(/[,\t]/).map((s) => s.trim());
  return line.split(/\s+/);
}

/** Maps class names to indices: through `classes` when given, else sorted distinct names. */
function nameIndex(
  names: string[],
  classes: string[] | undefined,
  file: string,
  lineOf: (n: string) => number,
) {
  if (classes) {
    const index = new Map(classes.map((c, i) => [c, i]));
    for (const n of names) {
      if (!index.has(n)) {
        throw new Error(
          `Labels file "${file}" line ${
            lineOf(n)
          }: class "${n}" is not one of the ${classes.length} class names ` +
            `(${classes.slice(0, 5).join(", ")}${classes.length > 5 ? ", ..." : ""})`,
        );
      }
    }
    return { index, derived: undefined };
  }
  const derived = [...new Set(names)].sort(compareCodePoints);
  return { index: new Map(derived.map((c, i) => [c, i])), derived };
}

/** Python's string order (by code point), which `sorted()` and torchvision use. */
export function compareCodePoints(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Parses the text of a labels file (format in the module comment); `file` names it in errors. */
export function parseLabelsText(
  text: string,
  file: string,
  options: { classes?: string[] } = {},
): ParsedLabels {
  const rows: { f: string[]; line: number; text: string }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t !== "" && !t.startsWith("#")) rows.push({ f: fields(t), line: i + 1, text: t });
  });
  if (rows.length === 0) {
    throw new Error(
      text.length === 0
        ? `Labels file "${file}" is empty (0 bytes)`
        : `Labels file "${file}" has no labels (only blank or comment lines)`,
    );
  }
  const single = rows.every((r) => r.f.length === 1);
  if (!single && rows.length > 0) {
    const [first] = rows;
    const restInts = rows.slice(1).every((r) => r.f.length === 2 && isInt(r.f[1]));
    if (first.f.length === 2 && (HEADER_FIRST.test(first.f[0]) || (!isInt(first.f[1]) && restInts))) {
      rows.shift();
    }
  }
  for (const r of rows) {
    if (r.f.length !== (single ? 1 : 2) || r.f.some((s) => s === "")) {
      throw new Error(`Labels file "${file}" line ${r.line}: "${r.text}" is not "name,label"`);
    }
    const v = r.f[r.f.length - 1];
    if (isInt(v) && Number(v) < 0) {
      throw new Error(`Labels file "${file}" line ${r.line}: label ${v} is negative`);
    }
  }
  const values = rows.map((r) => r.f[r.f.length - 1]);
  const names = values.filter((v) => !isInt(v));
  const lineOf = (n: string) => rows.find((r) => r.f[r.f.length - 1] === n)!.line;
  const { index, derived } = names.length
    ? nameIndex(names, options.classes, file, lineOf)
    : { index: new Map<string, number>(), derived: undefined };
  const entry = (r: { f: string[]; line: number }): LabelEntry => {
    const v = r.f[r.f.length - 1];
    return { label: isInt(v) ? Number(v) : index.get(v)!, line: r.line };
  };
  const out: ParsedLabels = single
    ? { list: rows.map(entry) }
    : { byName: new Map(rows.map((r) => [r.f[0], entry(r)])) };
  if (derived) out.classes = derived;
  return out;
}

/** Labels read from a file, with where each came from for error messages. */
export interface LabelList {
  labels: Int32Array;
  /** "line 7" or "index 7": where label i is in `file`. */
  where: (i: number) => string;
  classes?: string[];
}

/** Reads an IDX labels file (gzipped or not) or a text labels file in list form. */
export async function readLabels(path: string, options: { classes?: string[] } = {}): Promise<LabelList> {
  const bytes = await readMaybeGzip(path);
  if (bytes.length === 0) throw new Error(`Labels file "${path}" is empty (0 bytes)`);
  if (bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 0) {
    return { labels: parseIdxLabels(bytes, path), where: (i) => `index ${i}` };
  }
  const parsed = parseLabelsText(new TextDecoder().decode(bytes), path, options);
  if (!("list" in parsed)) {
    throw new Error(
      `Labels file "${path}" gives labels by file name, which needs a folder of images, not an IDX file`,
    );
  }
  const lines = parsed.list.map((e) => e.line);
  return {
    labels: Int32Array.from(parsed.list, (e) => e.label),
    where: (i) => `line ${lines[i]}`,
    classes: parsed.classes,
  };
}

/**
 * Throws when a label is outside 0..classes-1, naming where it came from: `Labels "x.csv" line 7: label 12
 * is outside 0..9 (the model has 10 classes)`.
 */
export function checkLabelRange(
  set: { labels?: Int32Array; labelsFrom?: string; labelWhere?: (i: number) => string; names?: string[] },
  classes: number,
  what: string,
): void {
  if (!set.labels) return;
  for (let i = 0; i < set.labels.length; i++) {
    const v = set.labels[i];
    if (v >= 0 && v < classes) continue;
    const where = set.labelWhere?.(i) ?? `image ${set.names?.[i] ?? `#${i}`}`;
    throw new Error(
      `Labels ${set.labelsFrom ? `"${set.labelsFrom}" ` : ""}${where}: label ${v} is outside 0..${
        classes - 1
      } ` +
        `(${what} has ${classes} classes)`,
    );
  }
}

/** Reads class names, one per line (blank and `#` lines ignored), or a JSON array of strings. */
export async function readClassNames(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`Cannot read classes file "${path}": ${(e as Error).message.split("\n")[0]}`);
  }
  if (text.trimStart().startsWith("[")) {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new Error(`Classes file "${path}" is not valid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
      throw new Error(`Classes file "${path}" is a JSON value but not an array of strings`);
    }
    return v;
  }
  const names = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  if (names.length === 0) throw new Error(`Classes file "${path}" has no class names`);
  return names;
}

/**
 * Class names for a model, by precedence: the `--classes` file, the sidecar `MODEL.classes.txt`, the
 * `"classes"` array of the sidecar `MODEL.json`; undefined when there are none.
 */
export async function classNamesFor(modelPath: string, classesFlag?: string): Promise<string[] | undefined> {
  if (classesFlag !== undefined) return await readClassNames(classesFlag);
  const base = modelPath.replace(/\.onnx$/i, "");
  const txt = `${base}.classes.txt`;
  if (await Deno.stat(txt).then(() => true, () => false)) return await readClassNames(txt);
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(`${base}.json`));
  } catch {
    return undefined; // no sidecar, or one the preprocessing loader will report
  }
  const classes = (json as { classes?: unknown } | null)?.classes;
  if (classes === undefined) return undefined;
  if (!Array.isArray(classes) || !classes.every((c) => typeof c === "string")) {
    throw new Error(`Sidecar "${base}.json": "classes" must be an array of strings`);
  }
  return classes;
}
