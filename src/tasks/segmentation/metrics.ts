/**
 * Semantic-segmentation metrics with mmsegmentation's semantics (`intersect_and_union`,
 * `total_intersect_and_union`, `total_area_to_metrics`, and the tables its `evaluate` prints).
 *
 * Everything is plain typed-array arithmetic in float64. Areas are pixel counts per class.
 */

/** Per-class pixel areas for one image or a whole dataset (all arrays have `numClasses` entries). */
export interface SegAreas {
  /** Pixels where prediction == label == class. */
  areaIntersect: Float64Array;
  /** areaPredLabel + areaLabel − areaIntersect. */
  areaUnion: Float64Array;
  /** Pixels predicted as the class (only where the label is not ignored). */
  areaPredLabel: Float64Array;
  /** Pixels whose (mapped / reduced) label is the class. */
  areaLabel: Float64Array;
}

/** Options shared by {@link intersectAndUnion} and {@link SegEvaluator}. */
export interface SegMetricOptions {
  /** Number of classes; values outside 0..numClasses−1 fall out of every histogram (as torch.histc). */
  numClasses: number;
  /** Label value whose pixels are dropped entirely. Default 255. */
  ignoreIndex?: number;
  /** ADE20K-style shift of the label: 0→255, v→v−1, 255 stays 255. Default false. */
  reduceZeroLabel?: boolean;
  /**
   * Label remapping applied before `reduceZeroLabel`, entry by entry in insertion order and in
   * place, exactly like mmseg's `for old_id, new_id in label_map.items(): label[label == old_id] = new_id`
   * (so chained entries such as {1: 2, 2: 3} send 1 to 3, as mmseg does).
   */
  labelMap?: ReadonlyMap<number, number> | Readonly<Record<number, number>>;
}

/** Any integer-valued array of class ids (Uint8Array, Int32Array, number[], ...). */
export type LabelArray = ArrayLike<number>;

function toMapEntries(labelMap: SegMetricOptions['labelMap']): [number, number][] {
  if (labelMap === undefined) return [];
  if (labelMap instanceof Map) return [...labelMap.entries()];
  return Object.entries(labelMap).map(([k, v]) => [Number(k), v as number]);
}

function checkNumClasses(numClasses: number): void {
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new RangeError(`numClasses must be a positive integer, got ${numClasses}`);
  }
}

/**
 * Build a 256-entry lookup from raw uint8-range label values to the value mmseg compares with
 * the prediction, applying `labelMap` (sequentially) and then `reduceZeroLabel`.
 * Returns null when the label needs no transform.
 */
function buildLabelTransform(opts: SegMetricOptions): ((v: number) => number) | null {
  const entries = toMapEntries(opts.labelMap);
  const reduce = opts.reduceZeroLabel === true;
  if (entries.length === 0 && !reduce) return null;
  const one = (v0: number): number => {
    let v = v0;
    for (const [from, to] of entries) if (v === from) v = to;
    if (reduce) {
      if (v === 0) v = 255;
      v = v - 1;
      if (v === 254) v = 255;
    }
    return v;
  };
  const lut = new Float64Array(256);
  for (let v = 0; v < 256; v++) lut[v] = one(v);
  return (v: number) => (v >= 0 && v < 256 && Number.isInteger(v) ? lut[v]! : one(v));
}

/**
 * Per-image intersection and union areas, as mmseg's `intersect_and_union`.
 *
 * Order of operations (mmseg 0.x / 1.x): apply `labelMap`, then `reduceZeroLabel`
 * (`label[label == 0] = 255; label = label - 1; label[label == 254] = 255`), then drop pixels whose
 * label equals `ignoreIndex`, then histogram (bins 0..numClasses−1; out-of-range values — in the
 * prediction or in the label — are simply not counted, like `torch.histc`).
 *
 * @param pred predicted class id per pixel
 * @param label ground-truth value per pixel (raw annotation values; same length as `pred`)
 * @param numClasses number of classes
 * @param ignoreIndex label value to ignore (default 255)
 * @param reduceZeroLabel apply the ADE20K label shift (default false)
 * @param labelMap optional label remapping applied first
 */
