/**
 * The timeline chart of the report page as one inline SVG string: stacked panels over a shared frame axis
 * (online error, entropy, drift distance on a log scale, memory), the active adapter slot as coloured bands
 * behind them and as a strip below, stream segments as dashed lines. No fonts, scripts or images from
 * anywhere: the page must open from a file on a device without network.
 */
import type { TimelineData, TimelinePoint } from "./timeline.ts";

/** Slot colours (Okabe-Ito, readable by colour-blind readers), slot 0 (the source) grey. */
export const SLOT_COLORS = [
  "#8c8c8c",
  "#e69f00",
  "#56b4e9",
  "#009e73",
  "#f0e442",
  "#0072b2",
  "#d55e00",
  "#cc79a7",
];

export function slotColor(slot: number): string {
  return slot < 0 ? "#ffffff" : SLOT_COLORS[slot % SLOT_COLORS.length];
}

export function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const WIDTH = 1000, LEFT = 64, RIGHT = 16, GAP = 26, STRIP = 18;

interface Panel {
  title: string;
  height: number;
  /** y of each point (null: no value), in data units. */
  series: { values: (number | null)[]; color: string; label: string }[];
  log?: boolean;
  min: number;
  max: number;
  unit: (v: number) => string;
  /** Horizontal reference lines. */
  refs?: { value: number; label: string }[];
  markers?: { frame: number; symbol: string; title: string }[];
}

function fmt(v: number): string {
  if (v !== 0 && Math.abs(v) < 0.01) return v.toExponential(0);
  return Math.abs(v) >= 100
    ? v.toFixed(0)
    : Math.abs(v) >= 10
    ? v.toFixed(1)
    : String(Number(v.toPrecision(2)));
}

/** Online error over a trailing window of at least `span` labelled frames, per point (null: no labels yet). */
export function trailingError(points: TimelinePoint[], span = 100): (number | null)[] {
  const out: (number | null)[] = [];
  let wrong = 0, labeled = 0, start = 0;
  for (let i = 0; i < points.length; i++) {
    wrong += points[i].wrong;
    labeled += points[i].labeled;
    while (start < i && labeled - points[start].labeled >= span) {
      wrong -= points[start].wrong;
      labeled -= points[start].labeled;
      start++;
    }
    out.push(labeled ? (100 * wrong) / labeled : null);
  }
  return out;
}

/** The panels a timeline has data for. */
export function panelsOf(t: TimelineData, o: { threshold?: number | null; classes?: number }): Panel[] {
  const pts = t.points;
  const panels: Panel[] = [];
  if (pts.some((p) => p.labeled > 0)) {
    panels.push({
      title: "online error (%), trailing 100 labelled frames",
      height: 130,
      series: [{ values: trailingError(pts), color: "#222222", label: "error" }],
      min: 0,
      max: 100,
      unit: (v) => `${v.toFixed(0)}%`,
    });
  }
  const entropy = pts.map((p) => (p.frames ? p.entropy / p.frames : null));
  const emax = Math.max(o.classes ? Math.log(o.classes) : 0, ...entropy.map((v) => v ?? 0), 1e-3);
  panels.push({
    title: "mean softmax entropy (nats) of the answers",
    height: 90,
    series: [{ values: entropy, color: "#7a3e9d", label: "entropy" }],
    min: 0,
    max: emax,
    unit: fmt,
    refs: o.classes ? [{ value: Math.log(o.classes), label: `ln ${o.classes}: uniform` }] : [],
  });
  if (pts.some((p) => p.drift !== null)) {
    const drifts = pts.map((p) => p.drift);
    const pos = drifts.filter((v): v is number => v !== null && v > 0);
    const lo = Math.min(1e-3, ...pos), hi = Math.max(10 * (o.threshold ?? 0.1), ...pos);
    panels.push({
      title: "drift: distance of recent frames to the active slot's key (symmetric KL, log scale)",
      height: 110,
      series: [{
        values: drifts.map((v) => (v === null ? null : Math.max(v, lo))),
        color: "#c0392b",
        label: "drift",
      }],
      log: true,
      min: lo,
      max: hi,
      unit: fmt,
      refs: o.threshold ? [{ value: o.threshold, label: "threshold" }] : [],
      markers: t.events.map((e) => ({
        frame: e.frame,
        symbol: e.action === "switch" ? "▲" : e.action === "open" ? "●" : e.action === "merge" ? "◆" : "✕",
        title: `${e.action} at frame ${e.frame}: ${e.from >= 0 ? `slot ${e.from}` : ""}${
          e.to >= 0 ? ` → slot ${e.to}` : ""
        }${Number.isFinite(e.distance) ? ` (distance ${e.distance.toPrecision(3)})` : ""}`,
      })),
    });
  }
  const mib = (b: number) => b / 2 ** 20;
  const slotsShown = pts.some((p) => p.slotBytes > 0);
  panels.push({
    title: "device memory (MiB, ledger): the most live while each chunk ran" +
      (slotsShown ? ", and the stored adapter slots" : ""),
    height: 90,
    series: [
      { values: pts.map((p) => mib(p.bytes)), color: "#1f5f8b", label: "memory" },
      ...(slotsShown ? [{ values: pts.map((p) => mib(p.slotBytes)), color: "#d55e00", label: "slots" }] : []),
    ],
    min: 0,
    max: Math.max(mib(t.peakBytes), ...pts.map((p) => mib(p.bytes)), 1e-3) * 1.05,
    unit: fmt,
    refs: [{ value: mib(t.peakBytes), label: "peak" }],
  });
  return panels;
}

