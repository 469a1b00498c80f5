/**
 * The one path by which CLI commands write to stdout and stderr, and the guard that makes a closed pipe harmless.
 *
 * When the reader of a pipe goes away early (`vit-adapter configs | head -1`), the next write fails with EPIPE,
 * which Node reports as an unhandled `'error'` event (a stack trace and exit status 1). Like other command-line
 * tools we then stop quietly with status 0: nobody is left to read the rest. A closed stderr only silences
 * warnings and the progress bar; the command goes on.
 */

let installed = false;
let stderrClosed = false;

const isPipeGone = (e: NodeJS.ErrnoException): boolean => e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED';

/**
 * Installs the closed-pipe guard on `process.stdout` and `process.stderr` (idempotent). Every write of the
 * process, including the progress bar's, is covered, because the guard listens on the streams themselves.
 */
export function installPipeGuard(): void {
  if (installed) return;
  installed = true;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (isPipeGone(e)) process.exit(0);
    throw e;
  });
  process.stderr.on('error', (e: NodeJS.ErrnoException) => {
    if (isPipeGone(e)) {
      stderrClosed = true;
      return;
    }
    throw e;
  });
}

/** Writes one line to stdout (nothing once stdout's reader has gone). */
export function print(s: string): void {
  if (process.stdout.destroyed) return;
  process.stdout.write(`${s}\n`);
}

/** Writes one line to stderr (warnings, notes; nothing once stderr's reader has gone). */
export function warn(s: string): void {
  if (stderrClosed || process.stderr.destroyed) return;
  process.stderr.write(`${s}\n`);
}
