/**
 * AdamW with PyTorch semantics (torch 1.13 `torch.optim.AdamW`, amsgrad off, not maximising), over the parameter
 * groups of `param-groups.ts`. Per step t of a parameter p with gradient g, in p's dtype:
 *
 * ```
 * p = p * (1 - lr * weight_decay)                        (decoupled weight decay, lr = the group's current lr)
 * m = m * beta1 + g * (1 - beta1)
 * v = v * beta2 + g * g * (1 - beta2)
 * p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * ```
 *
 * with the same operators and scalar arithmetic as torch's (so float64 runs agree with torch's to the last bits).
 * The element-wise work runs as libtorch multi-tensor operators (`aten::_foreach_*`: one call per group and step
 * for all its parameters) when they exist, else one operator per parameter; on CUDA with libtorch 2.x the fused
 * `aten::_fused_adamw_` kernel is used when present (its rounding differs slightly from the formula above).
 *
 * Typical loop (the caller owns the model and the schedule):
 * ```ts
 * const groups = buildParamGroups(model, { lr: 1.2e-4, weightDecay: 0.01, numLayers: 12, layerDecayRate: 0.95 });
 * const opt = new AdamW(groups);
 * const sched = new LrScheduler(opt, { policy: 'poly', power: 1, min_lr: 0, by_epoch: false, warmup: 'linear',
 *   warmup_iters: 1500, warmup_ratio: 1e-6 }, { maxIters: 160000 });
 * for (let it = start; it < maxIters; it++) {
 *   sched.step(it);                          // mmcv before_train_iter: sets every group's lr
 *   for (let k = 0; k < accum; k++) {        // gradient accumulation: libtorch adds the grads of each backward
 *     scope(() => model.forwardTrain(img[k], label[k]).loss.div(accum).backward());
 *   }
 *   if (maxNorm) clipGradNorm(opt.params(), maxNorm);   // optional; the ADE20K recipe does not clip
 *   opt.step();
 *   opt.zeroGrad();                          // grads set to none (torch set_to_none)
 * }
 * ```
 * Gradient accumulation needs nothing from the optimizer: divide each micro-batch loss by the number of
 * micro-batches (as mmcv's `GradientCumulativeOptimizerHook`), call `step()` and `zeroGrad()` once per iteration.
 */
import { type Tensor, noGrad, op, scope, zerosLike, scalarTensor } from '../engine/index.js';
import * as fe from './foreach.js';
import type { ParamGroupSpec } from './param-groups.js';
import { pyPow } from './pow.js';

/** A parameter group of {@link AdamW}: the constructor's group plus AdamW hyper-parameters. lr and weight decay may be changed between steps. */
export interface AdamWParamGroup extends ParamGroupSpec {
  /** The lr the group started with (mmcv's `initial_lr`): the base of every lr schedule. */
  initialLr: number;
  betas: [number, number];
  eps: number;
}

/** Options of {@link AdamW}. */
export interface AdamWOptions {
  /** (beta1, beta2), default (0.9, 0.999). */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Use `aten::_foreach_*` multi-tensor operators when available (default true). False: one operator per parameter. */
  foreach?: boolean;
  /** On CUDA, use `aten::_fused_adamw_` when the libtorch has it (default true). */
  fused?: boolean;
}

/** The optimizer state of one parameter (torch's `state[p]`). */
export interface AdamWParamState {
  /** Steps taken by this parameter. */
  step: number;
  /** First moment (`exp_avg`), same dtype/device/shape as the parameter. */
  expAvg: Tensor;
  /** Second moment (`exp_avg_sq`). */
  expAvgSq: Tensor;
  /** The step as a float32 0-d tensor on the parameter's device (fused CUDA path only). */
  stepTensor?: Tensor;
}

/** A group of {@link AdamWStateDict} in torch's layout (`optimizer.state_dict()['param_groups'][i]`, plus mmcv's keys). */
export interface TorchParamGroup {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  amsgrad: false;
  maximize: false;
  foreach: boolean | null;
  capturable: false;
  /** State indices of the group's parameters. */
  params: number[];
  initial_lr: number;
  lr_scale: number;
  group_name: string;
  layer_id: number | null;
  param_names: string[];
}

