/**
 * Error type of the checkpoint I/O layer.
 *
 * Every problem found while reading or writing a checkpoint (corrupt, truncated or mismatched
 * data, a refused pickle global, an unsupported dtype...) is reported as a {@link CheckpointError}
 * whose message names the file, the entry (tensor name, zip entry, pickle offset) and the problem.
 */

/** Where a {@link CheckpointError} happened. */
export interface CheckpointErrorContext {
  /** Path (or label, for in-memory data) of the file being read or written. */
  file?: string;
  /** Tensor name, zip entry name or other item inside the file. */
  entry?: string;
  /** Underlying error, if any. */
  cause?: unknown;
}

/**
 * A corrupt, truncated, unsupported or unsafe checkpoint.
 *
 * The message reads `<file>: <entry>: <problem>`; the parts are also available as fields.
 */
export class CheckpointError extends Error {
  /** File path or label, when known. */
  readonly file: string | undefined;
  /** Entry (tensor name, zip entry, ...) inside the file, when known. */
  readonly entry: string | undefined;
  /** The problem alone, without the file and entry prefix. */
  readonly problem: string;

  /**
   * @param problem what is wrong (one sentence, lower case start is fine)
   * @param context the file and entry concerned
   */
  constructor(problem: string, context: CheckpointErrorContext = {}) {
    const parts: string[] = [];
    if (context.file !== undefined) parts.push(context.file);
    if (context.entry !== undefined) parts.push(`entry '${context.entry}'`);
    parts.push(problem);
    super(parts.join(': '), context.cause !== undefined ? { cause: context.cause } : undefined);
    this.name = 'CheckpointError';
    this.file = context.file;
    this.entry = context.entry;
    this.problem = problem;
  }
}

/**
 * Re-throws `err` as a {@link CheckpointError} carrying `file`/`entry` when it is not one already
 * (or when it is one that lacks a file name). Used at API boundaries.
 */
export function withContext(err: unknown, file: string, entry?: string): CheckpointError {
  if (err instanceof CheckpointError) {
    if (err.file !== undefined) return err;
    return new CheckpointError(err.problem, { file, entry: err.entry ?? entry, cause: err.cause });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new CheckpointError(msg, { file, entry, cause: err });
}
