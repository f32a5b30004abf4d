/**
 * Per-image predictions written as they are produced (`predict --out`, `adapt --out`): one row per image, to
 * JSON Lines or CSV chosen by the file's extension. Rows go through a small buffer straight to the file, so a
 * run over a huge folder never holds its predictions in memory, and a crash leaves every flushed row intact.
 *
 *   const out = openPredictions("p.jsonl", { topK: 5, logits: false, classes });
 *   out.write({ images: "val/", index: 0, file: "cat/001.jpg", label: 3, logits });   // per image
 *   out.close();                                                                       // flushes
 *
 * JSONL row: {"images","index","file"?,"label"?,"top":[{"class","name"?,"p"}...],"logits"?:[...]}.
 * CSV: a header, then images,index,file,label,class_1,name_1,p_1,...,class_K,name_K,p_K[,logit_0...] (name
 * columns only with class names; empty cells where a value is unknown). Probabilities are the softmax of the
 * logits (in float64), top-k by probability with ties to the lower class index.
 */

export interface PredictionRow {
  /** The stream the image came from (what --images named). */
  images: string;
  /** Index of the image in its stream. */
  index: number;
  /** File name inside a folder (relative path for ImageFolder). */
  file?: string;
  /** The true label, when labels were given. */
  label?: number;
  /** The model's logits for this image (length = classes). */
  logits: ArrayLike<number>;
}

export interface PredictionsOptions {
  /** Classes per row, by probability (default 5, at most the number of classes). */
  topK?: number;
  /** Add every logit to each row. */
  logits?: boolean;
  /** Class names by index; their count must equal the model's classes. */
  classes?: string[];
}

export type PredictionsFormat = "jsonl" | "csv";

/** The format a path asks for by its extension; a one-line error for anything else. */
export function predictionsFormat(path: string): PredictionsFormat {
  if (/\.(jsonl|ndjson)$/i.test(path)) return "jsonl";
  if (/\.csv$/i.test(path)) return "csv";
  throw new Error(`--out "${path}" must end in .jsonl or .csv (the format is chosen by the extension)`);
}

function csvCell(v: string | number | undefined): string {
  if (v === undefined) return "";
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Softmax in float64, stable (max subtracted). */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** Indices of the k largest probabilities, largest first, ties to the lower index. */
export function topK(p: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: p.length }, (_, i) => i);
  idx.sort((a, b) => (p[b] - p[a]) || (a - b));
  return idx.slice(0, Math.min(k, p.length));
}

/** float32 values printed with the 9 significant digits that round-trip them. */
const f32 = (v: number) => Number.isFinite(v) ? +v.toPrecision(9) : null;
const prob = (v: number) => Number.isFinite(v) ? +v.toPrecision(7) : null;

export class PredictionsWriter {
  readonly format: PredictionsFormat;
  #file: Deno.FsFile;
  #buffer: string[] = [];
  #buffered = 0;
  #classes = -1;
  #k = 0;
  #rows = 0;
  #closed = false;

  constructor(readonly path: string, file: Deno.FsFile, readonly options: PredictionsOptions) {
    this.format = predictionsFormat(path);
    this.#file = file;
  }

  /** Rows written so far. */
  get rows(): number {
    return this.#rows;
  }

  #start(classes: number): void {
    const names = this.options.classes;
    if (names && names.length !== classes) {
      throw new Error(`${names.length} class names were given but the model has ${classes} outputs`);
    }
    this.#classes = classes;
    this.#k = Math.min(this.options.topK ?? 5, classes);
    if (this.format !== "csv") return;
    const cols = ["images", "index", "file", "label"];
    for (let r = 1; r <= this.#k; r++) cols.push(`class_${r}`, ...(names ? [`name_${r}`] : []), `p_${r}`);
    if (this.options.logits) { for (let c = 0; c < classes; c++) cols.push(`logit_${c}`); }
    this.#push(cols.join(",") + "\n");
  }

  #push(text: string): void {
    this.#buffer.push(text);
    this.#buffered += text.length;
    if (this.#buffered >= 64 << 10) this.flush();
  }

  /** Appends one image's row (buffered; see flush). */
  write(row: PredictionRow): void {
    if (this.#closed) throw new Error(`Predictions file "${this.path}" is already closed`);
    if (this.#classes < 0) this.#start(row.logits.length);
    if (row.logits.length !== this.#classes) {
      throw new Error(`Row ${this.#rows} has ${row.logits.length} logits, the first had ${this.#classes}`);
    }
    const p = softmax(row.logits);
    const top = topK(p, this.#k);
    const names = this.options.classes;
    if (this.format === "jsonl") {
      const obj: Record<string, unknown> = { images: row.images, index: row.index };
      if (row.file !== undefined) obj.file = row.file;
      if (row.label !== undefined) obj.label = row.label;
      obj.top = top.map((c) =>
        names ? { class: c, name: names[c], p: prob(p[c]) } : { class: c, p: prob(p[c]) }
      );
      if (this.options.logits) obj.logits = Array.from(row.logits, f32);
      this.#push(JSON.stringify(obj) + "\n");
    } else {
      const cells: (string | number | undefined)[] = [row.images, row.index, row.file, row.label];
      for (const c of top) cells.push(c, ...(names ? [names[c]] : []), prob(p[c]) ?? "NaN");
      if (this.options.logits) {
        for (let c = 0; c < this.#classes; c++) cells.push(f32(row.logits[c]) ?? "NaN");
      }
      this.#push(cells.map(csvCell).join(",") + "\n");
    }
    this.#rows++;
  }

  /** Writes buffered rows to the file. */
  flush(): void {
    if (this.#buffered === 0) return;
    const bytes = new TextEncoder().encode(this.#buffer.join(""));
    this.#buffer = [];
    this.#buffered = 0;
    let at = 0;
    try {
      while (at < bytes.length) at += this.#file.writeSync(bytes.subarray(at));
    } catch (e) {
      throw new Error(`Cannot write predictions file "${this.path}": ${(e as Error).message.split("\n")[0]}`);
    }
  }

  /** Flushes and closes the file; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    try {
      this.flush();
    } finally {
      this.#closed = true;
      this.#file.close();
    }
  }
}

/**
 * Opens (creates or truncates) a predictions file; the format comes from the extension, checked before the
 * file is touched so a typo fails before any work.
 */
export function openPredictions(path: string, options: PredictionsOptions = {}): PredictionsWriter {
  predictionsFormat(path);
  const k = options.topK ?? 5;
  if (!Number.isInteger(k) || k < 1) throw new Error(`--top-k ${k} is not a positive integer`);
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { write: true, create: true, truncate: true });
  } catch (e) {
    throw new Error(`Cannot write predictions file "${path}": ${(e as Error).message.split("\n")[0]}`);
  }
  return new PredictionsWriter(path, file, options);
}
