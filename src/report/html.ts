/**
 * The report page (`adapt --report FILE.html`, `GET /v1/report` of `serve`): one self-contained HTML file —
 * inline CSS, the chart as inline SVG (svg.ts), a few lines of inline script for the hover read-out — that
 * someone who did not run the stream can read: what ran, the headline numbers, the timeline with a legend
 * and a caption saying how to read it, the stream's segments, and the adapter bank's events.
 */
import { CHART, esc, slotColor, timelineSvg, trailingError } from "./svg.ts";
import type { TimelineData } from "./timeline.ts";

export interface ReportSegment {
  name: string;
  frames: number;
  /** Online error (fraction) or null without labels. */
  error: number | null;
  /** The adapter slot that answered most of its frames (absent without a bank). */
  slot?: number | null;
}

export interface ReportInfo {
  title: string;
  /** What ran: label, value (method, model, backend, chunk, ...). */
  facts: [string, string][];
  /** Headline figures: label, value. */
  cards: [string, string][];
  segments?: ReportSegment[];
  /** The bank's distance threshold (drift panel reference). */
  threshold?: number | null;
  classes?: number;
  generated?: string;
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1040px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.facts{color:#555;margin:0 0 14px}.facts span{margin-right:14px;white-space:nowrap}.facts b{color:#222;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 16px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:20px;font-weight:600}.card .l{color:#666;font-size:12px}
figure{margin:0}figcaption{color:#444;font-size:13px;margin-top:6px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #e4e4e4;padding:4px 10px;text-align:right}
th{color:#555;font-weight:600}td:first-child,th:first-child{text-align:left}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;vertical-align:-1px;margin-right:4px;border:1px solid #0003}
.legend span{margin-right:12px;white-space:nowrap}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #999;border-radius:4px;padding:4px 7px;font-size:12px;display:none;box-shadow:0 1px 4px #0002}
.muted{color:#777}`;

/** The hover read-out: which point is under the pointer, and its values. */
const SCRIPT = `
(function(){
  var errors=[];window.addEventListener("error",function(e){errors.push(String(e.message));document.body.setAttribute("data-errors",errors.join(" | "));});
  var data=JSON.parse(document.getElementById("points").textContent);
  var svg=document.getElementById("timeline"),tip=document.getElementById("tip"),cursor=document.getElementById("cursor");
  var left=+svg.getAttribute("data-left"),width=+svg.getAttribute("data-plot"),frames=+svg.getAttribute("data-frames");
  svg.addEventListener("mousemove",function(ev){
    var r=svg.getBoundingClientRect(),sx=svg.viewBox.baseVal.width/r.width,px=(ev.clientX-r.left)*sx;
    var f=(px-left)/width*frames;if(f<0||f>frames){tip.style.display="none";cursor.setAttribute("visibility","hidden");return;}
    var p=data[0];for(var i=0;i<data.length;i++){if(data[i][0]<=f)p=data[i];else break;}
    cursor.setAttribute("x1",px);cursor.setAttribute("x2",px);cursor.setAttribute("visibility","visible");
    tip.innerHTML="frames "+p[0]+"\\u2013"+(p[0]+p[1])+(p[2]===null?"":"<br>error "+p[2].toFixed(1)+"%")+"<br>entropy "+p[3].toFixed(3)+
      (p[4]===null?"":"<br>drift "+p[4].toPrecision(3))+(p[5]<0?"":"<br>slot "+p[5])+"<br>memory "+p[6].toFixed(2)+" MiB";
    tip.style.display="block";tip.style.left=(ev.clientX+14)+"px";tip.style.top=(ev.clientY+10)+"px";
  });
  svg.addEventListener("mouseleave",function(){tip.style.display="none";cursor.setAttribute("visibility","hidden");});
  var drawn=0;svg.querySelectorAll("path.series").forEach(function(p){if((p.getAttribute("d")||"").split("L").length>1)drawn++;});
  document.body.setAttribute("data-points",String(data.length));document.body.setAttribute("data-drawn",String(drawn));
})();`;

function pct(v: number | null): string {
  return v === null ? "–" : `${(100 * v).toFixed(1)}%`;
}

/** A stream's name as a chart label: "fixtures/x/fog-s5-images-idx3-ubyte.gz" -> "fog-s5". */
export function shortName(name: string): string {
  const base = name.split(/[\\/]/).filter(Boolean).at(-1) ?? name;
  return base.replace(/\.gz$/, "").replace(/[-.]?(images-)?idx3-ubyte$/, "") || base;
}

export function renderReport(info: ReportInfo, t: TimelineData): string {
  const marks = { ...t, domains: t.domains.map((d) => ({ ...d, label: shortName(d.label) })) };
  const svg = timelineSvg(marks, { threshold: info.threshold, classes: info.classes })
    .replace(
      "<svg ",
      `<svg data-left="${CHART.LEFT}" data-plot="${CHART.WIDTH - CHART.LEFT - CHART.RIGHT}" ` +
        `data-frames="${Math.max(t.frames, 1)}" `,
    );
  const err = trailingError(t.points);
  const points = t.points.map((p, i) => [
    p.frame,
    p.frames,
    err[i] === null ? null : Number(err[i]!.toFixed(2)),
    Number((p.frames ? p.entropy / p.frames : 0).toFixed(4)),
    p.drift === null ? null : Number(p.drift.toPrecision(4)),
    p.slot,
    Number((p.bytes / 2 ** 20).toFixed(3)),
  ]);
  const slots = [...new Set(t.points.map((p) => p.slot).filter((s) => s >= 0))].sort((a, b) => a - b);
  const legend = slots.length
    ? `<p class="legend">${
      slots.map((s) =>
        `<span><i class="sw" style="background:${slotColor(s)}"></i>slot ${s}${
          s === 0 ? " (source)" : ""
        }</span>`
      ).join("")
    }<span class="muted">▲ switch ● open ◆ merge ✕ evict (hover for the distance)</span></p>`
    : "";
  const hasLabels = t.points.some((p) => p.labeled > 0);
  const caption = [
    "Time runs left to right in frames of the stream, in the order they were answered.",
    hasLabels
      ? "The top panel is the error of the answers as they were given (before the model learned from those frames), over the last 100 labelled frames."
      : "No labels were given, so there is no error panel: entropy is the label-free sign of how sure the model is.",
    "Entropy near ln(classes) means the model is guessing.",
    slots.length
      ? "Coloured bands show which adapter slot answered (slot 0 is the source model's domain); the drift panel shows how far the recent frames are from that slot's key, and a slot is switched or opened only when it stays above the threshold for several frames."
      : "",
    "Memory is the most device memory the ledger counted while each chunk ran (learning steps are the high points); the dashed line is the run's peak.",
    "Dashed vertical lines mark where each input stream (a --images file) begins.",
  ].filter(Boolean).join(" ");
  const segments = info.segments?.length
    ? `<h2>Stream segments</h2><table><tr><th>segment</th><th>frames</th><th>online error</th>${
      info.segments.some((s) => s.slot !== undefined) ? "<th>most used slot</th>" : ""
    }</tr>${
      info.segments.map((s) =>
        `<tr><td>${esc(s.name)}</td><td>${s.frames}</td><td>${pct(s.error)}</td>${
          s.slot === undefined
            ? ""
            : `<td>${
              s.slot === null ? "–" : `<i class="sw" style="background:${slotColor(s.slot)}"></i>${s.slot}`
            }</td>`
        }</tr>`
      ).join("")
    }</table>`
    : "";
  const events = t.events.length
    ? `<h2>Adapter bank events</h2><table><tr><th>frame</th><th>event</th><th>from</th><th>to</th><th>distance</th></tr>${
      t.events.slice(-200).map((e) =>
        `<tr><td>${e.frame}</td><td>${esc(e.action)}</td><td>${e.from >= 0 ? e.from : "–"}</td><td>${
          e.to >= 0 ? e.to : "–"
        }</td><td>${Number.isFinite(e.distance) ? e.distance.toPrecision(3) : "–"}</td></tr>`
      ).join("")
    }</table>${t.events.length > 200 ? `<p class="muted">the last 200 of ${t.events.length} events</p>` : ""}`
    : "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(info.title)}</title><style>${STYLE}</style></head>
<body>
<h1>${esc(info.title)}</h1>
<p class="facts">${info.facts.map(([k, v]) => `<span>${esc(k)} <b>${esc(v)}</b></span>`).join("\n")}</p>
<div class="cards">${
    info.cards.map(([k, v]) =>
      `<div class="card"><div class="v">${esc(v)}</div><div class="l">${esc(k)}</div></div>`
    )
      .join("\n")
  }</div>
<figure>${svg}<figcaption>${legend}${esc(caption)}</figcaption></figure>
${segments}
${events}
<p class="muted">${esc(info.generated ?? "")}</p>
<div id="tip"></div>
<script type="application/json" id="points">${JSON.stringify(points).replace(/</g, "\\u003c")}</script>
<script>${SCRIPT}</script>
</body></html>
`;
}
