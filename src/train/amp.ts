/**
 * Mixed-precision training helpers. bf16: run the forward pass (and the loss) inside `autocast('bfloat16', device,
 * ...)` from `src/engine`; no loss scaling is needed. fp16: the same with 'float16' on CUDA, plus a
 * {@link GradScaler} (torch.cuda.amp.GradScaler semantics) so small gradients do not flush to zero:
 *
 * ```ts
 * const scaler = new GradScaler({ initScale: 512 });      // the authors' config says init_scale=512; torch's default 2^16
 * const out = autocast('float16', 'cuda', () => model.forwardTrain(img, label));
 * scaler.scale(out.loss).backward();                      // backward outside the autocast region
 * scaler.unscale(opt);                                    // only needed before clipping (or logging grad norms)
 * if (maxNorm) clipGradNorm(opt.params(), maxNorm);       // clip the true (unscaled) gradients
 * const stepped = scaler.step(opt);                       // skipped when a gradient is inf/NaN
 * scaler.update();                                        // backoff after an overflow, growth after N clean steps
 * opt.zeroGrad();
 * ```
 * With gradient accumulation, scale every micro-batch loss and call unscale/step/update once per iteration.
 */
import { type Tensor, noGrad, op, scalarTensor, scope, zeros } from '../engine/index.js';
import * as fe from './foreach.js';

/** What the scaler needs from an optimizer ({@link AdamW} has it). */
export interface ScalableOptimizer {
  params(): Tensor[];
  step(): void;
}

/** Options of {@link GradScaler} (torch's names and defaults). */
export interface GradScalerOptions {
  /** Initial scale (default 2^16; the ViT-Adapter configs' fp16 entry says 512). */
  initScale?: number;
  /** Factor after `growthInterval` steps without inf/NaN (default 2). */
  growthFactor?: number;
  /** Factor after a step with inf/NaN (default 0.5). */
  backoffFactor?: number;
  /** Clean steps before growing (default 2000). */
  growthInterval?: number;
  /** When false every method is a pass-through (default true). */
  enabled?: boolean;
}

/** {@link GradScaler.stateDict}: torch's keys. */
export interface GradScalerState {
  scale: number;
  growth_factor: number;
  backoff_factor: number;
  growth_interval: number;
  _growth_tracker: number;
}

type OptState = 'ready' | 'unscaled' | 'stepped';

/**
 * Dynamic loss scaling for float16 training, as torch.cuda.amp.GradScaler: the loss is multiplied by `scale` before
 * backward; `unscale` divides the gradients by it (multiplying by the float32 reciprocal) and records whether any is
 * inf/NaN; `step` runs the optimizer only if none was; `update` multiplies the scale by `backoffFactor` after an
 * overflow, or by `growthFactor` after `growthInterval` consecutive clean steps. The scale is a float32 value.
 */
export class GradScaler {
  readonly enabled: boolean;
  private scaleValue: number;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  private growthTracker = 0;
  private readonly perOptimizer = new Map<ScalableOptimizer, { state: OptState; foundInf: boolean }>();

  constructor(o: GradScalerOptions = {}) {
    this.enabled = o.enabled ?? true;
    const num = (name: string, v: number, ok: (x: number) => boolean): number => {
      if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new Error(`GradScaler: ${name} out of range: ${JSON.stringify(v)}`);
      return v;
    };
    this.scaleValue = Math.fround(num('initScale', o.initScale ?? 65536, (x) => x > 0));
    this.growthFactor = num('growthFactor', o.growthFactor ?? 2, (x) => x > 1);
    this.backoffFactor = num('backoffFactor', o.backoffFactor ?? 0.5, (x) => x > 0 && x < 1);
    this.growthInterval = num('growthInterval', o.growthInterval ?? 2000, (x) => Number.isInteger(x) && x > 0);
  }

  /** The current scale (1 when disabled). */
  getScale(): number {
    return this.enabled ? this.scaleValue : 1;
  }

  /** Consecutive clean steps since the last growth or backoff. */
  getGrowthTracker(): number {
    return this.growthTracker;
  }

  /** `loss * scale` (the loss itself when disabled). */
  scale(loss: Tensor): Tensor {
    if (!this.enabled) return loss;
    return loss.mul(this.scaleValue);
  }

  private entry(opt: ScalableOptimizer): { state: OptState; foundInf: boolean } {
    let e = this.perOptimizer.get(opt);
    if (!e) this.perOptimizer.set(opt, (e = { state: 'ready', foundInf: false }));
    return e;
  }

