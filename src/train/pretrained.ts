/**
 * Loading an ImageNet-pretrained plain ViT (timm / DeiT / AugReg layout) into a ViT-Adapter (or plain ViT) backbone,
 * as the authors' `init_weights(pretrained)` does: a non-strict load of the checkpoint's ViT keys into the backbone
 * module, so the ViT part (`patch_embed.*`, `pos_embed`, `blocks.*`) gets the pretrained values and the adapter
 * (`level_embed`, `spm.*`, `interactions.*`, `up`, `norm1..4`), the layer-scale gammas (absent from DeiT) and the
 * heads keep their own initialisation.
 *
 * - The file may be a `.pth` with the weights under `model` / `state_dict` / `module` or bare, or safetensors; a
 *   `module.` prefix is removed, and an mmseg checkpoint's `backbone.*` keys are used when present.
 * - `cls_token`, `dist_token`, the classifier (`head.*`, `head_dist.*`), the final `norm.*` / `fc_norm.*` and other
 *   keys the backbone does not have are skipped and listed.
 * - `pos_embed` keeps the class-token slot (the backbone's table is `1 × (1 + g²) × D` for its `pretrain_size`, and
 *   is resized to the input at forward). A table of another grid (e.g. a 384 checkpoint into a 224 model) is resized
 *   bicubically (align_corners false) to the backbone's grid, with a note.
 * - A checkpoint of another architecture (no ViT keys, or ViT keys whose shapes differ: another width, patch size,
 *   depth) is an error listing what differs.
 */
import { type Tensor, cat, interpolate, noGrad } from '../engine/index.js';
import type { Module, TensorSource } from '../nn/index.js';
import { openStateDict } from '../nn/serialization.js';

/** What {@link loadPretrainedViT} did. */
export interface PretrainedReport {
  path: string;
  /** Backbone keys loaded from the file. */
  loaded: string[];
  /** File keys not loaded, with the reason. */
  skipped: { key: string; reason: string }[];
  /** Backbone keys the file does not have (they keep their initialisation). */
  missing: string[];
  /** Notes (pos_embed resized, prefix used, ...). */
  notes: string[];
}

/** Error for a pretrained file that does not fit the backbone. */
export class PretrainedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PretrainedError';
  }
}

const VIT_KEY_RE = /^(pos_embed|patch_embed\.|blocks\.)/;

function reasonFor(key: string): string {
  if (key === 'cls_token' || key === 'dist_token') return 'class/distillation token: not used by the dense backbone';
  if (key.startsWith('head.') || key.startsWith('head_dist.')) return 'ImageNet classifier head';
  if (key.startsWith('norm.') || key.startsWith('fc_norm.') || key.startsWith('pre_logits.')) return 'final norm / pre-logits of the classifier';
  return 'not a parameter of the backbone';
}

/** Resizes a `1 × (1 + s²) × D` table (class slot first) to `1 × (1 + g²) × D`. */
function resizePosEmbed(src: Tensor, g: number): Tensor {
  const [, n, D] = src.shape as [number, number, number];
  const s = Math.round(Math.sqrt(n - 1));
  const cls = src.narrow(1, 0, 1);
  const grid = src.narrow(1, 1, n - 1).reshape(1, s, s, D).permute(0, 3, 1, 2);
  const r = interpolate(grid, { size: [g, g], mode: 'bicubic', alignCorners: false }).permute(0, 2, 3, 1).reshape(1, g * g, D);
  return cat([cls, r], 1);
}

/**
 * Loads a pretrained ViT checkpoint into `backbone` (see the module notes) and returns what was loaded, skipped and
 * left missing. Throws {@link PretrainedError} when the file is not a ViT of this shape.
 *
 * @param backbone the backbone module (its own keys: `pos_embed`, `patch_embed.proj.weight`, `blocks.0.*`, ...)
 * @param path `.pth` or `.safetensors` file
 */
