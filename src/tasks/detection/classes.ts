/**
 * Class lists of the detection task: the 80 COCO object categories in mmdetection's `CocoDataset.CLASSES` order
 * (model label i is `COCO_CLASSES[i]`) with their COCO category ids, and the object classes of the synthetic scenes.
 */
import { type Palette, generatePalette } from '../segmentation/classes.js';
import { SYNTHETIC_CLASSES } from '../segmentation/synthetic.js';

/** The 80 COCO object categories, in the order of the model's labels (mmdetection `CocoDataset.CLASSES`). */
export const COCO_CLASSES: readonly string[] = Object.freeze([
  'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
  'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
  'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
  'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
  'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
  'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
  'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
  'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
  'hair drier', 'toothbrush',
]);

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

/**
 * The COCO category id of each entry of {@link COCO_CLASSES} (ids 1..90 with the gaps of the 2017 annotations).
 * mmdetection maps label i to the i-th category id of the annotation file, which for COCO is this list.
 */
export const COCO_CATEGORY_IDS: readonly number[] = Object.freeze([
  ...range(1, 11), ...range(13, 25), 27, 28, ...range(31, 44), ...range(46, 65), 67, 70, ...range(72, 82), ...range(84, 90),
]);

/** The object ("thing") classes of the synthetic scenes (`generateScene` class ids 4..8), in label order. */
export const SYNTHETIC_THING_CLASSES: readonly string[] = Object.freeze(SYNTHETIC_CLASSES.slice(4));

/** Scene class id of synthetic label 0 (the first thing class); COCO category id = label + 1. */
export const SYNTHETIC_FIRST_THING_ID = 4;

/** Colours for drawing `n` classes (mmseg's seeded palette: the same colour for the same label every run). */
export function detectionPalette(n: number): Palette {
  return generatePalette(n);
}
