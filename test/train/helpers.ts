/** Shared helpers of the training tests: fixture JSON and safetensors tensors from ../shared/fixtures/training. */
import { readFileSync } from 'node:fs';
import { type DType, type Tensor, fromBytes } from '../../src/engine/index.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { parseSafetensors, type RawTensor } from '../helpers/safetensors-mini.js';

/** `skip` option: false when ../shared/fixtures/training exists. */
export const SKIP = skipUnlessFixtures('training');

/** Parsed JSON of a training fixture file. */
export function fixtureJson<T = any>(name: string): T { // eslint-disable-line @typescript-eslint/no-explicit-any
  return JSON.parse(readFileSync(fixturePath('training', name), 'utf8')) as T;
}

const DT: Record<string, DType> = { F64: 'float64', F32: 'float32', I64: 'int64', U8: 'uint8' };

/** All tensors of a training safetensors fixture, as raw entries. */
export function fixtureArrays(name: string): Map<string, RawTensor> {
  return parseSafetensors(new Uint8Array(readFileSync(fixturePath('training', name))));
}

/** One raw entry as a tensor (copied). */
export function toTensor(raw: RawTensor | undefined, key = '?'): Tensor {
  if (!raw) throw new Error(`fixture tensor ${key} missing`);
  const dt = DT[raw.dtype];
  if (!dt) throw new Error(`fixture tensor ${key}: dtype ${raw.dtype}`);
  return fromBytes(raw.data.slice(), dt, raw.shape);
}

/** Largest |a - b| / max(|b|, floor) over all elements (both read as float64). */
export function maxRelDiff(a: Tensor, b: Tensor, floor = 1e-300): number {
  const x = a.to('float64').toTypedArray() as Float64Array;
  const y = b.to('float64').toTypedArray() as Float64Array;
  if (x.length !== y.length) throw new Error(`maxRelDiff: ${x.length} vs ${y.length} elements`);
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i]! - y[i]!) / Math.max(Math.abs(y[i]!), floor);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** max |a - b| / max |b| (differences relative to the tensor's scale). */
export function maxScaledDiff(a: Tensor, b: Tensor): number {
  const x = a.to('float64').toTypedArray() as Float64Array;
  const y = b.to('float64').toTypedArray() as Float64Array;
  let d = 0;
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const e = Math.abs(x[i]! - y[i]!);
    if (!(e <= d)) d = Number.isNaN(e) ? Infinity : e;
    s = Math.max(s, Math.abs(y[i]!));
  }
  return s === 0 ? d : d / s;
}
