/**
 * The service's metrics in the Prometheus text exposition format (version 0.0.4): counters since the process
 * started, gauges of the adapted state, and histograms of step and request latency. Kept dependency-free:
 * the format is a few lines of text per metric.
 */

export const STEP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
export const REQUEST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    const i = this.buckets.findIndex((b) => seconds <= b);
    if (i >= 0) this.counts[i]++;
  }

  /** The q-quantile estimated from the buckets (upper bound of the bucket holding it). */
  quantile(q: number): number {
    const target = q * this.count;
    let seen = 0;
    for (const [i, c] of this.counts.entries()) {
      seen += c;
      if (seen >= target && c > 0) return this.buckets[i];
    }
    return Infinity;
  }
}

function fmt(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** Builds one exposition text. */
export class MetricsText {
  #lines: string[] = [];

  #head(name: string, type: string, help: string): void {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }

  counter(name: string, help: string, values: number | [Record<string, string>, number][]): this {
    this.#head(name, "counter", help);
    if (typeof values === "number") this.#lines.push(`${name} ${fmt(values)}`);
    else for (const [l, v] of values) this.#lines.push(`${name}${labels(l)} ${fmt(v)}`);
    return this;
  }

  gauge(name: string, help: string, values: number | [Record<string, string>, number][]): this {
    this.#head(name, "gauge", help);
    if (typeof values === "number") this.#lines.push(`${name} ${fmt(values)}`);
    else for (const [l, v] of values) this.#lines.push(`${name}${labels(l)} ${fmt(v)}`);
    return this;
  }

  histogram(name: string, help: string, h: Histogram): this {
    this.#head(name, "histogram", help);
    let cumulative = 0;
    for (const [i, b] of h.buckets.entries()) {
      cumulative += h.counts[i];
      this.#lines.push(`${name}_bucket{le="${fmt(b)}"} ${cumulative}`);
    }
    this.#lines.push(
      `${name}_bucket{le="+Inf"} ${h.count}`,
      `${name}_sum ${fmt(h.sum)}`,
      `${name}_count ${h.count}`,
    );
    return this;
  }

  toString(): string {
    return this.#lines.join("\n") + "\n";
  }
}

/** Counters the HTTP layer and the spool update; the engine keeps its own (see engine.ts). */
export class RequestMetrics {
  /** "route code" -> count. */
  readonly requests = new Map<string, number>();
  readonly latency = new Histogram(REQUEST_BUCKETS);
  /** Spool files by outcome (done, failed). */
  readonly spool = new Map<string, number>();

  request(route: string, code: number, seconds: number): void {
    const key = `${route} ${code}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    if (route === "/v1/predict" && code === 200) this.latency.observe(seconds);
  }

  spooled(outcome: "done" | "failed"): void {
    this.spool.set(outcome, (this.spool.get(outcome) ?? 0) + 1);
  }

  render(text: MetricsText): MetricsText {
    const req = [...this.requests].map(([k, v]): [Record<string, string>, number] => {
      const [route, code] = k.split(" ");
      return [{ route, code }, v];
    });
    return text
      .counter("edgetrain_http_requests_total", "HTTP requests by route and status code.", req)
      .histogram(
        "edgetrain_predict_request_seconds",
        "Latency of successful POST /v1/predict requests.",
        this.latency,
      )
      .counter(
        "edgetrain_spool_files_total",
        "Spool files processed, by outcome.",
        [...this.spool].map(([outcome, v]) => [{ outcome }, v]),
      );
  }
}