/** torch's `optimizer.state_dict()`: per state index `step`, `exp_avg`, `exp_avg_sq`, and the groups. */
export interface AdamWStateDict {
  state: Map<number, { step: number; exp_avg: Tensor; exp_avg_sq: Tensor }>;
  param_groups: TorchParamGroup[];
}

/** JSON-able part of a flattened optimizer state (see {@link flattenOptimizerState}). */
export interface OptimizerStateMeta {
  type: 'AdamW';
  param_groups: TorchParamGroup[];
  /** `step` of every parameter that has state, by state index. */
  state_steps: Record<string, number>;
}

/** A resume file's optimizer state does not fit the model's parameter groups; the message lists every difference. */
export class OptimizerStateError extends Error {
  constructor(readonly problems: string[]) {
    super(`optimizer state does not match the model's parameter groups:\n  ${problems.join('\n  ')}`);
    this.name = 'OptimizerStateError';
  }
}

function checkBetas(b: unknown): [number, number] {
  if (!Array.isArray(b) || b.length !== 2 || b.some((x) => typeof x !== 'number' || !(x >= 0 && x < 1))) {
    throw new Error(`AdamW: betas must be two numbers in [0, 1), got ${JSON.stringify(b)}`);
  }
  return [b[0], b[1]];
}

/** AdamW (see the module comment). Parameters without a gradient at `step()` are skipped, as in torch. */
export class AdamW {
  /** The groups, in optimizer order (lr / weightDecay mutable). */
  readonly paramGroups: AdamWParamGroup[];
  /** Per-parameter state by state index (created at a parameter's first step). */
  readonly state = new Map<number, AdamWParamState>();
  /** Whether multi-tensor operators are used. */
  readonly foreach: boolean;
  /** Whether the fused CUDA kernel may be used. */
  readonly fused: boolean;
  private readonly mode: fe.ForeachMode;

  /** @param groups from {@link buildParamGroups} / {@link buildPlainParamGroups} (or built by hand). */
  constructor(groups: readonly ParamGroupSpec[], o: AdamWOptions = {}) {
    const betas = checkBetas(o.betas ?? [0.9, 0.999]);
    const eps = o.eps ?? 1e-8;
    if (typeof eps !== 'number' || !(eps >= 0)) throw new Error(`AdamW: eps must be a non-negative number, got ${JSON.stringify(eps)}`);
    if (groups.length === 0) throw new Error('AdamW: no parameter groups');
    this.foreach = o.foreach ?? true;
    this.fused = o.fused ?? true;
    this.mode = { foreach: this.foreach };
    const seen = new Set<Tensor>();
    let next = 0;
    this.paramGroups = groups.map((g) => {
      if (g.params.length !== g.paramNames.length) throw new Error(`AdamW: group ${g.groupName} has ${g.params.length} parameters but ${g.paramNames.length} names`);
      for (const p of g.params) {
        if (seen.has(p)) throw new Error(`AdamW: a parameter appears in more than one group (${g.groupName})`);
        seen.add(p);
      }
      if (!(g.lr >= 0) || !(g.weightDecay >= 0)) throw new Error(`AdamW: group ${g.groupName}: lr and weight decay must be >= 0`);
      const out: AdamWParamGroup = { ...g, params: [...g.params], paramNames: [...g.paramNames], stateIndexStart: next, initialLr: g.lr, betas: [...betas], eps };
      next += g.params.length;
      return out;
    });
  }