export function intersectAndUnion(
  pred: LabelArray,
  label: LabelArray,
  numClasses: number,
  ignoreIndex = 255,
  reduceZeroLabel = false,
  labelMap?: SegMetricOptions['labelMap'],
): SegAreas {
  checkNumClasses(numClasses);
  if (pred.length !== label.length) {
    throw new RangeError(`prediction has ${pred.length} pixels but label has ${label.length}`);
  }
  const transform = buildLabelTransform({ numClasses, reduceZeroLabel, labelMap });
  const inter = new Float64Array(numClasses);
  const areaPred = new Float64Array(numClasses);
  const areaLabel = new Float64Array(numClasses);
  const n = pred.length;
  for (let i = 0; i < n; i++) {
    const l = transform === null ? label[i]! : transform(label[i]!);
    if (l === ignoreIndex) continue;
    const p = pred[i]!;
    const pIn = p >= 0 && p < numClasses && Number.isInteger(p);
    const lIn = l >= 0 && l < numClasses && Number.isInteger(l);
    if (pIn) areaPred[p]++;
    if (lIn) {
      areaLabel[l]++;
      if (p === l) inter[l]++;
    }
  }
  const union = new Float64Array(numClasses);
  for (let c = 0; c < numClasses; c++) union[c] = areaPred[c]! + areaLabel[c]! - inter[c]!;
  return { areaIntersect: inter, areaUnion: union, areaPredLabel: areaPred, areaLabel };
}

/** Dataset-level metrics, as fractions (not percentages). */
export interface SegSummary {
  /** Overall pixel accuracy: Σ intersect / Σ label area (NaN when no labelled pixel). */
  aAcc: number;
  /** nanmean of per-class IoU. */
  mIoU: number;
  /** nanmean of per-class accuracy. */
  mAcc: number;
  /** nanmean of per-class Dice. */
  mDice: number;
  /** nanmean of per-class F-score (with the chosen beta). */
  mFscore: number;
  /** nanmean of per-class precision. */
  mPrecision: number;
  /** nanmean of per-class recall. */
  mRecall: number;
  /** intersect / union per class; NaN where union is 0. */
  IoU: Float64Array;
  /** intersect / label area per class (= recall); NaN where the class never occurs in the labels. */
  Acc: Float64Array;
  /** 2·intersect / (pred area + label area); NaN where both are 0. */
  Dice: Float64Array;
  /** intersect / pred area; NaN where the class is never predicted. */
  Precision: Float64Array;
  /** intersect / label area; NaN where the class never occurs. */
  Recall: Float64Array;
  /** (1+β²)·P·R / (β²·P + R) per class (NaN propagates as in mmseg). */
  Fscore: Float64Array;
}

/**
 * Mean over the non-NaN entries (numpy's `nanmean`); NaN if every entry is NaN or the array is empty.
 *
 * @param values values to average
 */
export function nanmean(values: ArrayLike<number>): number {
  let s = 0;
  let k = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isNaN(v)) {
      s += v;
      k++;
    }
  }
  return k === 0 ? Number.NaN : s / k;
}

/**
 * mmseg's `f_score(precision, recall, beta)`: (1+β²)·P·R / (β²·P + R).
 *
 * @param precision precision in 0..1 (may be NaN)
 * @param recall recall in 0..1 (may be NaN)
 * @param beta weight of recall (default 1)
 */
export function fscore(precision: number, recall: number, beta = 1): number {
  const b2 = beta * beta;
  return ((1 + b2) * (precision * recall)) / (b2 * precision + recall);
}

/**
 * Dataset metrics from summed areas, as mmseg's `total_area_to_metrics` (all metric kinds at once).
 * Per-class values are NaN where the denominator is 0; means skip NaNs (nanmean).
 *
 * @param totals areas summed over the dataset
 * @param beta F-score beta (default 1)
 * @param nanToNum if given, replace NaN per-class values by this number before averaging
 *                 (mmseg's `nan_to_num` option)
 */
