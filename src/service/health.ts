/**
 * What `GET /v1/health` reports beyond liveness: whether the model's outputs are finite. A NaN or infinite
 * output (a poisoned adapted state, an input that overflows) gives replies with no usable answer; the
 * service then reports `degraded` with HTTP 503, which load balancers and monitors treat as unhealthy
 * without parsing the body, until a batch comes out finite again (after POST /v1/reset, or a restart that
 * resumes the last good checkpoint: a non-finite state is never checkpointed).
 */
import type { Prediction } from "./engine.ts";

/** Why a prediction is unusable, or null when its probabilities and entropy are finite. */
export function nonFiniteReason(p: Prediction): string | null {
  if (Number.isFinite(p.entropy) && p.probabilities.every(Number.isFinite)) return null;
  return `the model's output is not finite (NaN or infinite) at step ${p.step}: the adapted state may be ` +
    `poisoned (POST /v1/reset, or restart to resume the last good checkpoint)`;
}

export interface HealthReport {
  status: "ok" | "degraded";
  steps: number;
  reason?: string;
  since?: string;
}

export class Health {
  #bad: { step: number; count: number; batch: number; since: string } | null = null;

  /** Looks at one batch's predictions: any non-finite one makes the service degraded, a finite batch heals it. */
  observe(predictions: Prediction[]): void {
    const bad = predictions.filter((p) => nonFiniteReason(p) !== null).length;
    if (bad === 0) this.#bad = null;
    else {
      this.#bad = {
        step: predictions[0].step,
        count: bad,
        batch: predictions.length,
        since: this.#bad?.since ?? new Date().toISOString(),
      };
    }
  }

  get degraded(): boolean {
    return this.#bad !== null;
  }

  /** The body of GET /v1/health and its status code (503 when degraded). */
  report(steps: number): { code: 200 | 503; body: HealthReport } {
    const b = this.#bad;
    if (!b) return { code: 200, body: { status: "ok", steps } };
    return {
      code: 503,
      body: {
        status: "degraded",
        steps,
        reason: `non-finite outputs: ${b.count} of ${b.batch} inputs at step ${b.step} (NaN or infinite)`,
        since: b.since,
      },
    };
  }
}