  /**
   * Divides the optimizer's gradients by the scale in place and checks them for inf/NaN. Call it at most once per
   * optimizer between updates (before clipping); `step` calls it when it was not. Returns whether an inf/NaN was found.
   * float16 gradients are refused (parameters must stay float32 under autocast), as torch does.
   */
  unscale(opt: ScalableOptimizer): boolean {
    if (!this.enabled) return false;
    const e = this.entry(opt);
    if (e.state === 'unscaled') throw new Error('GradScaler.unscale() has already been called on this optimizer since the last update()');
    if (e.state === 'stepped') throw new Error('GradScaler.unscale() is being called after step()');
    // torch: inv_scale = scale.double().reciprocal().float()
    const inv = Math.fround(1 / this.scaleValue);
    e.foundInf = scope(() => noGrad(() => {
      const grads = opt.params().map((p) => p.grad).filter((g): g is Tensor => g !== null);
      if (grads.some((g) => g.dtype === 'float16')) throw new Error('GradScaler: attempting to unscale float16 gradients (keep the parameters float32)');
      const byDevice = new Map<string, Tensor[]>();
      for (const g of grads) {
        const k = `${g.device}|${g.dtype}`;
        const list = byDevice.get(k);
        if (list) list.push(g);
        else byDevice.set(k, [g]);
      }
      let found = false;
      for (const gs of byDevice.values()) {
        const device = gs[0]!.device;
        const fused = op('aten::_amp_foreach_non_finite_check_and_unscale_');
        if (device.startsWith('cuda') && fused.available()) {
          const flag = zeros([1], { device });
          const invT = scalarTensor(inv, { device }).reshape(1);
          fused.call([gs.map((g) => g.handle), flag.handle, invT.handle]);
          found = flag.item() !== 0 || found;
        } else {
          for (const g of gs) if (!op('aten::isfinite').t([g.handle]).all()) found = true;
          fe.mulScalar_(gs, inv, { foreach: true });
        }
      }
      return found;
    }));
    e.state = 'unscaled';
    return e.foundInf;
  }

  /** Unscales (if not done) and runs `opt.step()` unless an inf/NaN gradient was found. Returns whether it stepped. */
  step(opt: ScalableOptimizer): boolean {
    if (!this.enabled) { opt.step(); return true; }
    const e = this.entry(opt);
    if (e.state === 'stepped') throw new Error('GradScaler.step() has already been called since the last update()');
    if (e.state === 'ready') this.unscale(opt);
    e.state = 'stepped';
    if (e.foundInf) return false;
    opt.step();
    return true;
  }

  /**
   * Adjusts the scale after the iteration's step(s): backoff if any optimizer saw inf/NaN, else count a clean step
   * and grow after `growthInterval` of them (the new scale kept only if finite). `newScale` sets it directly.
   */
  update(newScale?: number): void {
    if (!this.enabled) return;
    if (newScale !== undefined) {
      if (!(newScale > 0) || !Number.isFinite(newScale)) throw new Error(`GradScaler.update: newScale must be a positive finite number, got ${newScale}`);
      this.scaleValue = Math.fround(newScale);
    } else {
      const entries = [...this.perOptimizer.values()];
      if (entries.length === 0 || entries.every((x) => x.state === 'ready')) {
        throw new Error('GradScaler.update(): no inf checks were recorded; call step() (or unscale()) first');
      }
      if (entries.some((x) => x.foundInf)) {
        this.scaleValue = Math.fround(this.scaleValue * Math.fround(this.backoffFactor));
        this.growthTracker = 0;
      } else {
        const successful = this.growthTracker + 1;
        if (successful === this.growthInterval) {
          const grown = Math.fround(this.scaleValue * Math.fround(this.growthFactor));
          if (Number.isFinite(grown)) this.scaleValue = grown;
          this.growthTracker = 0;
        } else {
          this.growthTracker = successful;
        }
      }
    }
    this.perOptimizer.clear();
  }

  /** torch's state dict keys (JSON-able). */
  stateDict(): GradScalerState {
    return { scale: this.scaleValue, growth_factor: this.growthFactor, backoff_factor: this.backoffFactor, growth_interval: this.growthInterval, _growth_tracker: this.growthTracker };
  }

  /** Restores {@link stateDict} (scale and growth tracker; the factors must match this scaler's). */
  loadStateDict(s: GradScalerState): void {
    if (!s || typeof s.scale !== 'number' || !(s.scale > 0) || !Number.isInteger(s._growth_tracker) || s._growth_tracker < 0) {
      throw new Error(`GradScaler.loadStateDict: expected {scale > 0, _growth_tracker >= 0, ...}, got ${JSON.stringify(s)}`);
    }
    const diffs: string[] = [];
    if (s.growth_factor !== this.growthFactor) diffs.push(`growth_factor ${s.growth_factor} vs ${this.growthFactor}`);
    if (s.backoff_factor !== this.backoffFactor) diffs.push(`backoff_factor ${s.backoff_factor} vs ${this.backoffFactor}`);
    if (s.growth_interval !== this.growthInterval) diffs.push(`growth_interval ${s.growth_interval} vs ${this.growthInterval}`);
    if (diffs.length) throw new Error(`GradScaler.loadStateDict: the saved scaler differs (saved vs now): ${diffs.join(', ')}`);
    this.scaleValue = Math.fround(s.scale);
    this.growthTracker = s._growth_tracker;
    this.perOptimizer.clear();
  }
}