export function totalAreaToMetrics(totals: SegAreas, beta = 1, nanToNum?: number): SegSummary {
  const n = totals.areaIntersect.length;
  let sumInter = 0;
  let sumLabel = 0;
  for (let c = 0; c < n; c++) {
    sumInter += totals.areaIntersect[c]!;
    sumLabel += totals.areaLabel[c]!;
  }
  const div = (a: number, b: number): number => (b === 0 ? (a === 0 ? Number.NaN : a > 0 ? Infinity : -Infinity) : a / b);
  const IoU = new Float64Array(n);
  const Acc = new Float64Array(n);
  const Dice = new Float64Array(n);
  const Precision = new Float64Array(n);
  const Recall = new Float64Array(n);
  const Fscore = new Float64Array(n);
  for (let c = 0; c < n; c++) {
    const i = totals.areaIntersect[c]!;
    const u = totals.areaUnion[c]!;
    const p = totals.areaPredLabel[c]!;
    const l = totals.areaLabel[c]!;
    IoU[c] = div(i, u);
    Acc[c] = div(i, l);
    Dice[c] = div(2 * i, p + l);
    Precision[c] = div(i, p);
    Recall[c] = div(i, l);
    Fscore[c] = fscore(Precision[c]!, Recall[c]!, beta);
  }
  if (nanToNum !== undefined) {
    for (const arr of [IoU, Acc, Dice, Precision, Recall, Fscore]) {
      for (let c = 0; c < n; c++) if (Number.isNaN(arr[c]!)) arr[c] = nanToNum;
    }
  }
  return {
    aAcc: div(sumInter, sumLabel),
    mIoU: nanmean(IoU),
    mAcc: nanmean(Acc),
    mDice: nanmean(Dice),
    mFscore: nanmean(Fscore),
    mPrecision: nanmean(Precision),
    mRecall: nanmean(Recall),
    IoU,
    Acc,
    Dice,
    Precision,
    Recall,
    Fscore,
  };
}

/**
 * numpy's `np.round(x, 2)` on a percentage: round-half-to-even of x·100, divided by 100.
 * (mmseg rounds `value * 100` to 2 decimals before printing.)
 *
 * @param x value to round
 * @param decimals number of decimals (default 2)
 */
export function roundHalfEven(x: number, decimals = 2): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** decimals;
  const y = x * f;
  const r = Math.round(y);
  // Math.round rounds .5 up; numpy's rint rounds exact halves to even.
  const rounded = Math.abs(y - Math.trunc(y)) === 0.5 ? 2 * Math.round(y / 2) : r;
  return rounded / f;
}

function fmtPercent(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  return roundHalfEven(x * 100, 2).toFixed(2);
}

/**
 * Render rows as an ASCII table in PrettyTable's default style (the one mmseg logs):
 * centred cells, one space of padding, `+---+` borders.
 *
 * @param header column titles
 * @param rows table body; every row has `header.length` cells
 */
export function asciiTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, j) => Math.max(h.length, ...rows.map((r) => (r[j] ?? '').length)));
  const center = (s: string, w: number): string => {
    const total = w - s.length;
    // When the padding cannot be split evenly, PrettyTable gives the extra space to the right of
    // odd-length text and to the left of even-length text.
    const half = Math.floor(total / 2);
    const left = total % 2 === 1 && s.length % 2 === 0 ? half + 1 : half;
    return ' '.repeat(left) + s + ' '.repeat(total - left);
  };
  const border = '+' + widths.map((w) => '-'.repeat(w + 2)).join('+') + '+';
  const line = (cells: readonly string[]): string => '|' + cells.map((c, j) => ' ' + center(c, widths[j]!) + ' ').join('|') + '|';
  return [border, line(header), border, ...rows.map(line), border].join('\n');
}

/** Which metrics {@link SegEvaluator.formatTable} shows, as in mmseg's `metric=['mIoU', 'mDice', 'mFscore']`. */
export type SegMetricName = 'mIoU' | 'mDice' | 'mFscore';

/**
 * Accumulates per-class areas over a dataset (mmseg's `pre_eval` + `total_intersect_and_union`)
 * and reports mmseg's metrics. Adding images one at a time gives exactly the same totals as
 * evaluating their concatenation.
 */
export class SegEvaluator {
  /** Number of classes. */
  readonly numClasses: number;
  /** Ignored label value. */
  readonly ignoreIndex: number;
  /** Whether labels get the ADE20K zero-label reduction. */
  readonly reduceZeroLabel: boolean;
  /** Optional label remapping. */
  readonly labelMap: SegMetricOptions['labelMap'];
  /** Running totals. */
  readonly totals: SegAreas;
  private images = 0;

