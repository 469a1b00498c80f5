/** Detection operators: RoIAlign and NMS (native kernels with composition / scalar references). */
export * from './roi-align.js';
export * from './nms.js';
