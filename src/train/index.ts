/**
 * The training layer: parameter groups (the authors' layer-wise lr decay), AdamW, gradient clipping, lr schedules
 * and mixed precision. Used by `tasks/segmentation`'s trainer; imports only engine, io, nn and models.
 */
export * from './param-groups.js';
export * from './optim.js';
export * from './clip.js';
export * from './schedule.js';
export { pyPow } from './pow.js';
export * from './amp.js';
export * from './build.js';
export * from './ddp.js';