  /** @param opts number of classes, ignore index, zero-label reduction and label map */
  constructor(opts: SegMetricOptions) {
    checkNumClasses(opts.numClasses);
    this.numClasses = opts.numClasses;
    this.ignoreIndex = opts.ignoreIndex ?? 255;
    this.reduceZeroLabel = opts.reduceZeroLabel ?? false;
    this.labelMap = opts.labelMap;
    const z = (): Float64Array => new Float64Array(opts.numClasses);
    this.totals = { areaIntersect: z(), areaUnion: z(), areaPredLabel: z(), areaLabel: z() };
  }

  /** Number of images added so far. */
  get count(): number {
    return this.images;
  }

  /**
   * Add one image's prediction and raw label; returns that image's areas.
   *
   * @param pred predicted class id per pixel
   * @param label raw annotation value per pixel
   */
  add(pred: LabelArray, label: LabelArray): SegAreas {
    const a = intersectAndUnion(pred, label, this.numClasses, this.ignoreIndex, this.reduceZeroLabel, this.labelMap);
    this.addAreas(a);
    return a;
  }

  /**
   * Add precomputed areas (e.g. from a worker) to the totals.
   *
   * @param a areas of one image (or several), with `numClasses` entries each
   */
  addAreas(a: SegAreas): void {
    if (a.areaIntersect.length !== this.numClasses) {
      throw new RangeError(`areas have ${a.areaIntersect.length} classes, evaluator has ${this.numClasses}`);
    }
    const t = this.totals;
    for (let c = 0; c < this.numClasses; c++) {
      t.areaIntersect[c] += a.areaIntersect[c]!;
      t.areaUnion[c] += a.areaUnion[c]!;
      t.areaPredLabel[c] += a.areaPredLabel[c]!;
      t.areaLabel[c] += a.areaLabel[c]!;
    }
    this.images++;
  }

  /** Forget everything added so far. */
  reset(): void {
    for (const arr of Object.values(this.totals) as Float64Array[]) arr.fill(0);
    this.images = 0;
  }

  /**
   * Metrics over everything added (fractions; see {@link totalAreaToMetrics}).
   *
   * @param beta F-score beta (default 1)
   * @param nanToNum optional replacement for NaN per-class values
   */
  summary(beta = 1, nanToNum?: number): SegSummary {
    return totalAreaToMetrics(this.totals, beta, nanToNum);
  }

  /**
   * mmseg-style report: a per-class table (Class | IoU | Acc, ×100, 2 decimals, 'nan' where
   * undefined) and a summary table (aAcc | mIoU | mAcc), preceded by mmseg's headings.
   *
   * @param classNames one name per class (defaults to the class indices)
   * @param metrics metric groups to show (default ['mIoU']; 'mDice' adds Dice, 'mFscore' adds
   *                Fscore/Precision/Recall)
   */
  formatTable(classNames?: readonly string[], metrics: readonly SegMetricName[] = ['mIoU']): string {
    const s = this.summary();
    const names = classNames ?? Array.from({ length: this.numClasses }, (_, i) => String(i));
    if (names.length !== this.numClasses) {
      throw new RangeError(`${names.length} class names given for ${this.numClasses} classes`);
    }
    const cols: [string, Float64Array][] = [];
    const push = (name: string, arr: Float64Array): void => {
      if (!cols.some(([n]) => n === name)) cols.push([name, arr]);
    };
    for (const m of metrics) {
      if (m === 'mIoU') {
        push('IoU', s.IoU);
        push('Acc', s.Acc);
      } else if (m === 'mDice') {
        push('Dice', s.Dice);
        push('Acc', s.Acc);
      } else {
        push('Fscore', s.Fscore);
        push('Precision', s.Precision);
        push('Recall', s.Recall);
      }
    }
    const perClass = asciiTable(
      ['Class', ...cols.map(([n]) => n)],
      names.map((name, c) => [name, ...cols.map(([, arr]) => fmtPercent(arr[c]!))]),
    );
    const sumCols: [string, number][] = [['aAcc', s.aAcc]];
    for (const [n] of cols) {
      const key = ('m' + n) as keyof SegSummary;
      sumCols.push(['m' + n, s[key] as number]);
    }
    const summary = asciiTable(
      sumCols.map(([n]) => n),
      [sumCols.map(([, v]) => fmtPercent(v))],
    );
    return `per class results:\n${perClass}\nSummary:\n${summary}`;
  }
}
