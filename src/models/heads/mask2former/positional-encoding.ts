/**
 * mmdet's `SinePositionalEncoding` (DETR's 2-d sine/cosine position embedding) for unpadded maps, as the
 * Mask2Former pixel decoder and transformer decoder use it. No parameters.
 *
 * For an h×w map: `y_i = (i + 1 + offset) / (h + eps) · scale` (likewise `x_j` with w) when `normalize`, else
 * `i + 1`; `dim_t[k] = temperature^(2·floor(k/2) / num_feats)`; channel k < num_feats is `sin(y / dim_t[k])` for
 * even k and `cos(y / dim_t[k])` for odd k, channel num_feats + k the same with x. Computed in float32 as mmdet does
 * (it casts the cumulative sums to float32), then converted to the requested dtype.
 */
import { type Tensor, arange, cat, scope, stack } from '../../../engine/index.js';
import { type ConfigDict, checkKeys } from '../conv-module.js';

/** `positional_encoding` config (`type: 'SinePositionalEncoding'`). */
export interface SinePositionalEncodingCfg {
  type: 'SinePositionalEncoding';
  /** Channels per axis (the output has 2·num_feats channels). */
  num_feats: number;
  temperature?: number;
  normalize?: boolean;
  /** Default 2π. */
  scale?: number;
  eps?: number;
  offset?: number;
  init_cfg?: unknown;
}

/** The parsed encoding settings. */
export interface SineEncoding {
  numFeats: number;
  temperature: number;
  normalize: boolean;
  scale: number;
  eps: number;
  offset: number;
}

/** Validates a `SinePositionalEncoding` config (mmdet's defaults: temperature 10000, scale 2π, eps 1e-6, offset 0). */
export function parseSineEncoding(where: string, v: unknown): SineEncoding {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: positional_encoding must be a dict`);
  const c = v as ConfigDict;
  checkKeys(`${where}: positional_encoding`, c, ['type', 'num_feats', 'temperature', 'normalize', 'scale', 'eps', 'offset', 'init_cfg']);
  if (c.type !== 'SinePositionalEncoding') {
    throw new Error(`${where}: positional_encoding type ${JSON.stringify(c.type)} is not supported; only SinePositionalEncoding`);
  }
  if (!Number.isInteger(c.num_feats) || (c.num_feats as number) < 1) {
    throw new Error(`${where}: positional_encoding.num_feats must be a positive integer, got ${JSON.stringify(c.num_feats)}`);
  }
  if ((c.num_feats as number) % 2) throw new Error(`${where}: positional_encoding.num_feats must be even (sin/cos pairs), got ${c.num_feats}`);
  const num = (k: string, d: number): number => {
    const x = c[k] ?? d;
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`${where}: positional_encoding.${k} must be a number, got ${JSON.stringify(x)}`);
    return x;
  };
  const normalize = c.normalize ?? false;
  if (typeof normalize !== 'boolean') throw new Error(`${where}: positional_encoding.normalize must be a boolean`);
  return {
    numFeats: c.num_feats as number, temperature: num('temperature', 10000), normalize, scale: num('scale', 2 * Math.PI),
    eps: num('eps', 1e-6), offset: num('offset', 0),
  };
}

/**
 * The encoding of an unpadded h×w map → 1×(2·num_feats)×h×w (the same for every batch element; expand it as
 * needed), in float32 unless `dtype` is given, on `device`.
 */
export function sinePositionalEncoding(e: SineEncoding, h: number, w: number, o: { device?: string; dtype?: 'float32' | 'float64' } = {}): Tensor {
  const device = o.device ?? 'cpu';
  return scope(() => {
    const f32 = { dtype: 'float32' as const, device };
    // the cumulative sums of an all-ones mask are 1..h / 1..w
    let y = arange(1, h + 1, 1, f32);
    let x = arange(1, w + 1, 1, f32);
    if (e.normalize) {
      // mmdet: (embed + offset) / (embed[-1] + eps) * scale, in float32
      const lastY = arange(h, h + 1, 1, f32).add(e.eps);
      const lastX = arange(w, w + 1, 1, f32).add(e.eps);
      y = y.add(e.offset).div(lastY).mul(e.scale);
      x = x.add(e.offset).div(lastX).mul(e.scale);
    }
    const nf = e.numFeats;
    const k = arange(0, nf, 1, f32);
    const dimT = arange(0, 1, 1, f32).add(e.temperature).pow(k.div(2).floor().mul(2).div(nf)); // temperature ** (2·(k//2)/nf)
    const enc = (v: Tensor, n: number): Tensor => {
      const p = v.view(n, 1).div(dimT.view(1, nf)); // n × nf
      const even = p.slice(1, 0, nf, 2).sin();
      const odd = p.slice(1, 1, nf, 2).cos();
      // interleave: [sin k=0, cos k=1, sin k=2, ...]
      return stack([even, odd], 2).view(n, nf);
    };
    const py = enc(y, h).transpose(0, 1).view(1, nf, h, 1).expand(1, nf, h, w);
    const px = enc(x, w).transpose(0, 1).view(1, nf, 1, w).expand(1, nf, h, w);
    const pos = cat([py, px], 1).contiguous();
    return o.dtype && o.dtype !== 'float32' ? pos.to(o.dtype) : pos;
  });
}
