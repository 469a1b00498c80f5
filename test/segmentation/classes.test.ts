import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ADE20K_CLASSES,
  ADE20K_PALETTE,
  generatePalette,
  mmsegRandomPalette,
  validatePalette,
  vocPalette,
} from '../../src/tasks/segmentation/classes.js';

test('ADE20K: 150 class names in mmseg order', () => {
  assert.equal(ADE20K_CLASSES.length, 150);
  assert.deepEqual(ADE20K_CLASSES.slice(0, 5), ['wall', 'building', 'sky', 'floor', 'tree']);
  assert.equal(ADE20K_CLASSES[7], 'bed '); // mmseg's spelling, trailing space included
  assert.equal(ADE20K_CLASSES[12], 'person');
  assert.deepEqual(ADE20K_CLASSES.slice(-2), ['clock', 'flag']);
  assert.equal(new Set(ADE20K_CLASSES).size, 150);
});

test('ADE20K: 150 palette colours', () => {
  assert.equal(ADE20K_PALETTE.length, 150);
  validatePalette(ADE20K_PALETTE, 150);
  assert.deepEqual(ADE20K_PALETTE[0], [120, 120, 120]);
  assert.deepEqual(ADE20K_PALETTE[2], [6, 230, 230]);
  assert.deepEqual(ADE20K_PALETTE[149], [92, 0, 255]);
});

test('mmseg random palette reproduces np.random.seed(42); randint(0, 255, (n, 3))', () => {
  // Values printed by numpy 2.x's legacy RandomState for seed 42.
  assert.deepEqual(mmsegRandomPalette(3), [
    [102, 179, 92],
    [14, 106, 71],
    [188, 20, 102],
  ]);
  const p = generatePalette(40);
  assert.equal(p.length, 40);
  validatePalette(p);
  assert.ok(p.every((c) => c.every((v) => v <= 254)));
  assert.deepEqual(generatePalette(40), p); // deterministic
  assert.deepEqual(generatePalette(3), mmsegRandomPalette(3));
});

test('VOC colour map and palette validation', () => {
  assert.deepEqual(vocPalette(4), [
    [0, 0, 0],
    [128, 0, 0],
    [0, 128, 0],
    [128, 128, 0],
  ]);
  const all = vocPalette(256);
  assert.equal(new Set(all.map((c) => c.join(','))).size, 256);
  assert.throws(() => validatePalette([[0, 0, 0]], 2), /1 colours but 2 classes/);
  assert.throws(() => validatePalette([[0, 0, 256]]), /entry 0/);
});
