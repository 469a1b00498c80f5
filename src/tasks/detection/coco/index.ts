/** COCO: the RLE mask API, annotation / results files, and COCOeval (bbox, segm) with pycocotools' semantics. */
export * from './rle.js';
export * from './dataset.js';
export * from './eval.js';