export function loadPretrainedViT(backbone: Module, path: string): PretrainedReport {
  const { sources, checkpoint } = openStateDict(path, { strip: ['module.'] });
  try {
    const notes: string[] = [];
    let src = sources;
    const bb = [...sources.keys()].filter((k) => k.startsWith('backbone.'));
    if (bb.length > 0) {
      src = new Map([...sources].filter(([k]) => k.startsWith('backbone.')).map(([k, v]) => [k.slice('backbone.'.length), v] as [string, TensorSource]));
      notes.push(`using the ${bb.length} backbone.* keys of the file (${sources.size - bb.length} other keys ignored)`);
    }
    const own = backbone.stateDict();
    const vitKeys = [...src.keys()].filter((k) => VIT_KEY_RE.test(k));
    if (vitKeys.length === 0) {
      const sample = [...src.keys()].slice(0, 5).join(', ');
      throw new PretrainedError(`${path}: not a ViT checkpoint: none of its ${src.size} keys is pos_embed, patch_embed.* or ` +
        `blocks.* (first keys: ${sample || 'none'})`);
    }
    const mismatched: string[] = [];
    const unknownBlocks: string[] = [];
    for (const k of vitKeys) {
      const t = own.get(k);
      const s = src.get(k)!;
      if (!t) {
        unknownBlocks.push(k);
        continue;
      }
      const a = t.shape;
      const b = [...s.shape];
      const same = a.length === b.length && a.every((v, i) => v === b[i]);
      if (same) continue;
      if (k === 'pos_embed' && b.length === 3 && b[0] === 1 && b[2] === a[2] && Number.isInteger(Math.sqrt(b[1]! - 1))) continue;
      mismatched.push(`${k}: file [${b.join(', ')}] vs backbone [${a.join(', ')}]`);
    }
    const blockKeysMissingInModel = unknownBlocks.filter((k) => /^blocks\.\d+\./.test(k) && !/\.(ls[12]\.gamma)$/.test(k));
    if (mismatched.length || blockKeysMissingInModel.length > 0) {
      const depthFile = new Set(vitKeys.filter((k) => k.startsWith('blocks.')).map((k) => k.split('.')[1])).size;
      const depthOwn = new Set([...own.keys()].filter((k) => k.startsWith('blocks.')).map((k) => k.split('.')[1])).size;
      const parts = [...mismatched.slice(0, 6)];
      if (mismatched.length > 6) parts.push(`... ${mismatched.length - 6} more`);
      if (depthFile !== depthOwn) parts.push(`the file has ${depthFile} blocks, the backbone ${depthOwn}`);
      else if (blockKeysMissingInModel.length) parts.push(`keys the backbone lacks: ${blockKeysMissingInModel.slice(0, 4).join(', ')}`);
      throw new PretrainedError(`${path}: a ViT of another architecture than this backbone: ${parts.join('; ')}`);
    }
    const loaded: string[] = [];
    const skipped: { key: string; reason: string }[] = [];
    noGrad(() => {
      for (const [k, s] of src) {
        const t = own.get(k);
        if (!t) {
          skipped.push({ key: k, reason: reasonFor(k) });
          continue;
        }
        let v = s.materialize();
        if (k === 'pos_embed' && v.shape[1] !== t.shape[1]) {
          const g = Math.round(Math.sqrt(t.shape[1]! - 1));
          const from = Math.round(Math.sqrt(v.shape[1]! - 1));
          const r = resizePosEmbed(v, g);
          v.dispose();
          v = r;
          notes.push(`pos_embed resized from a ${from}×${from} to a ${g}×${g} grid (bicubic), class-token slot kept`);
        }
        t.copy_(v);
        v.dispose();
        loaded.push(k);
      }
    });
    const missing = [...own.keys()].filter((k) => !src.has(k));
    return { path, loaded, skipped, missing, notes };
  } finally {
    checkpoint.close();
  }
}

/** A short multi-line description of a {@link PretrainedReport}. */
export function formatPretrainedReport(r: PretrainedReport, limit = 8): string {
  const list = (xs: string[]): string => (xs.length <= limit ? xs.join(', ') : `${xs.slice(0, limit).join(', ')}, ... (${xs.length - limit} more)`);
  const lines = [`pretrained ${r.path}: loaded ${r.loaded.length} tensors into the backbone`];
  if (r.skipped.length) {
    const byReason = new Map<string, string[]>();
    for (const s of r.skipped) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s.key]);
    for (const [reason, keys] of byReason) lines.push(`  skipped ${keys.length} (${reason}): ${list(keys)}`);
  }
  if (r.missing.length) {
    const groups = new Map<string, number>();
    for (const k of r.missing) {
      const head = /^blocks\.\d+\.gamma[12]$/.test(k) ? 'blocks.*.gamma1/2 (layer scale)' : k.split('.')[0]!;
      groups.set(head, (groups.get(head) ?? 0) + 1);
    }
    lines.push(`  missing ${r.missing.length} (kept at their initialisation): ${[...groups].map(([g, n]) => `${g} (${n})`).join(', ')}`);
  }
  for (const n of r.notes) lines.push(`  note: ${n}`);
  return lines.join('\n');
}