  /** Every parameter, in state-index order. */
  params(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /** The current lr of every group. */
  lrs(): number[] {
    return this.paramGroups.map((g) => g.lr);
  }

  /** Clears every parameter's gradient (sets it to none, as torch's `zero_grad(set_to_none=True)`). */
  zeroGrad(): void {
    for (const g of this.paramGroups) for (const p of g.params) p.zeroGrad();
  }

  /** One AdamW step over every parameter that has a gradient. */
  step(): void {
    scope(() => noGrad(() => {
      for (const g of this.paramGroups) this.stepGroup(g);
    }));
  }

  private stepGroup(g: AdamWParamGroup): void {
    // Partition by (step after increment, device, dtype): the foreach operators take one scalar per call.
    const parts = new Map<string, { t: number; params: Tensor[]; grads: Tensor[]; states: AdamWParamState[] }>();
    g.params.forEach((p, i) => {
      const grad = p.grad;
      if (grad === null) return;
      const index = g.stateIndexStart + i;
      let s = this.state.get(index);
      if (!s) {
        s = { step: 0, expAvg: zerosLike(p).keep(), expAvgSq: zerosLike(p).keep() };
        this.state.set(index, s);
      }
      if (grad.dtype !== p.dtype) throw new Error(`AdamW: ${g.paramNames[i]}: gradient dtype ${grad.dtype} differs from the parameter's ${p.dtype}`);
      s.step += 1;
      const key = `${s.step}|${p.device}|${p.dtype}`;
      let part = parts.get(key);
      if (!part) parts.set(key, (part = { t: s.step, params: [], grads: [], states: [] }));
      part.params.push(p);
      part.grads.push(grad);
      part.states.push(s);
    });
    for (const part of parts.values()) {
      const device = part.params[0]!.device;
      if (this.fused && device.startsWith('cuda') && op('aten::_fused_adamw_').available()) this.fusedStep(g, part.params, part.grads, part.states);
      else this.formulaStep(g, part.t, part.params, part.grads, part.states);
    }
  }

  private formulaStep(g: AdamWParamGroup, t: number, params: Tensor[], grads: Tensor[], states: AdamWParamState[]): void {
    const [beta1, beta2] = g.betas;
    const lr = g.lr;
    const m = states.map((s) => s.expAvg);
    const v = states.map((s) => s.expAvgSq);
    // p *= 1 - lr*wd (skipped when the factor is exactly 1: multiplying by 1 changes nothing)
    const decay = 1 - lr * g.weightDecay;
    if (decay !== 1) fe.mulScalar_(params, decay, this.mode);
    fe.mulScalar_(m, beta1, this.mode);
    fe.addList_(m, grads, 1 - beta1, this.mode);
    fe.mulScalar_(v, beta2, this.mode);
    fe.addcmul_(v, grads, grads, 1 - beta2, this.mode);
    const bc1 = 1 - pyPow(beta1, t);
    const bc2 = 1 - pyPow(beta2, t);
    const stepSize = lr / bc1;
    const bc2Sqrt = Math.sqrt(bc2);
    const denom = fe.sqrt(v, this.mode);
    fe.divScalar_(denom, bc2Sqrt, this.mode);
    fe.addScalar_(denom, g.eps, this.mode);
    fe.addcdiv_(params, m, denom, -stepSize, this.mode);
  }

  private fusedStep(g: AdamWParamGroup, params: Tensor[], grads: Tensor[], states: AdamWParamState[]): void {
    for (const s of states) {
      if (!s.stepTensor) s.stepTensor = scalarTensor(s.step - 1, { dtype: 'float32', device: s.expAvg.device }).keep();
    }
    const steps = states.map((s) => s.stepTensor!);
    fe.addScalar_(steps, 1, { foreach: true });
    op('aten::_fused_adamw_').call([
      params.map((t) => t.handle), grads.map((t) => t.handle), states.map((s) => s.expAvg.handle),
      states.map((s) => s.expAvgSq.handle), [], steps.map((t) => t.handle),
      g.lr, g.betas[0], g.betas[1], g.weightDecay, g.eps, false, false, null, null,
    ]);
  }

  /** torch's `optimizer.state_dict()` layout; the tensors are the live state (not copies). */
  stateDict(): AdamWStateDict {
    const state = new Map<number, { step: number; exp_avg: Tensor; exp_avg_sq: Tensor }>();
    for (const [i, s] of [...this.state].sort((a, b) => a[0] - b[0])) state.set(i, { step: s.step, exp_avg: s.expAvg, exp_avg_sq: s.expAvgSq });
    return {
      state,
      param_groups: this.paramGroups.map((g) => ({
        lr: g.lr, betas: [...g.betas] as [number, number], eps: g.eps, weight_decay: g.weightDecay, amsgrad: false, maximize: false,
        foreach: this.foreach ? true : null, capturable: false,
        params: g.params.map((_, i) => g.stateIndexStart + i),
        initial_lr: g.initialLr, lr_scale: g.lrScale, group_name: g.groupName, layer_id: g.layerId, param_names: [...g.paramNames],
      })),
    };
  }

  /**
   * Restores a state dict saved by {@link stateDict} (or read back with {@link unflattenOptimizerState}): the
   * groups' lr, initial lr, weight decay, betas and eps, and every parameter's step and moments (copied, converted
   * to the parameter's dtype and device). Throws {@link OptimizerStateError} naming every difference when the
   * saved groups do not match this optimizer's (number, names, parameter names and counts, shapes).
   */
  loadStateDict(sd: AdamWStateDict): void {
    const problems: string[] = [];
    if (!sd || !Array.isArray(sd.param_groups) || !(sd.state instanceof Map)) throw new OptimizerStateError(['not an AdamW state dict (param_groups/state missing)']);
    const saved = sd.param_groups;
    if (saved.length !== this.paramGroups.length) {
      problems.push(`${saved.length} parameter groups saved, the model has ${this.paramGroups.length} ` +
        `(saved: ${saved.map((g) => g.group_name).join(', ')}; model: ${this.paramGroups.map((g) => g.groupName).join(', ')})`);
    }
    const n = Math.min(saved.length, this.paramGroups.length);
    for (let gi = 0; gi < n; gi++) {
      const s = saved[gi]!;
      const g = this.paramGroups[gi]!;
      if (s.group_name !== undefined && s.group_name !== g.groupName) problems.push(`group ${gi}: saved name ${s.group_name}, the model's is ${g.groupName}`);
      if (!Array.isArray(s.params) || s.params.length !== g.params.length) {
        problems.push(`group ${gi} (${g.groupName}): ${s.params?.length} parameters saved, the model has ${g.params.length}`);
        continue;
      }
      if (s.params.some((id, i) => id !== g.stateIndexStart + i)) problems.push(`group ${gi} (${g.groupName}): saved state indices ${s.params[0]}.. differ from ${g.stateIndexStart}..`);
      if (Array.isArray(s.param_names)) {
        const diff = s.param_names.findIndex((x, i) => x !== g.paramNames[i]);
        if (diff >= 0) problems.push(`group ${gi} (${g.groupName}): parameter ${diff} is ${s.param_names[diff]} in the file, ${g.paramNames[diff]} in the model`);
      }
      for (const k of ['lr', 'eps', 'weight_decay'] as const) {
        if (typeof s[k] !== 'number' || !Number.isFinite(s[k])) problems.push(`group ${gi} (${g.groupName}): ${k} is not a number`);
      }
    }
    const all = this.params();
    const names = this.paramGroups.flatMap((g) => g.paramNames);
    for (const [i, st] of sd.state) {
      const p = all[i];
      if (!p) { problems.push(`state for index ${i}, but the model has ${all.length} parameters`); continue; }
      for (const k of ['exp_avg', 'exp_avg_sq'] as const) {
        const t = st[k];
        if (!t) { problems.push(`state ${i} (${names[i]}): ${k} missing`); continue; }
        const a = t.shape;
        const b = p.shape;
        if (a.length !== b.length || a.some((x, j) => x !== b[j])) problems.push(`state ${i} (${names[i]}): ${k} has shape [${a.join(', ')}], the parameter [${b.join(', ')}]`);
      }
      if (!Number.isInteger(st.step) || st.step < 0) problems.push(`state ${i} (${names[i]}): step ${JSON.stringify(st.step)} is not a non-negative integer`);
    }
    if (problems.length) throw new OptimizerStateError(problems);
    noGrad(() => {
      saved.forEach((s, gi) => {
        const g = this.paramGroups[gi]!;
        g.lr = s.lr;
        g.initialLr = typeof s.initial_lr === 'number' ? s.initial_lr : s.lr;
        g.weightDecay = s.weight_decay;
        g.eps = s.eps;
        if (s.betas) g.betas = checkBetas(s.betas);
      });
      for (const s of this.state.values()) { s.expAvg.dispose(); s.expAvgSq.dispose(); s.stepTensor?.dispose(); }
      this.state.clear();
      for (const [i, st] of sd.state) {
        const p = all[i]!;
        const copy = (t: Tensor): Tensor => zerosLike(p).copy_(t).keep();
        this.state.set(i, { step: st.step, expAvg: copy(st.exp_avg), expAvgSq: copy(st.exp_avg_sq) });
      }
    });
  }

  /** Frees the optimizer state. */
  dispose(): void {
    for (const s of this.state.values()) { s.expAvg.dispose(); s.expAvgSq.dispose(); s.stepTensor?.dispose(); }
    this.state.clear();
  }
}

/**
 * Splits a state dict into tensors (`{prefix}state.{i}.exp_avg`, `{prefix}state.{i}.exp_avg_sq`; live references, not
 * copies) and JSON-able metadata (groups, steps), for a checkpoint file (safetensors + JSON metadata).
 */
export function flattenOptimizerState(sd: AdamWStateDict, prefix = ''): { tensors: Record<string, Tensor>; meta: OptimizerStateMeta } {
  const tensors: Record<string, Tensor> = {};
  const steps: Record<string, number> = {};
  for (const [i, s] of sd.state) {
    tensors[`${prefix}state.${i}.exp_avg`] = s.exp_avg;
    tensors[`${prefix}state.${i}.exp_avg_sq`] = s.exp_avg_sq;
    steps[String(i)] = s.step;
  }
  return { tensors, meta: { type: 'AdamW', param_groups: sd.param_groups.map((g) => structuredClone(g)), state_steps: steps } };
}

/**
 * The inverse of {@link flattenOptimizerState}: reads `{prefix}state.{i}.*` tensors (other keys are ignored) and the
 * metadata. Throws {@link OptimizerStateError} when tensors and metadata disagree (a moment without a step, or the
 * other way round, or a malformed key).
 */
export function unflattenOptimizerState(tensors: ReadonlyMap<string, Tensor> | Record<string, Tensor>, meta: OptimizerStateMeta, prefix = ''): AdamWStateDict {
  const problems: string[] = [];
  if (!meta || meta.type !== 'AdamW' || !Array.isArray(meta.param_groups)) {
    throw new OptimizerStateError([`metadata is not an AdamW optimizer state (type ${JSON.stringify(meta?.type)})`]);
  }
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const parts = new Map<number, { exp_avg?: Tensor; exp_avg_sq?: Tensor }>();
  for (const [k, t] of entries) {
    if (!k.startsWith(`${prefix}state.`)) continue;
    const m = /^state\.(\d+)\.(exp_avg|exp_avg_sq)$/.exec(k.slice(prefix.length));
    if (!m) { problems.push(`unexpected optimizer key ${k}`); continue; }
    const i = Number(m[1]);
    const e = parts.get(i) ?? {};
    e[m[2] as 'exp_avg' | 'exp_avg_sq'] = t;
    parts.set(i, e);
  }
  const state = new Map<number, { step: number; exp_avg: Tensor; exp_avg_sq: Tensor }>();
  const stepKeys = new Set(Object.keys(meta.state_steps ?? {}));
  for (const [i, e] of [...parts].sort((a, b) => a[0] - b[0])) {
    const step = meta.state_steps?.[String(i)];
    stepKeys.delete(String(i));
    if (!e.exp_avg || !e.exp_avg_sq) { problems.push(`state ${i}: ${e.exp_avg ? 'exp_avg_sq' : 'exp_avg'} missing`); continue; }
    if (typeof step !== 'number') { problems.push(`state ${i}: no step in the metadata`); continue; }
    state.set(i, { step, exp_avg: e.exp_avg, exp_avg_sq: e.exp_avg_sq });
  }
  for (const k of stepKeys) problems.push(`state ${k}: a step in the metadata but no exp_avg/exp_avg_sq tensors`);
  if (problems.length) throw new OptimizerStateError(problems);
  return { state, param_groups: meta.param_groups.map((g) => structuredClone(g)) };
}

