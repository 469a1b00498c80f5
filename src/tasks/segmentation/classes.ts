/**
 * Class names and colour palettes for semantic segmentation datasets.
 *
 * The ADE20K lists follow mmsegmentation's `ADE20KDataset` order exactly (index `i` is the
 * class whose ground-truth value is `i + 1` in the raw annotation PNGs, because ADE20K is
 * evaluated with `reduce_zero_label=True`). Note that mmseg spells class 7 `'bed '` with a
 * trailing space; we keep that spelling so that tables and checkpoints' metadata line up.
 */

/** One RGB colour, each component in 0..255. */
export type Rgb = readonly [number, number, number];

/** A list of RGB colours; entry `i` colours class `i`. */
export type Palette = readonly Rgb[];

/** ADE20K's 150 class names, in mmsegmentation's order (index = reduced class id). */
export const ADE20K_CLASSES: readonly string[] = Object.freeze([
  'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed ', 'windowpane', 'grass',
  'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair',
  'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field',
  'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion',
  'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace',
  'refrigerator', 'grandstand', 'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway',
  'river', 'bridge', 'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench',
  'countertop', 'stove', 'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel',
  'bus', 'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
  'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet',
  'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool',
  'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball',
  'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher',
  'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
  'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag',
]);

/** Packed form of the ADE20K palette: 150 × (R, G, B), ten colours per line. */
const ADE20K_PALETTE_FLAT: readonly number[] = [
  120, 120, 120, 180, 120, 120, 6, 230, 230, 80, 50, 50, 4, 200, 3, 120, 120, 80, 140, 140, 140, 204, 5, 255, 230, 230, 230, 4, 250, 7,
  224, 5, 255, 235, 255, 7, 150, 5, 61, 120, 120, 70, 8, 255, 51, 255, 6, 82, 143, 255, 140, 204, 255, 4, 255, 51, 7, 204, 70, 3,
  0, 102, 200, 61, 230, 250, 255, 6, 51, 11, 102, 255, 255, 7, 71, 255, 9, 224, 9, 7, 230, 220, 220, 220, 255, 9, 92, 112, 9, 255,
  8, 255, 214, 7, 255, 224, 255, 184, 6, 10, 255, 71, 255, 41, 10, 7, 255, 255, 224, 255, 8, 102, 8, 255, 255, 61, 6, 255, 194, 7,
  255, 122, 8, 0, 255, 20, 255, 8, 41, 255, 5, 153, 6, 51, 255, 235, 12, 255, 160, 150, 20, 0, 163, 255, 140, 140, 140, 250, 10, 15,
  20, 255, 0, 31, 255, 0, 255, 31, 0, 255, 224, 0, 153, 255, 0, 0, 0, 255, 255, 71, 0, 0, 235, 255, 0, 173, 255, 31, 0, 255,
  11, 200, 200, 255, 82, 0, 0, 255, 245, 0, 61, 255, 0, 255, 112, 0, 255, 133, 255, 0, 0, 255, 163, 0, 255, 102, 0, 194, 255, 0,
  0, 143, 255, 51, 255, 0, 0, 82, 255, 0, 255, 41, 0, 255, 173, 10, 0, 255, 173, 255, 0, 0, 255, 153, 255, 92, 0, 255, 0, 255,
  255, 0, 245, 255, 0, 102, 255, 173, 0, 255, 0, 20, 255, 184, 184, 0, 31, 255, 0, 255, 61, 0, 71, 255, 255, 0, 204, 0, 255, 194,
  0, 255, 82, 0, 10, 255, 0, 112, 255, 51, 0, 255, 0, 194, 255, 0, 122, 255, 0, 255, 163, 255, 153, 0, 0, 255, 10, 255, 112, 0,
  143, 255, 0, 82, 0, 255, 163, 255, 0, 255, 235, 0, 8, 184, 170, 133, 0, 255, 0, 255, 92, 184, 0, 255, 255, 0, 31, 0, 184, 255,
  0, 214, 255, 255, 0, 112, 92, 255, 0, 0, 224, 255, 112, 224, 255, 70, 184, 160, 163, 0, 255, 153, 0, 255, 71, 255, 0, 255, 0, 163,
  255, 204, 0, 255, 0, 143, 0, 255, 235, 133, 255, 0, 255, 0, 235, 245, 0, 255, 255, 0, 122, 255, 245, 0, 10, 190, 212, 214, 255, 0,
  0, 204, 255, 20, 0, 255, 255, 255, 0, 0, 153, 255, 0, 41, 255, 0, 255, 204, 41, 0, 255, 41, 255, 0, 173, 0, 255, 0, 245, 255,
  71, 0, 255, 122, 0, 255, 0, 255, 184, 0, 92, 255, 184, 255, 0, 0, 133, 255, 255, 214, 0, 25, 194, 194, 102, 255, 0, 92, 0, 255,
];

