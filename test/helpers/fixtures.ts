/** Locating the repository and the shared fixtures folder (`<repo>/../shared`) from compiled or source tests. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | null = null;

/** The folder holding package.json, found by walking up from this module. */
export function repoRoot(): string {
  if (root !== null) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error(`repoRoot(): no package.json above ${import.meta.url}`);
    dir = up;
  }
}

/** `<repoRoot>/../shared`, or `$VIT_ADAPTER_SHARED` when set (a folder holding `fixtures/`, e.g. on a GPU machine). */
export function sharedDir(): string {
  const env = process.env.VIT_ADAPTER_SHARED;
  return env ? resolve(env) : resolve(repoRoot(), '..', 'shared');
}

/** Absolute path of a file or folder under `../shared/fixtures`. */
export function fixturePath(...parts: string[]): string {
  return join(sharedDir(), 'fixtures', ...parts);
}

/** Whether `../shared/fixtures/<sub>` exists (a folder or a file). */
export function fixturesAvailable(sub = ''): boolean {
  return existsSync(fixturePath(sub));
}

/** The `skip` option for node:test: false when the fixture exists, else a visible reason. */
export function skipUnlessFixtures(sub = ''): false | string {
  return fixturesAvailable(sub) ? false : `fixtures ../shared/fixtures${sub ? '/' + sub : ''} not found`;
}
