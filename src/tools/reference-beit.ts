/**
 * Parity checks of the BEiT-family fixtures (../shared/fixtures/beit) that are not plain backbone fixtures: the
 * BEiT-3 encoder (`encoder_config`), relative position table resizes (`cases`), loading a pre-training checkpoint
 * (`checkpoint_keys` + `expected_file`) and the BEiT-3 position table resize (`key` + `src_img_size`).
 * Backbone fixtures (`kwargs`: BEiTAdapter, BEiTBaseline) go through `checkBackboneFixture`.
 */
import { dirname, join } from 'node:path';
import { type Tensor, noGrad, scope, tensor } from '../engine/index.js';
import { BEiTAdapter, type BEiTAdapterOptions } from '../models/adapter/beit-adapter.js';
import { type RelposLoader, resizeRelposTable } from '../models/beit.js';
import { type BEiT3Config, BEiT3Wrapper, resizeBEiT3Positions } from '../models/beit3.js';
import { loadWeights, readStateDict } from '../nn/index.js';
import { type CheckReferenceOptions, PARITY_TOLERANCE, type ParityRow, compareStored } from './reference.js';
import { maxRelativeError } from './compare.js';

/** The BEiT-family fixture kinds {@link checkBEiTFixture} runs. */
export type BEiTFixtureKind = 'beit3' | 'relpos-resize' | 'pretrained' | 'beit3-pos-resize';

/** Which BEiT-family fixture a JSON describes, or null. */
export function beitFixtureKind(cfg: Record<string, unknown>): BEiTFixtureKind | null {
  if ('encoder_config' in cfg) return 'beit3';
  if ('cases' in cfg) return 'relpos-resize';
  if ('checkpoint_keys' in cfg && 'expected_file' in cfg) return 'pretrained';
  if ('key' in cfg && 'src_img_size' in cfg && 'dst_img_size' in cfg) return 'beit3-pos-resize';
  return null;
}

function row(name: string, got: Tensor, ref: Tensor, tol: number): ParityRow {
  const e = maxRelativeError(got, ref);
  return { name, maxRelErr: e, ok: e < tol && Number.isFinite(e) };
}

function need(io: Map<string, Tensor>, k: string, file: string): Tensor {
  const t = io.get(k);
  if (!t) throw new Error(`${file}: no tensor ${JSON.stringify(k)}`);
  return t;
}

/** Runs a BEiT-family fixture `DIR/NAME` of the given kind. */
export function checkBEiTFixture(kind: BEiTFixtureKind, prefix: string, cfg: Record<string, unknown>,
  o: CheckReferenceOptions = {}): ParityRow[] {
  const tol = o.tolerance ?? PARITY_TOLERANCE;
  switch (kind) {
    case 'beit3': return checkBEiT3(prefix, cfg.encoder_config as BEiT3Config, tol, o.device ?? 'cpu');
    case 'relpos-resize': return checkRelposResize(prefix, cfg as unknown as RelposFixture, tol);
    case 'pretrained': return checkPretrained(prefix, cfg as unknown as PretrainedFixture, tol);
    case 'beit3-pos-resize': return checkBEiT3PosResize(prefix, cfg as unknown as { src_img_size: number; dst_img_size: number; patch_size: number }, tol);
  }
}

/** BEiT-3 encoder: the image-only call (vision_embed, every layer, encoder_out) and the image+text call (`vl.*`). */
function checkBEiT3(prefix: string, config: BEiT3Config, tol: number, device: string): ParityRow[] {
  const model = new BEiT3Wrapper(config);
  loadWeights(model, `${prefix}.weights.safetensors`, { strict: true });
  model.eval();
  if (device !== 'cpu') model.to(device);
  try {
    return scope(() => {
      const file = `${prefix}.io.safetensors`;
      const io = readStateDict(file);
      const image = need(io, 'input', file).to(device);
      const got = new Map<string, Tensor>();
      noGrad(() => {
        const a = model.beit3.forward({ image }, (n, t) => got.set(n, t.keep()));
        got.set('encoder_out', a.encoder_out.keep());
        if (io.has('text_tokens')) {
          const text = io.get('text_tokens')!.to(device);
          const pad = io.get('text_padding_position')?.to(device) ?? null;
          const b = model.beit3.forward({ image, text, textPadding: pad }, (n, t) => { if (n !== 'vision_embed') got.set(`vl.${n}`, t.keep()); });
          got.set('vl.encoder_out', b.encoder_out.keep());
          got.set('vl.multiway_split_position', tensor([b.multiway_split_position], { dtype: 'int64', shape: [] }).keep());
        }
      });
      return compareStored(io, got, tol, (n) => n === 'input' || n === 'text_tokens' || n === 'text_padding_position');
    });
  } finally {
    model.dispose();
  }
}