/** The chart: panels top to bottom, then the slot strip and the frame axis. */
export function timelineSvg(t: TimelineData, o: { threshold?: number | null; classes?: number }): string {
  const panels = panelsOf(t, o);
  const pts = t.points;
  const frames = Math.max(t.frames, 1);
  const plotW = WIDTH - LEFT - RIGHT;
  const x = (frame: number) => LEFT + (plotW * frame) / frames;
  const top = 14;
  const bodyH = panels.reduce((s, p) => s + p.height + GAP, 0);
  const stripY = top + bodyH;
  const height = stripY + STRIP + 34;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" ` +
      `role="img" aria-label="stream timeline" id="timeline" font-family="system-ui, sans-serif" font-size="11">`,
  );
  // Active slot bands behind every panel, and the strip.
  const hasSlots = pts.some((p) => p.slot >= 0);
  if (hasSlots) {
    for (let i = 0; i < pts.length;) {
      let j = i;
      while (j + 1 < pts.length && pts[j + 1].slot === pts[i].slot) j++;
      const x0 = x(pts[i].frame), x1 = x(pts[j].frame + pts[j].frames);
      const c = slotColor(pts[i].slot);
      out.push(
        `<rect class="band" x="${x0.toFixed(1)}" y="${top}" width="${(x1 - x0).toFixed(1)}" height="${
          bodyH - GAP
        }" fill="${c}" fill-opacity="0.16"/>`,
      );
      out.push(
        `<rect class="strip" x="${x0.toFixed(1)}" y="${stripY}" width="${
          (x1 - x0).toFixed(1)
        }" height="${STRIP}" fill="${c}"><title>slot ${pts[i].slot}: frames ${pts[i].frame}–${
          pts[j].frame + pts[j].frames
        }</title></rect>`,
      );
      if (x1 - x0 > 26) {
        out.push(
          `<text x="${((x0 + x1) / 2).toFixed(1)}" y="${stripY + 13}" text-anchor="middle" fill="#000">${
            pts[i].slot
          }</text>`,
        );
      }
      i = j + 1;
    }
    out.push(`<text x="${LEFT - 6}" y="${stripY + 13}" text-anchor="end">active slot</text>`);
  }
  let y0 = top;
  for (const p of panels) {
    const scale = (v: number) => {
      const f = p.log
        ? (Math.log10(v) - Math.log10(p.min)) / (Math.log10(p.max) - Math.log10(p.min))
        : (v - p.min) / (p.max - p.min || 1);
      return y0 + p.height - Math.min(Math.max(f, 0), 1) * p.height;
    };
    out.push(`<text x="${LEFT}" y="${y0 - 3}" font-weight="600">${esc(p.title)}</text>`);
    out.push(`<rect x="${LEFT}" y="${y0}" width="${plotW}" height="${p.height}" fill="none" stroke="#bbb"/>`);
    const ticks = p.log ? logTicks(p.min, p.max) : [p.min, (p.min + p.max) / 2, p.max];
    for (const v of ticks) {
      const yy = scale(v);
      out.push(
        `<line x1="${LEFT - 3}" x2="${LEFT}" y1="${yy.toFixed(1)}" y2="${yy.toFixed(1)}" stroke="#888"/>`,
      );
      out.push(
        `<text x="${LEFT - 5}" y="${(yy + 4).toFixed(1)}" text-anchor="end" fill="#555">${
          esc(p.unit(v))
        }</text>`,
      );
    }
    for (const r of p.refs ?? []) {
      const yy = scale(r.value);
      out.push(
        `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${yy.toFixed(1)}" y2="${
          yy.toFixed(1)
        }" stroke="#555" stroke-dasharray="2 3"/>`,
      );
      out.push(
        `<text x="${WIDTH - RIGHT - 3}" y="${(yy - 3).toFixed(1)}" text-anchor="end" fill="#555">${
          esc(r.label)
        }</text>`,
      );
    }
    for (const s of p.series) {
      const d: string[] = [];
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) {
          pen = false;
          return;
        }
        const xx = x(pts[i].frame + pts[i].frames / 2);
        d.push(`${pen ? "L" : "M"}${xx.toFixed(1)} ${scale(v).toFixed(1)}`);
        pen = true;
      });
      if (d.length) {
        out.push(
          `<path class="series" data-series="${esc(s.label)}" d="${
            d.join(" ")
          }" fill="none" stroke="${s.color}" stroke-width="1.4"/>`,
        );
      }
    }
    for (const m of p.markers ?? []) {
      out.push(
        `<text class="marker" x="${x(m.frame).toFixed(1)}" y="${
          y0 + 10
        }" text-anchor="middle" fill="#000">${m.symbol}<title>${esc(m.title)}</title></text>`,
      );
    }
    y0 += p.height + GAP;
  }
  // Stream segments (adapt's --images): dashed lines over every panel, labels at the top.
  t.domains.forEach((d, i) => {
    const xx = x(d.frame);
    out.push(
      `<line x1="${xx.toFixed(1)}" x2="${xx.toFixed(1)}" y1="${top}" y2="${
        stripY + STRIP
      }" stroke="#333" stroke-dasharray="4 3" stroke-width="0.8"/>`,
    );
    const next = t.domains[i + 1]?.frame ?? frames;
    const room = x(next) - xx;
    if (room > 30) {
      const label = d.label.length * 6 > room
        ? d.label.slice(0, Math.max(3, Math.floor(room / 6) - 1)) + "…"
        : d.label;
      out.push(
        `<text x="${(xx + 3).toFixed(1)}" y="${top + 22}" fill="#333">${esc(label)}<title>${
          esc(d.label)
        }</title></text>`,
      );
    }
  });
  const axisY = stripY + STRIP + 4;
  for (const f of frameTicks(frames)) {
    const xx = x(f);
    out.push(
      `<line x1="${xx.toFixed(1)}" x2="${xx.toFixed(1)}" y1="${axisY}" y2="${axisY + 4}" stroke="#888"/>`,
    );
    out.push(`<text x="${xx.toFixed(1)}" y="${axisY + 15}" text-anchor="middle" fill="#555">${f}</text>`);
  }
  out.push(
    `<text x="${WIDTH - RIGHT}" y="${axisY + 28}" text-anchor="end" fill="#555">frames of the stream</text>`,
  );
  out.push(
    `<line id="cursor" x1="0" x2="0" y1="${top}" y2="${
      stripY + STRIP
    }" stroke="#000" stroke-width="0.6" visibility="hidden"/>`,
  );
  out.push("</svg>");
  return out.join("\n");
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.ceil(Math.log10(lo)); e <= Math.floor(Math.log10(hi)); e++) out.push(10 ** e);
  return out.length ? out : [lo, hi];
}

function frameTicks(frames: number): number[] {
  const raw = frames / 8;
  const step = [1, 2, 5].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((s) => s >= raw) ??
    10 ** Math.ceil(Math.log10(raw));
  const out: number[] = [];
  for (let f = 0; f <= frames; f += Math.max(step, 1)) out.push(f);
  return out;
}

export const CHART = { WIDTH, LEFT, RIGHT };
