/**
 * Blocks from the graph, not from names. A model's op graph (an ONNX import's own, or a traced one,
 * trace.ts) is cut at every tensor that all paths from input to output pass through; the pieces between
 * cuts are the model's segments. A segment where the path forks and joins (a residual Add, DenseNet's or
 * SqueezeNet's Concat, a squeeze-excitation Mul) is a block; so is a chain expansion 1x1 conv -> depthwise
 * conv -> (squeeze-excitation) -> 1x1 projection conv without activation (an inverted residual block without
 * its skip). A transformer layer's attention residual and the MLP residual after it form one block. What
 * comes before the first block is the stem, after the last the head (pooling and classifier).
 *
 * So a model whose modules are named `layers.N`, `blocks.N`, `body.N` or anything else gives the same
 * blocks; names only label them (the common module path of a block's layers).
 */
import { BatchNorm2d, Conv2d, LayerNorm, Linear } from "./layers.ts";
import type { Module } from "./module.ts";

/** One op of a model, in forward (topological) order. */
export interface OpNode {
  /** ONNX op type ("Conv", "BatchNormalization", "Add", "Concat", "Softmax", ...). */
  op: string;
  /** Producer nodes of its runtime inputs (indices into OpGraph.nodes; -1 is the model input). */
  inputs: number[];
  /** The layer that holds the op's parameters (Conv2d, BatchNorm2d, Linear, LayerNorm, ...), if any. */
  layer: Module | null;
  /** Shape arithmetic (an ONNX import's host steps): its consumers depend on a shape, not on data. */
  shape?: boolean;
}

export interface OpGraph {
  nodes: OpNode[];
  /** The node computing the model output. */
  output: number;
}

/** A model that knows its op graph (ONNX imports); others are traced. */
export interface HasOpGraph {
  opGraph(): OpGraph;
}

export interface Block {
  /** The common module path of its layers ("layer4.1", "features.14", "body.3"), else "block<i>". */
  name: string;
  index: number;
  /** An inverted residual block: a depthwise conv between 1x1 convs, with or without its skip. */
  irb: boolean;
  /** The block adds its input back (a residual connection). */
  residual: boolean;
  /** First and last op (inclusive) in the graph: the block reads the tensor before `start`. */
  start: number;
  end: number;
  /** Layers with parameters or statistics, in forward order. */
  layers: Module[];
  convs: Conv2d[];
  bns: BatchNorm2d[];
  /** Every layer module of its ops, parameter-free ones (activations) too. */
  modules: Module[];
  /** The module that holds exactly this block, when there is one (nameBlocks). */
  owner?: Module;
}

export interface Structure {
  graph: OpGraph;
  blocks: Block[];
  /** Ops after which every path passes one tensor (segment ends), ascending. */
  cuts: number[];
  /** Forward position of each layer's (first) op. */
  position: Map<Module, number>;
  /** The last layer with parameters before the output, and its op (the classifier), or null. */
  classifier: { layer: Module; node: number } | null;
}

const ACTIVATIONS = new Set([
  "Relu",
  "Clip",
  "HardSwish",
  "HardSigmoid",
  "Sigmoid",
  "Gelu",
  "Erf",
  "LeakyRelu",
]);

export function isDepthwise(c: Conv2d): boolean {
  return c.groups > 1 && c.weight.shape[1] === 1;
}

function isPointwise(c: Conv2d): boolean {
  return c.weight.shape[2] === 1 && c.weight.shape[3] === 1 && c.groups === 1;
}

function hasParams(m: Module | null): m is Module {
  return m !== null && (m.namedState().length > 0);
}

/**
 * The nodes that the output depends on, in order (dead branches dropped), with remapped indices; `fed`
 * marks the ones that depend on the model input (not a constant expanded at runtime, like a class token).
 */
function live(g: OpGraph): OpGraph & { original: number[]; fed: boolean[] } {
  const keep = new Array<boolean>(g.nodes.length).fill(false);
  const stack = [g.output];
  while (stack.length) {
    const i = stack.pop()!;
    if (i < 0 || keep[i]) continue;
    keep[i] = true;
    stack.push(...g.nodes[i].inputs);
  }
  const remap = new Map<number, number>([[-1, -1]]);
  const nodes: OpNode[] = [];
  const original: number[] = [];
  g.nodes.forEach((n, i) => {
    if (!keep[i]) return;
    remap.set(i, nodes.length);
    original.push(i);
    nodes.push({ ...n, inputs: [...new Set(n.inputs.map((j) => remap.get(j)!))] });
  });
  const fed = nodes.map(() => false);
  nodes.forEach((n, i) => (fed[i] = !n.shape && n.inputs.some((j) => j < 0 || fed[j])));
  return { nodes, output: remap.get(g.output)!, original, fed };
}

