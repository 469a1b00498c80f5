/**
 * Parity checks of decode-head fixtures (the format of ../shared/fixtures/heads): `NAME.json` with the mmseg config
 * under `decode_head` or `auxiliary_head`, `NAME.weights.safetensors` (keys with that prefix) and
 * `NAME.io.safetensors` (inputs `in0..in3`, `logits` and named intermediates).
 */
import { type Tensor, noGrad, scope } from '../engine/index.js';
import { buildHead } from '../models/heads/index.js';
import { loadWeights, readStateDict } from '../nn/index.js';
import { type CheckReferenceOptions, PARITY_TOLERANCE, type ParityRow, compareStored } from './reference.js';

/** Runs a head fixture: builds the head from its config, loads weights strictly, compares every stored output. */
export function buildHeadFixture(prefix: string, cfg: Record<string, unknown>, o: CheckReferenceOptions = {}): ParityRow[] {
  const tol = o.tolerance ?? PARITY_TOLERANCE;
  const device = o.device ?? 'cpu';
  const key = 'decode_head' in cfg ? 'decode_head' : 'auxiliary_head';
  const head = buildHead(cfg[key] as Record<string, unknown>);
  loadWeights(head, `${prefix}.weights.safetensors`, { select: `${key}.`, strict: true });
  head.eval();
  if (device !== 'cpu') head.to(device);
  try {
    return scope(() => {
      const io = readStateDict(`${prefix}.io.safetensors`);
      const inputs: Tensor[] = [];
      for (let i = 0; io.has(`in${i}`); i++) inputs.push(io.get(`in${i}`)!.to(device));
      if (inputs.length === 0) throw new Error(`${prefix}.io.safetensors has no inputs in0..`);
      const got = new Map<string, Tensor>();
      const logits = noGrad(() => head.forward(inputs, (n, t) => got.set(n, t.keep())));
      got.set('logits', logits);
      return compareStored(io, got, tol, (name) => /^in\d+$/.test(name));
    });
  } finally {
    head.dispose();
  }
}
