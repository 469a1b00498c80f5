/**
 * The authors' Mask2Former decode head for semantic segmentation: the deformable-attention pixel decoder, the
 * masked-attention transformer decoder, sine positional encodings, and semantic inference.
 */
export * from './positional-encoding.js';
export * from './transformer.js';
export * from './pixel-decoder.js';
export * from './mask2former-head.js';
