/** `vit-adapter eval-coco`: pycocotools' printed summary, `--json`, `--out`, and clear errors on bad input. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/bin.js');
const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, [BIN, 'eval-coco', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};
const skip = skipUnlessFixtures('coco/coco_small.expected.json');
const F = (n: string): string => fixturePath('coco', n);

test('eval-coco prints exactly pycocotools\' summary and a per-category table', { skip }, () => {
  const exp = JSON.parse(readFileSync(F('coco_small.expected.json'), 'utf8')) as Record<string, { summary: string; per_category_ap: { category_id: number }[] }>;
  const r = run(['--gt', F('coco_small.gt.json'), '--results', F('coco_small.segm.json'), '--iou-type', 'segm']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes(exp.segm!.summary), r.stdout);
  assert.match(r.stdout, /per-category AP/);
  for (const c of exp.segm!.per_category_ap) assert.match(r.stdout, new RegExp(`\\n\\s+${c.category_id}\\s+\\S+\\s+(\\d\\.\\d{3}|-)\\n`));
});

test('eval-coco --json: the 12 stats and per-category AP by name; --out writes the same atomically', { skip }, () => {
  const exp = JSON.parse(readFileSync(F('coco_edge.expected.json'), 'utf8')) as Record<string, { stats: number[]; per_category_ap: { category_id: number; ap: number }[] }>;
  const gt = JSON.parse(readFileSync(F('coco_edge.gt.json'), 'utf8')) as { categories: { id: number; name: string }[] };
  const dir = mkdtempSync(join(tmpdir(), 'eval-coco-'));
  try {
    const out = join(dir, 'sub', 'metrics.json');
    const r = run(['--gt', F('coco_edge.gt.json'), '--results', F('coco_edge.bbox.json'), '--iou-type', 'bbox', '--json', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { stats: number[]; per_category: Record<string, number>; dropped_detections: number };
    assert.deepEqual(j.stats, exp.bbox!.stats);
    for (const c of exp.bbox!.per_category_ap) assert.equal(j.per_category[gt.categories.find((k) => k.id === c.category_id)!.name], c.ap);
    assert.match(r.stderr, /detection\(s\) of categories not in .* were not evaluated/);
    const saved = JSON.parse(readFileSync(out, 'utf8')) as { stats: number[]; summary: string };
    assert.deepEqual(saved.stats, exp.bbox!.stats);
    assert.equal(saved.summary.split('\n').length, 13);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('eval-coco: clear errors for bad options and files; empty results evaluate to 0 with a note', () => {
  const dir = mkdtempSync(join(tmpdir(), 'eval-coco-'));
  try {
    const gt = join(dir, 'gt.json');
    writeFileSync(gt, JSON.stringify({
      images: [{ id: 1, width: 50, height: 40 }], categories: [{ id: 3, name: 'cat' }],
      annotations: [{ id: 1, image_id: 1, category_id: 3, bbox: [5, 5, 10, 10], area: 100, iscrowd: 0 }],
    }));
    const res = join(dir, 'res.json');
    writeFileSync(res, '[]');
    let r = run(['--gt', gt, '--results', res]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--iou-type must be bbox or segm \(required\)/);
    r = run(['--gt', join(dir, 'missing.json'), '--results', res, '--iou-type', 'bbox']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot read COCO annotation file .*missing\.json/);
    writeFileSync(join(dir, 'broken.json'), '{"images": []');
    r = run(['--gt', gt, '--results', join(dir, 'broken.json'), '--iou-type', 'bbox']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /results file .*broken\.json is not valid JSON/);
    writeFileSync(join(dir, 'other.json'), JSON.stringify([{ image_id: 2, category_id: 3, bbox: [0, 0, 1, 1], score: 1 }]));
    r = run(['--gt', gt, '--results', join(dir, 'other.json'), '--iou-type', 'bbox']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /results\[0\]: image_id 2 is not an image of the ground truth/);
    r = run(['--gt', gt, '--results', res, '--iou-type', 'bbox', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /holds no detections/);
    assert.deepEqual((JSON.parse(r.stdout) as { stats: number[] }).stats, [0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
