/** Parity checks of decode-head fixtures (filled in with the heads). */
import type { CheckReferenceOptions, ParityRow } from './reference.js';

/** Runs a head fixture. */
export function buildHeadFixture(prefix: string, _cfg: Record<string, unknown>, _o: CheckReferenceOptions): ParityRow[] {
  throw new Error(`check-reference: head fixtures are not supported yet (${prefix})`);
}
