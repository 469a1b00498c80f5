import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ZipReader } from '../../src/io/zip.js';
import { buildZip, tempDir, thrown } from './helpers.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const big = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) % 13);

function archive(zip64 = false): Uint8Array {
  return buildZip([
    { name: 'dir/stored.txt', data: enc('hello stored') },
    { name: 'dir/deflated.bin', data: big, deflate: true },
    { name: 'dir/padded', data: enc('0123456789'), localPad: 37 },
    { name: 'empty', data: new Uint8Array(0) },
  ], { zip64, comment: 'a comment' });
}

for (const zip64 of [false, true]) {
  test(`zip reader: stored, deflated, padded local header${zip64 ? ' (zip64)' : ''}`, () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'a.zip');
      writeFileSync(path, archive(zip64));
      const z = ZipReader.open(path);
      try {
        assert.deepEqual(z.entries.map((e) => e.name), ['dir/stored.txt', 'dir/deflated.bin', 'dir/padded', 'empty']);
        assert.equal(new TextDecoder().decode(z.read('dir/stored.txt')), 'hello stored');
        const d = z.read('dir/deflated.bin');
        assert.deepEqual(d, big);
        assert.equal(Object.getPrototypeOf(d), Uint8Array.prototype);
        assert.equal(z.get('dir/deflated.bin')!.method, 8);
        assert.ok(z.get('dir/deflated.bin')!.compressedSize < big.length);
        assert.equal(new TextDecoder().decode(z.read('dir/padded')), '0123456789');
        assert.equal(new TextDecoder().decode(z.readRange('dir/padded', 3, 4)), '3456');
        assert.deepEqual(z.readRange('dir/deflated.bin', 50_000, 10), big.subarray(50_000, 50_010));
        assert.deepEqual(z.readPrefix('dir/deflated.bin', 100), big.subarray(0, 100));
        assert.equal(z.read('empty').length, 0);
        assert.match(thrown(() => z.read('nope')).message, /a\.zip: entry 'nope': no such entry/);
        assert.match(thrown(() => z.readRange('dir/padded', 8, 4)).message, /outside the entry/);
      } finally {
        z.close();
      }
    } finally {
      cleanup();
    }
  });
}

test('zip reader refuses truncated and corrupt archives', () => {
  const full = archive();
  const cut = full.subarray(0, Math.floor(full.length * 0.6));
  assert.match(thrown(() => ZipReader.fromBuffer(cut, 'cut.zip')).message,
    /^cut\.zip: end of central directory record not found: not a zip archive, or the archive is truncated/);
  assert.match(thrown(() => ZipReader.fromBuffer(new Uint8Array(10), 'tiny.zip')).message, /too short for a zip archive/);

  // data that runs past the end: keep the directory but drop bytes in the middle
  const z = ZipReader.fromBuffer(full, 'ok.zip');
  const e = z.get('dir/deflated.bin')!;
  const dataAt = z.dataOffset(e);
  const corrupt = new Uint8Array(full);
  corrupt[dataAt + 10] = (corrupt[dataAt + 10]! + 1) & 0xff;
  const zc = ZipReader.fromBuffer(corrupt, 'bad.zip');
  assert.match(thrown(() => zc.read('dir/deflated.bin')).message, /bad\.zip: entry 'dir\/deflated\.bin': (CRC-32 mismatch|corrupt deflate data|inflated to)/);

  const stored = z.get('dir/stored.txt')!;
  const c2 = new Uint8Array(full);
  c2[z.dataOffset(stored)] ^= 0x20;
  assert.match(thrown(() => ZipReader.fromBuffer(c2, 'crc.zip').read('dir/stored.txt')).message, /CRC-32 mismatch/);

  // central directory pointing past the end of the file
  const shifted = new Uint8Array(full);
  const dv = new DataView(shifted.buffer);
  const eocd = shifted.length - 22 - 'a comment'.length;
  dv.setUint32(eocd + 16, shifted.length + 100, true);
  assert.match(thrown(() => ZipReader.fromBuffer(shifted, 'cd.zip')).message, /central directory .* beyond the end of the file/);
});