/** Positions p such that every edge crossing from <= p to > p leaves node p. */
function cutPoints(nodes: OpNode[]): number[] {
  // reach[u]: the furthest consumer of node u (-1 for the model input).
  const reach = new Map<number, number>();
  nodes.forEach((n, v) => {
    for (const u of n.inputs) reach.set(u, Math.max(reach.get(u) ?? -1, v));
  });
  const cuts: number[] = [];
  let furthest = reach.get(-1) ?? -1; // over producers before p
  for (let p = 0; p < nodes.length; p++) {
    if (furthest <= p) cuts.push(p);
    furthest = Math.max(furthest, reach.get(p) ?? -1);
  }
  return cuts;
}

interface Piece {
  start: number;
  end: number;
  /** The path forks and joins inside. */
  fork: boolean;
}

function layersIn(nodes: OpNode[], p: { start: number; end: number }): Module[] {
  const out: Module[] = [];
  for (let i = p.start; i <= p.end; i++) {
    const l = nodes[i].layer;
    if (hasParams(l) && !out.includes(l)) out.push(l);
  }
  return out;
}

function opsIn(nodes: OpNode[], p: { start: number; end: number }): string[] {
  return nodes.slice(p.start, p.end + 1).map((n) => n.op);
}

/**
 * Segments between cuts grouped into units: each starts at a conv/linear/normalisation layer or a fork, and
 * takes the BN and the parameter-free ops after it. A fork without parameters is an activation written as
 * a product (SiLU = x sigmoid(x), GELU's x/2 (1 + erf)): it stays in its unit.
 */
function pieces(nodes: OpNode[], fed: boolean[], cuts: number[]): Piece[] {
  const segs: Piece[] = [];
  let start = 0;
  for (const c of cuts) {
    // Two inputs from the segment's own input onwards; a constant expanded at runtime does not count.
    const fork = nodes.slice(start, c + 1).some((n, k) =>
      n.inputs.filter((j) => j >= start - 1 && j < start + k && (j < 0 || fed[j])).length >= 2
    );
    const seg = { start, end: c, fork };
    segs.push({ ...seg, fork: fork && layersIn(nodes, seg).length > 0 });
    start = c + 1;
  }
  const units: Piece[] = [];
  for (const s of segs) {
    const prev = units.at(-1);
    const l = nodes[s.start].layer;
    const opens = s.fork || !prev || prev.fork ||
      (l instanceof Conv2d || l instanceof Linear || l instanceof LayerNorm ||
        (hasParams(l) && !(l instanceof BatchNorm2d)));
    if (opens) units.push({ ...s });
    else prev.end = s.end;
  }
  return units;
}

function convOf(nodes: OpNode[], p: Piece): Conv2d | null {
  const l = nodes[p.start].layer;
  return l instanceof Conv2d ? l : null;
}

function activated(nodes: OpNode[], p: Piece): boolean {
  return opsIn(nodes, p).some((op) => ACTIVATIONS.has(op));
}

/** A fork piece that is a squeeze-excitation: global pooling, 1x1 convs or linears, a product. */
function isSqueezeExcite(nodes: OpNode[], p: Piece): boolean {
  const ops = opsIn(nodes, p);
  const layers = layersIn(nodes, p);
  return p.fork && ops.includes("Mul") && ops.some((o) => o === "GlobalAveragePool" || o === "ReduceMean") &&
    layers.every((l) => (l instanceof Conv2d && isPointwise(l)) || l instanceof Linear);
}

