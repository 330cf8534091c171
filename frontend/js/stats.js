// Statistics computed in the browser: Spearman's rank correlation and classical MDS.

// Ranks 1..n, ties get the mean of the ranks they span (as scipy.stats.rankdata).
export function ranks(values) {
  const order = values.map((v, i) => [v, i]).sort((p, q) => p[0] - q[0]);
  const out = new Array(values.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    const rank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) out[order[k][1]] = rank;
    i = j + 1;
  }
  return out;
}

export function pearson(x, y) {
  const n = x.length;
  const mx = x.reduce((s, v) => s + v, 0) / n;
  const my = y.reduce((s, v) => s + v, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy; sxx += dx * dx; syy += dy * dy;
  }
  return sxx === 0 || syy === 0 ? NaN : sxy / Math.sqrt(sxx * syy);
}

// Spearman's rho: Pearson correlation of the (tie-averaged) ranks. NaN for fewer than 3 pairs or a constant.
export function spearman(x, y) {
  const pairs = x.map((v, i) => [v, y[i]]).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  if (pairs.length < 3) return NaN;
  return pearson(ranks(pairs.map((p) => p[0])), ranks(pairs.map((p) => p[1])));
}

const dot = (a, b) => a.reduce((s, v, i) => s + v * b[i], 0);
const matvec = (m, v) => m.map((row) => dot(row, v));

// Leading eigenpair of a symmetric matrix by power iteration (deterministic start, fixed tolerance).
export function powerIteration(m, { iterations = 5000, tol = 1e-12 } = {}) {
  const n = m.length;
  let v = Array.from({ length: n }, (_, i) => Math.sin(1 + 1.7 * i) + 0.01 * i);  // deterministic, generic
  let norm = Math.sqrt(dot(v, v));
  v = v.map((x) => x / norm);
  for (let it = 0; it < iterations; it++) {
    const w = matvec(m, v);
    norm = Math.sqrt(dot(w, w));
    if (norm === 0) return { value: 0, vector: v };
    const next = w.map((x) => x / norm);
    const diff = Math.sqrt(next.reduce((s, x, i) => s + (x - v[i]) ** 2, 0));
    v = next;
    if (diff < tol) break;
  }
  return { value: dot(v, matvec(m, v)), vector: v };
}

// Classical (Torgerson) MDS of a distance matrix D (n x n) into k dimensions:
// B = -1/2 J D^2 J (double centring), top-k eigenvectors by power iteration with deflation,
// coordinates = eigenvector * sqrt(max(eigenvalue, 0)). Returns {coords: n x k, eigenvalues}.
export function classicalMDS(D, k = 2) {
  const n = D.length;
  const sq = D.map((row) => row.map((d) => d * d));
  const rowMean = sq.map((row) => row.reduce((s, v) => s + v, 0) / n);
  const grand = rowMean.reduce((s, v) => s + v, 0) / n;
  let B = sq.map((row, i) => row.map((v, j) => -0.5 * (v - rowMean[i] - rowMean[j] + grand)));
  const coords = Array.from({ length: n }, () => new Array(k).fill(0));
  const eigenvalues = [];
  for (let c = 0; c < k; c++) {
    // shift by a Gershgorin bound: B + sI is positive semidefinite, so power iteration finds the largest
    // eigenvalue, not the largest in magnitude (geodesic distances need not be Euclidean: B may have negative ones)
    const shift = Math.max(1e-300, ...B.map((row) => row.reduce((s, v) => s + Math.abs(v), 0)));
    const shifted = B.map((row, i) => row.map((v, j) => v + (i === j ? shift : 0)));
    const { vector } = powerIteration(shifted);
    const value = dot(vector, matvec(B, vector));
    eigenvalues.push(value);
    // a fixed sign, so that the picture does not flip between runs: the largest |component| is positive
    let big = 0;
    vector.forEach((x, i) => { if (Math.abs(x) > Math.abs(vector[big])) big = i; });
    const sign = vector[big] < 0 ? -1 : 1;
    const scale = Math.sqrt(Math.max(value, 0));
    vector.forEach((x, i) => { coords[i][c] = sign * x * scale; });
    B = B.map((row, i) => row.map((v, j) => v - value * vector[i] * vector[j]));
  }
  return { coords, eigenvalues };
}
