// Groups of networks (by sampler, seed or tag) and their mean ± spread: what the paper's figures are
// made of. Pure functions over the networks and results the views already hold.
import { samplerOf } from "./util.js";

export const GROUP_BY = [["", "no grouping"], ["sampler", "sampler"], ["tag", "tag"], ["seed", "seed"]];

// The groups a network belongs to. By tag: each of its tags except those every chosen network has
// (a tag all of them share, like "demo", tells nothing apart).
export function groupsOf(net, by, chosen = []) {
  if (!net) return ["?"];
  if (by === "sampler") return [samplerOf(net)];
  if (by === "seed") {
    const seed = net.source && net.source.params ? net.source.params.seed : undefined;
    return [seed === undefined || seed === null ? "no seed" : `seed ${seed}`];
  }
  if (by === "tag") {
    const common = chosen.length ? chosen.map((n) => new Set(n.tags || [])).reduce((a, b) => new Set([...a].filter((t) => b.has(t)))) : new Set();
    const own = (net.tags || []).filter((t) => !common.has(t));
    return own.length ? own : ["untagged"];
  }
  return [String(net.id)];
}

// {group: [ids]} in the order the groups first appear.
export function groupIds(ids, byId, by) {
  const chosen = ids.map(byId).filter(Boolean);
  const out = new Map();
  for (const id of ids) for (const g of groupsOf(byId(id), by, chosen)) out.set(g, [...(out.get(g) || []), id]);
  return out;
}

// Mean and standard deviation (over the rows, ddof = 0) at each position of equal-length rows.
export function meanStd(rows) {
  const n = rows.length, k = rows.length ? rows[0].length : 0;
  const mean = Array.from({ length: k }, (_, j) => rows.reduce((s, r) => s + r[j], 0) / n);
  const std = Array.from({ length: k }, (_, j) => Math.sqrt(rows.reduce((s, r) => s + (r[j] - mean[j]) ** 2, 0) / n));
  return { mean, std, n };
}

// The pair type of two groups, in a fixed order ("rsgd–sgd" and "sgd–rsgd" are one type).
export const pairType = (g, h) => [g, h].sort().join("–");

// Values of an n x n matrix grouped by the pair type of (i, j), i < j: {type: [values]}.
export function byPairType(matrix, labels) {
  const out = new Map();
  for (let i = 0; i < labels.length; i++) {
    for (let j = i + 1; j < labels.length; j++) {
      const v = matrix[i][j];
      if (v === null || v === undefined || Number.isNaN(v)) continue;
      const t = pairType(labels[i], labels[j]);
      out.set(t, [...(out.get(t) || []), v]);
    }
  }
  return new Map([...out.entries()].sort((a, b) => a[0].localeCompare(b[0])));
}