function unflatten(flat: readonly number[]): Palette {
  const out: Rgb[] = [];
  for (let i = 0; i + 2 < flat.length; i += 3) {
    out.push(Object.freeze([flat[i]!, flat[i + 1]!, flat[i + 2]!] as const));
  }
  return Object.freeze(out);
}

/** mmsegmentation's ADE20K palette: 150 RGB triples, entry `i` colours `ADE20K_CLASSES[i]`. */
export const ADE20K_PALETTE: Palette = unflatten(ADE20K_PALETTE_FLAT);

// ---------------------------------------------------------------------------------------------
// Palette generators
// ---------------------------------------------------------------------------------------------

/**
 * A 32-bit Mersenne Twister (MT19937) seeded the way numpy's legacy `np.random.seed(int)` seeds
 * it (Knuth's linear initialiser, no `init_by_array`). Used to reproduce mmseg's random palette.
 */
class Mt19937 {
  private readonly mt = new Uint32Array(624);
  private index = 624;

  constructor(seed: number) {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]!;
      mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
  }

  /** Next raw 32-bit output (tempered). */
  nextUint32(): number {
    const mt = this.mt;
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        let v = mt[(k + 397) % 624]! ^ (y >>> 1);
        if (y & 1) v ^= 0x9908b0df;
        mt[k] = v >>> 0;
      }
      this.index = 0;
    }
    let y = mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/**
 * The palette mmsegmentation makes up when a custom dataset declares classes but no palette:
 * `np.random.seed(42); np.random.randint(0, 255, size=(n, 3))` (so components lie in 0..254).
 * Reproduced bit-for-bit with numpy's legacy MT19937 and its masked rejection sampling, so that
 * colours match what mmseg would draw for the same class list.
 *
 * @param n number of classes (colours to generate)
 * @param seed numpy seed; mmseg always uses 42
 */
export function mmsegRandomPalette(n: number, seed = 42): Palette {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`mmsegRandomPalette: n must be a non-negative integer, got ${n}`);
  const rng = new Mt19937(seed);
  // randint(0, 255): closed range 0..254, mask 0xff, draw until (u32 & mask) <= 254.
  const draw = (): number => {
    for (;;) {
      const v = rng.nextUint32() & 0xff;
      if (v <= 254) return v;
    }
  };
  const out: Rgb[] = [];
  for (let i = 0; i < n; i++) {
    const r = draw();
    const g = draw();
    const b = draw();
    out.push(Object.freeze([r, g, b] as const));
  }
  return Object.freeze(out);
}

/**
 * The PASCAL VOC colour map (bit-interleaved class index): class 0 is black, then
 * (128,0,0), (0,128,0), (128,128,0), ... Colours are distinct for all 256 indices, which makes it
 * a good default for label PNGs whose class count is unknown.
 *
 * @param n number of colours, at most 256
 */
export function vocPalette(n = 256): Palette {
  if (!Number.isInteger(n) || n < 0 || n > 256) throw new RangeError(`vocPalette: n must be an integer in 0..256, got ${n}`);
  const out: Rgb[] = [];
  for (let i = 0; i < n; i++) {
    let r = 0;
    let g = 0;
    let b = 0;
    let c = i;
    for (let shift = 7; shift >= 0 && c > 0; shift--) {
      r |= (c & 1) << shift;
      g |= ((c >> 1) & 1) << shift;
      b |= ((c >> 2) & 1) << shift;
      c >>= 3;
    }
    out.push(Object.freeze([r, g, b] as const));
  }
  return Object.freeze(out);
}

/**
 * Deterministic palette for a custom dataset with `n` classes. Same colours as mmseg's default
 * (see {@link mmsegRandomPalette}), so visualisations agree with mmseg's for the same classes.
 *
 * @param n number of classes
 */
export function generatePalette(n: number): Palette {
  return mmsegRandomPalette(n, 42);
}

/**
 * Check that a palette has at least `numClasses` entries of integer components in 0..255.
 * Throws a RangeError naming the first bad entry.
 *
 * @param palette palette to check
 * @param numClasses minimum number of colours required (defaults to the palette length)
 */
export function validatePalette(palette: Palette, numClasses = palette.length): void {
  if (palette.length < numClasses) {
    throw new RangeError(`palette has ${palette.length} colours but ${numClasses} classes need colours`);
  }
  for (let i = 0; i < palette.length; i++) {
    const c = palette[i]!;
    if (c.length !== 3 || !c.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
      throw new RangeError(`palette entry ${i} is not an RGB triple of integers in 0..255: ${JSON.stringify(c)}`);
    }
  }
}
