/**
 * Parity checks of decode-head fixtures (the format of ../shared/fixtures/heads and ../shared/fixtures/mask2former):
 * `NAME.json` with the mmseg config under `decode_head` or `auxiliary_head`, `NAME.weights.safetensors` (keys with
 * that prefix) and `NAME.io.safetensors` (inputs `in0..in3`, `logits` or `seg_mask`, and named intermediates).
 *
 * A Mask2Former fixture also stores the segmentor's outputs (`seg_logits`: the head's semantic scores resized to the
 * network input `img_shape`; `seg`: the label map at `ori_shape`; `seg_margin`: top-1 minus top-2 score there).
 * `seg` is compared where the reference margin exceeds twice the run's error of the scores (the README's rule): its
 * row's value is the fraction of those pixels whose label differs, and it passes only at 0.
 */
import { type Tensor, noGrad, scope, softmax, topk } from '../engine/index.js';
import { Mask2FormerHead, buildHead, resize } from '../models/heads/index.js';
import { loadWeights, readStateDict } from '../nn/index.js';
import { maxAbsoluteError } from './compare.js';
import { type CheckReferenceOptions, type CustomCompare, PARITY_TOLERANCE, type ParityRow, compareStored } from './reference.js';

/** The segmentor-level outputs of a Mask2Former head's semantic scores (mmseg's `EncoderDecoderMask2Former`). */
export interface SegmentorOutputs {
  /** `seg_mask` resized to the network input (`encode_decode`). */
  seg_logits: Tensor;
  /** int64 argmax over classes of the scores at `ori_shape` (softmax does not change it). */
  seg: Tensor;
  /** Top-1 minus top-2 class score at `ori_shape`, before the softmax. */
  seg_margin: Tensor;
}

/** `seg_logits`, `seg` and `seg_margin` from a head's scores (whole-image inference, one window). */
export function segmentorOutputs(segMask: Tensor, imgShape: readonly [number, number], oriShape: readonly [number, number],
  alignCorners = false): SegmentorOutputs {
  return scope(() => {
    const logits = resize(segMask, [imgShape[0], imgShape[1]], alignCorners);
    const atOri = resize(logits, [oriShape[0], oriShape[1]], alignCorners);
    const { values } = topk(atOri, 2, 1);
    const seg = softmax(atOri, 1).argmax(1);
    return { seg_logits: logits, seg, seg_margin: values.select(1, 0).sub(values.select(1, 1)) };
  });
}

/**
 * Label maps compared on the pixels whose reference margin exceeds `2·scoreErr` (a score error of `scoreErr` cannot
 * swap the top two classes there): the value is the fraction of those pixels that differ.
 */
export function compareLabels(name: string, got: Tensor, ref: Tensor, margin: Tensor, scoreErr: number): ParityRow {
  return noGrad(() => scope(() => {
    if (got.shape.join() !== ref.shape.join()) throw new Error(`${name}: shape [${got.shape.join(', ')}] differs from the reference [${ref.shape.join(', ')}]`);
    const confident = margin.to({ dtype: 'float64', device: 'cpu' }).gt(2 * scoreErr);
    const compared = confident.sum().item();
    const wrong = got.to({ dtype: 'int64', device: 'cpu' }).ne(ref.to('int64')).logicalAnd(confident).sum().item();
    const frac = compared > 0 ? wrong / compared : Number.NaN;
    return { name, maxRelErr: frac, ok: compared > 0 && wrong === 0 };
  }));
}

/** Runs a head fixture: builds the head from its config, loads weights strictly, compares every stored output. */
export function buildHeadFixture(prefix: string, cfg: Record<string, unknown>, o: CheckReferenceOptions = {}): ParityRow[] {
  const tol = o.tolerance ?? PARITY_TOLERANCE;
  const device = o.device ?? 'cpu';
  const key = 'decode_head' in cfg ? 'decode_head' : 'auxiliary_head';
  const head = buildHead(cfg[key] as Record<string, unknown>);
  loadWeights(head, `${prefix}.weights.safetensors`, { select: `${key}.`, strict: true });
  head.eval();
  if (o.dtype && o.dtype !== 'float32') head.to(o.dtype);
  if (device !== 'cpu') head.to(device);
  try {
    return scope(() => {
      const io = readStateDict(`${prefix}.io.safetensors`);
      const inputs: Tensor[] = [];
      for (let i = 0; io.has(`in${i}`); i++) inputs.push(io.get(`in${i}`)!.to({ device, dtype: o.dtype ?? 'float32' }));
      if (inputs.length === 0) throw new Error(`${prefix}.io.safetensors has no inputs in0..`);
      const got = new Map<string, Tensor>();
      const out = noGrad(() => head.forward(inputs, (n, t) => got.set(n, t.keep())));
      const custom = new Map<string, CustomCompare>();
      if (head instanceof Mask2FormerHead) {
        got.set('seg_mask', out);
        const imgShape = cfg.img_shape as [number, number] | undefined;
        if (imgShape) {
          const seg = segmentorOutputs(out, imgShape, (cfg.ori_shape as [number, number] | undefined) ?? imgShape, head.alignCorners);
          for (const [k, v] of Object.entries(seg)) got.set(k, v);
          const margin = io.get('seg_margin');
          const ref = io.get('seg_logits');
          if (margin && ref) {
            const err = maxAbsoluteError(seg.seg_logits, ref);
            custom.set('seg', (g, r) => compareLabels('seg', g, r, margin, err));
          }
        }
      } else {
        got.set('logits', out);
      }
      return compareStored(io, got, tol, (name) => /^in\d+$/.test(name), custom);
    });
  } finally {
    head.dispose();
  }
}