interface RelposFixture {
  cases: { name: string; loader: RelposLoader; target_kwargs: { img_size: number; patch_size?: number };
    heads: number; blocks: { key: string; src_shape: [number, number]; dst_shape: [number, number] }[] }[];
}

/** Relative position tables: every `CASE.KEY.src` resized by the authors' rules against `CASE.KEY.dst`. */
function checkRelposResize(prefix: string, cfg: RelposFixture, tol: number): ParityRow[] {
  return scope(() => {
    const file = `${prefix}.safetensors`;
    const sd = readStateDict(file);
    const rows: ParityRow[] = [];
    for (const c of cfg.cases) {
      const g = Math.trunc(c.target_kwargs.img_size / (c.target_kwargs.patch_size ?? 16));
      for (const b of c.blocks) {
        const src = need(sd, `${c.name}.${b.key}.src`, file);
        const dst = need(sd, `${c.name}.${b.key}.dst`, file);
        const values = src.to('float64').consume((t) => Float64Array.from(t.toTypedArray() as Float64Array));
        const r = resizeRelposTable(values, b.src_shape[0], c.heads, b.dst_shape[0], c.loader, [g, g]);
        rows.push(row(`${c.name}.${b.key}`, tensor(r.table, { shape: [r.rows, c.heads] }), dst, tol));
      }
    }
    sd.forEach((t) => t.dispose());
    return rows;
  });
}

interface PretrainedFixture {
  target_kwargs: BEiTAdapterOptions;
  unexpected_keys: string[];
  missing_keys_backbone_part: string[];
  expected_file: string;
}

/**
 * A pre-training checkpoint loaded by `BEiTAdapter(pretrained=...)`: the model's tensors against the expected
 * ones, and the unexpected / missing key lists against the authors' (rows `unexpected_keys`, `missing_keys`: error 0
 * when equal).
 */
function checkPretrained(prefix: string, cfg: PretrainedFixture, tol: number): ParityRow[] {
  const pth = `${prefix}.pth`;
  const model = new BEiTAdapter({ ...cfg.target_kwargs, pretrained: pth });
  try {
    return scope(() => {
      const expected = readStateDict(join(dirname(prefix), cfg.expected_file.split(' ')[0]!));
      const own = model.stateDict();
      const rows: ParityRow[] = [];
      for (const [k, ref] of expected) {
        const t = own.get(k);
        rows.push(t ? row(k, t, ref, tol) : { name: k, maxRelErr: Number.NaN, ok: false });
      }
      expected.forEach((t) => t.dispose());
      const rep = model.pretrainedReport!;
      const same = (a: string[], b: string[]): boolean => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
      const u = same(rep.unexpected, cfg.unexpected_keys);
      const m = same(rep.missing, cfg.missing_keys_backbone_part);
      rows.push({ name: 'unexpected_keys', maxRelErr: u ? 0 : Number.NaN, ok: u });
      rows.push({ name: 'missing_keys', maxRelErr: m ? 0 : Number.NaN, ok: m });
      return rows;
    });
  } finally {
    model.dispose();
  }
}

/** BEiT-3 position table: `src` resized for the destination image size against `dst`. */
function checkBEiT3PosResize(prefix: string, cfg: { src_img_size: number; dst_img_size: number; patch_size: number }, tol: number): ParityRow[] {
  return scope(() => {
    const file = `${prefix}.safetensors`;
    const sd = readStateDict(file);
    const n = Math.trunc(cfg.dst_img_size / cfg.patch_size) ** 2;
    const got = noGrad(() => resizeBEiT3Positions(need(sd, 'src', file), n));
    const r = [row('dst', got, need(sd, 'dst', file), tol)];
    sd.forEach((t) => t.dispose());
    return r;
  });
}