/** The structure of a model from its op graph. */
export function analyzeStructure(graph: OpGraph): Structure {
  const g = live(graph);
  const nodes = g.nodes;
  const cuts = cutPoints(nodes);
  const units = pieces(nodes, g.fed, cuts);
  type Group = { start: number; end: number; irb: boolean; residual: boolean };
  const groups: Group[] = [];
  for (let i = 0; i < units.length; i++) {
    const u = units[i];
    if (u.fork) {
      const layers = layersIn(nodes, u);
      if (!layers.length) continue;
      const ops = opsIn(nodes, u);
      const residual = nodes.slice(u.start, u.end + 1).some((n) => n.op === "Add" && n.inputs.length >= 2);
      const dw = layers.some((l) => l instanceof Conv2d && isDepthwise(l));
      const irb = dw && layers.filter((l) => l instanceof Conv2d).length >= 2 && !ops.includes("Concat");
      if (!isSqueezeExcite(nodes, u)) groups.push({ start: u.start, end: u.end, irb, residual });
      continue;
    }
    // A chain inverted residual: [1x1 expansion + activation] depthwise [SE] 1x1 projection, no activation.
    const dw = convOf(nodes, u);
    if (!dw || !isDepthwise(dw)) continue;
    const prev = units[i - 1], prevConv = prev && convOf(nodes, prev);
    const first = prevConv && isPointwise(prevConv) && activated(nodes, prev) &&
        !groups.some((gr) => gr.end >= prev.start)
      ? i - 1
      : i;
    let j = i + 1;
    if (units[j] && isSqueezeExcite(nodes, units[j])) j++;
    const proj = units[j] && convOf(nodes, units[j]);
    if (!proj || !isPointwise(proj) || activated(nodes, units[j])) continue;
    groups.push({ start: units[first].start, end: units[j].end, irb: true, residual: false });
    i = j;
  }
  // A transformer layer: its attention residual and the MLP residual right after it are one block.
  const merged: Group[] = [];
  for (const gr of groups) {
    const prev = merged.at(-1);
    const attention = (x: Group) => opsIn(nodes, x).includes("Softmax");
    if (
      prev && prev.residual && gr.residual && attention(prev) && !attention(gr) &&
      prev.end + 1 === gr.start &&
      !prev.irb
    ) {
      prev.end = gr.end;
    } else merged.push({ ...gr });
  }
  const position = new Map<Module, number>();
  nodes.forEach((n, i) => {
    if (n.layer && !position.has(n.layer)) position.set(n.layer, i);
  });
  const blocks = merged.map((gr, index): Block => {
    const layers = layersIn(nodes, gr);
    return {
      name: `block${index}`,
      index,
      irb: gr.irb,
      residual: gr.residual,
      start: g.original[gr.start],
      end: g.original[gr.end],
      layers,
      convs: layers.filter((l): l is Conv2d => l instanceof Conv2d),
      bns: layers.filter((l): l is BatchNorm2d => l instanceof BatchNorm2d),
      modules: [...new Set(nodes.slice(gr.start, gr.end + 1).flatMap((n) => (n.layer ? [n.layer] : [])))],
    };
  });
  let classifier: Structure["classifier"] = null;
  for (let i = nodes.length - 1; i >= 0 && !classifier; i--) {
    const l = nodes[i].layer;
    if (hasParams(l)) classifier = { layer: l, node: g.original[i] };
  }
  const origPosition = new Map<Module, number>([...position].map(([m, p]) => [m, g.original[p]]));
  return { graph, blocks, cuts: cuts.map((c) => g.original[c]), position: origPosition, classifier };
}

/**
 * Give blocks a module path as their name (display and per-block ledger tags): the highest module that
 * holds the block's layers and no other layer with parameters ("features.5", "layer4.1", "body.3"); else
 * "block<i>". That module becomes the block's `owner`.
 */
export function nameBlocks(root: Module, blocks: Block[]): void {
  const named = root.namedModules();
  const names = new Map<Module, string>(named.map(([n, m]) => [m, n]));
  const byName = new Map<string, Module>(named);
  const paramLayersUnder = (path: string) =>
    named.filter(([n, m]) =>
      (n === path || n.startsWith(`${path}.`)) && m.children().length === 0 && hasParams(m)
    )
      .map(([, m]) => m);
  for (const b of blocks) {
    const paths = b.layers.map((l) => (names.get(l) ?? "").split("."));
    let common = paths[0] ?? [];
    for (const p of paths) {
      let k = 0;
      while (k < common.length && k < p.length - 1 && common[k] === p[k]) k++;
      common = common.slice(0, k);
    }
    // Climb while the parent still holds nothing but this block.
    while (common.length > 1) {
      const up = common.slice(0, -1).join(".");
      if (!byName.has(up) || !paramLayersUnder(up).every((l) => b.layers.includes(l))) break;
      common = common.slice(0, -1);
    }
    const name = common.join(".");
    const unique = name && !blocks.some((o) => o !== b && o.name === name) &&
      paramLayersUnder(name).every((l) => b.layers.includes(l));
    b.name = unique ? name : `block${b.index}`;
    if (unique && byName.has(name)) b.owner = byName.get(name)!;
  }
}
