/** A small terminal progress bar (stderr), silent when stderr is not a TTY unless forced. */

/** Options of {@link ProgressBar}. */
export interface ProgressOptions { label?: string; width?: number; enabled?: boolean }

/** Progress over a known number of steps, with rate and ETA. */
export class ProgressBar {
  private done = 0;
  private readonly start = performance.now();
  private readonly enabled: boolean;
  private lastDraw = 0;
  constructor(readonly total: number, private readonly o: ProgressOptions = {}) {
    this.enabled = o.enabled ?? Boolean(process.stderr.isTTY);
  }
  /** Advances by n steps, with an optional note (e.g. the current file). */
  tick(n = 1, note = ''): void {
    this.done = Math.min(this.total, this.done + n);
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.lastDraw < 80 && this.done < this.total) return;
    this.lastDraw = now;
    const w = this.o.width ?? 28;
    const frac = this.total ? this.done / this.total : 1;
    const filled = Math.round(frac * w);
    const secs = (now - this.start) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const eta = rate > 0 ? (this.total - this.done) / rate : 0;
    const line = `${this.o.label ?? ''} [${'#'.repeat(filled)}${'.'.repeat(w - filled)}] ${this.done}/${this.total} ` +
      `${rate.toFixed(2)}/s eta ${eta.toFixed(0)}s ${note}`;
    process.stderr.write(`\r${line.slice(0, (process.stderr.columns ?? 120) - 1).padEnd(Math.min(119, (process.stderr.columns ?? 120) - 1))}`);
  }
  /** Finishes the bar (newline). */
  finish(): void {
    if (this.enabled) process.stderr.write('\n');
  }
}
