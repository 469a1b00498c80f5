import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CheckpointError } from '../../src/io/errors.js';
import { PickledTensor, PyGlobal, isAllowedGlobal, isTuple, unpickle } from '../../src/io/pickle.js';
import { PickleWriter, thrown } from './helpers.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

test('protocol 2: dicts, lists, tuples, ints, floats, memo', () => {
  const w = new PickleWriter().proto(2)
    .emptyDict().put(0)
    .mark()
    .str('ints').mark().int(0).int(255).int(256).int(65535).int(65536).int(-1).int(-2147483648)
    .long1(2n ** 53n + 1n).long1(-(2n ** 70n)).long1(12345n).list().put(1)
    .str('floats').emptyList().put(2).mark().binfloat(1.5).binfloat(-0.1).binfloat(Infinity).appends()
    .str('tuple').int(1).str('two').none().tuple3().put(3)
    .str('again').get(3)
    .str('nested').emptyList().put(4).get(1).append().emptyTuple().append()
    .str('flags').bool(true).bool(false).tuple2()
    .setitems()
    .stop();
  const v = unpickle(w.done()) as Record<string, unknown>;
  assert.deepEqual(Object.keys(v), ['ints', 'floats', 'tuple', 'again', 'nested', 'flags']);
  assert.deepEqual(v['ints'], [0, 255, 256, 65535, 65536, -1, -2147483648, 2n ** 53n + 1n, -(2n ** 70n), 12345]);
  assert.deepEqual(v['floats'], [1.5, -0.1, Infinity]);
  assert.deepEqual(v['tuple'], [1, 'two', null]);
  assert.ok(isTuple(v['tuple']));
  assert.ok(!isTuple(v['floats']));
  assert.equal(v['again'], v['tuple'], 'memo keeps identity');
  const nested = v['nested'] as unknown[];
  assert.equal(nested[0], v['ints'], 'shared list stays shared');
  assert.deepEqual(v['flags'], [true, false]);
});

test('protocol 2: OrderedDict via GLOBAL + REDUCE, __builtin__ set, _codecs bytes, BUILD ignored', () => {
  const w = new PickleWriter().proto(2)
    .global('collections', 'OrderedDict').put(0).emptyTuple().reduce().put(1)
    .mark().str('b').int(2).str('a').int(1).setitems()
    // OrderedDict state (e.g. _metadata) is accepted and ignored
    .emptyDict().str('_metadata').emptyDict().setitem().build()
    .str('set').global('__builtin__', 'set').emptyList().int(3).append().int(4).append().tuple1().reduce().setitem()
    .str('bytes').global('_codecs', 'encode').str('\u00ff\u0001A').str('latin1').tuple2().reduce().setitem()
    .str('empty').global('__builtin__', 'bytes').emptyTuple().reduce().setitem()
    .stop();
  const v = unpickle(w.done()) as Record<string, unknown>;
  assert.deepEqual(Object.keys(v), ['b', 'a', 'set', 'bytes', 'empty']);
  assert.deepEqual(v['set'], new Set([3, 4]));
  assert.deepEqual(v['bytes'], Uint8Array.of(0xff, 1, 0x41));
  assert.deepEqual(v['empty'], new Uint8Array(0));
});

test('protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, sets, BINBYTES8', () => {
  const body = new PickleWriter()
    .emptyDict().memoize()
    .mark()
    .shortStr('od').stackGlobal('collections', 'OrderedDict').memoize().emptyTuple().reduce().memoize()
    .shortStr('x').int(1).setitem()
    .shortStr('set').emptySet().memoize().mark().int(1).int(2).additems()
    .shortStr('fs').mark().shortStr('q').frozenset()
    .shortStr('bytes').binbytes8([1, 2, 3])
    .shortStr('long').str8('é'.repeat(3))
    .shortStr('ref').get(0)
    .setitems()
    .stop()
    .done();
  const w = new PickleWriter().proto(4).frame(body.length).raw(...body);
  const v = unpickle(w.done()) as Record<string, unknown>;
  assert.deepEqual(v['od'], { x: 1 });
  assert.deepEqual(v['set'], new Set([1, 2]));
  assert.deepEqual(v['fs'], new Set(['q']));
  assert.deepEqual(v['bytes'], Uint8Array.of(1, 2, 3));
  assert.equal(v['long'], 'ééé');
  assert.equal(v['ref'], v, 'self reference preserved');
});

test('protocol 5: BYTEARRAY8 and a pickle written by CPython', () => {
  const w = new PickleWriter().proto(5).bytearray8([9, 8]).stop();
  assert.deepEqual(unpickle(w.done()), Uint8Array.of(9, 8));
  // pickle.dumps({'xs': [1, 2.5, 'é'], 't': (1, (2,), None), 'm': [shared, shared], 'ba': bytearray(b'ab'),
  //               'b': b'cd', 'big': 2**64, 'fs': frozenset([3]), 'od': OrderedDict(k=1)}, protocol=5)
  const p5 = hex('8005959e000000000000007d94288c027873945d94284b014740040000000000008c02c3a994658c0174944b014b0285944e87948c016d945d94285d948c017394616809658c026261949602000000000000006162948c01629443026364948c03626967948a090000000000000000018c02667394284b0391948c026f64948c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c016b944b0173752e');
  // the same object, protocol 0 (text opcodes)
  const p0 = hex('286470300a5678730a70310a286c70320a49310a6146322e350a6156e90a70330a617356740a70340a2849310a2849320a7470350a4e7470360a73566d0a70370a286c70380a286c70390a56730a7031300a616167390a61735662610a7031310a635f5f6275696c74696e5f5f0a6279746561727261790a7031320a28635f636f646563730a656e636f64650a7031330a285661620a7031340a566c6174696e310a7031350a747031360a527031370a747031380a527031390a7356620a7032300a6731330a285663640a7032310a6731350a747032320a527032330a73566269670a7032340a4c31383434363734343037333730393535313631364c0a735666730a7032350a635f5f6275696c74696e5f5f0a66726f7a656e7365740a7032360a28286c7032370a49330a61747032380a527032390a73566f640a7033300a63636f6c6c656374696f6e730a4f726465726564446963740a7033310a2874527033320a566b0a7033330a49310a73732e');
  for (const data of [p5, p0]) {
    const v = unpickle(data) as Record<string, unknown>;
    assert.deepEqual(v['xs'], [1, 2.5, 'é']);
    assert.deepEqual(v['t'], [1, [2], null]);
    const m = v['m'] as unknown[];
    assert.equal(m[0], m[1]);
    assert.deepEqual(v['ba'], Uint8Array.of(0x61, 0x62));
    assert.deepEqual(v['b'], Uint8Array.of(0x63, 0x64));
    assert.equal(v['big'], 2n ** 64n);
    assert.deepEqual(v['fs'], new Set([3]));
    assert.deepEqual(v['od'], { k: 1 });
  }
});

test("dicts: 'map' mode and non-string keys", () => {
  const w = new PickleWriter().proto(2).emptyDict()
    .mark().int(1).str('one').int(2).int(3).tuple1().setitems()
    .stop();
  const asObj = unpickle(w.done());
  assert.ok(asObj instanceof Map, 'non-string keys give a Map');
  assert.equal(asObj.get(1), 'one');
  const w2 = new PickleWriter().proto(2).emptyDict().str('a').int(1).setitem().stop();
  const m = unpickle(w2.done(), { dicts: 'map' });
  assert.ok(m instanceof Map);
  assert.equal(m.get('a'), 1);
});

test('tensor rebuild and persistent ids are delegated', () => {
  const w = new PickleWriter().proto(2)
    .global('torch._utils', '_rebuild_tensor_v2')
    .mark()
    .mark().str('storage').global('torch', 'HalfStorage').str('0').str('cpu').int(6).tuple().binpersid()
    .int(1).int(2).int(2).tuple2().int(2).int(1).tuple2().bool(false)
    .global('collections', 'OrderedDict').emptyTuple().reduce()
    .tuple().reduce().stop();
  const pids: unknown[] = [];
  const v = unpickle(w.done(), { persistentLoad: (pid) => { pids.push(pid); return 'STORAGE'; } });
  assert.ok(v instanceof PickledTensor);
  assert.deepEqual(v.spec, { storage: 'STORAGE', storageOffset: 1, size: [2, 2], stride: [2, 1], requiresGrad: false });
  const pid = pids[0] as unknown[];
  assert.ok(pid[1] instanceof PyGlobal);
  assert.equal(pid[1].qualifiedName, 'torch.HalfStorage');
  // without a handler, a persistent id is an error
  assert.match(thrown(() => unpickle(w.done())).message, /persistent id found but no persistent_load handler/);
});

test('malicious pickles are refused, naming the global, before anything runs', () => {
  const cases: [string, Uint8Array][] = [
    ['os.system', new TextEncoder().encode("cos\nsystem\n(S'echo pwned'\ntR.")],
    ['posix.system', new TextEncoder().encode("cposix\nsystem\n(S'id'\ntR.")],
    ['builtins.eval', new PickleWriter().proto(4).stackGlobal('builtins', 'eval').str('1+1').tuple1().reduce().stop().done()],
    ['subprocess.Popen', new PickleWriter().proto(2).global('subprocess', 'Popen').str('ls').tuple1().reduce().stop().done()],
    ['builtins.getattr', new PickleWriter().proto(4).stackGlobal('builtins', 'getattr').stop().done()],
    ['__builtin__.eval', new PickleWriter().proto(2).global('__builtin__', 'eval').stop().done()],
    ['torch._utils._rebuild_qtensor', new PickleWriter().proto(2).global('torch._utils', '_rebuild_qtensor').stop().done()],
  ];
  for (const [name, data] of cases) {
    const err = thrown(() => unpickle(data, { file: 'evil.pth', entry: 'archive/data.pkl' }));
    assert.ok(err instanceof CheckpointError, name);
    assert.ok(err.message.includes(`'${name}'`), `${name}: ${err.message}`);
    assert.match(err.message, /not on the allow list/);
    assert.match(err.message, /nothing was executed/);
    assert.match(err.message, /^evil\.pth: entry 'archive\/data\.pkl': /);
  }
  assert.ok(!isAllowedGlobal('os', 'system'));
  assert.ok(isAllowedGlobal('torch', 'BFloat16Storage'));
  // allowed globals that are not callable cannot be called
  const callStorage = new PickleWriter().proto(2).global('torch', 'FloatStorage').int(3).tuple1().reduce().stop().done();
  assert.match(thrown(() => unpickle(callStorage)).message, /'torch\.FloatStorage' cannot be called/);
  // REDUCE on a non-callable value
  const reduceStr = new PickleWriter().proto(2).str('os.system').emptyTuple().reduce().stop().done();
  assert.match(thrown(() => unpickle(reduceStr)).message, /REDUCE on the string "os\.system", which is not an allow-listed callable/);
  // _rebuild_from_type_v2 only for Parameter / Tensor types
  const fromType = new PickleWriter().proto(2).global('torch._tensor', '_rebuild_from_type_v2')
    .global('torch._utils', '_rebuild_parameter').global('torch', 'FloatStorage').emptyTuple().emptyDict().tuple()
    .raw(0x52).stop().done();
  assert.throws(() => unpickle(fromType));
});

test('malformed pickles: unknown opcode, truncation, missing STOP, bad memo', () => {
  const unknown = new PickleWriter().proto(2).none().raw(0xff).stop().done();
  assert.match(thrown(() => unpickle(unknown)).message, /unknown opcode 0xff \(at byte offset 3/);
  const trunc = new PickleWriter().proto(2).str('hello').done().subarray(0, 7);
  assert.match(thrown(() => unpickle(trunc)).message, /truncated/);
  const noStop = new PickleWriter().proto(2).none().done();
  assert.match(thrown(() => unpickle(noStop)).message, /without a STOP/);
  const badMemo = new PickleWriter().proto(2).get(7).stop().done();
  assert.match(thrown(() => unpickle(badMemo)).message, /memo key 7 not found/);
  const underflow = new PickleWriter().proto(2).append().stop().done();
  assert.match(thrown(() => unpickle(underflow)).message, /stack underflow/);
  const buffer = new PickleWriter().proto(5).raw(0x97).stop().done();
  assert.match(thrown(() => unpickle(buffer)).message, /NEXT_BUFFER/);
  const proto6 = new PickleWriter().proto(6).none().stop().done();
  assert.match(thrown(() => unpickle(proto6)).message, /unsupported pickle protocol 6/);
});

test('POP, POP_MARK, DUP, numpy scalars and slices', () => {
  const f8 = new Uint8Array(8);
  new DataView(f8.buffer).setFloat64(0, 2.75, true);
  const w = new PickleWriter().proto(2)
    .mark().int(1).int(2).popMark()
    .int(5).pop()
    .emptyList().dup().pop()
    .global('numpy.core.multiarray', 'scalar')
    .global('numpy', 'dtype').str('f8').bool(false).bool(true).tuple3().reduce()
    .mark().int(3).str('<').none().none().none().int(-1 >>> 0).int(-1 >>> 0).int(0).tuple().build()
    .shortBinbytes([...f8]).tuple2().reduce().append()
    .global('builtins', 'slice').int(1).int(9).none().tuple3().reduce().append()
    .stop();
  const v = unpickle(w.done()) as unknown[];
  assert.equal(v[0], 2.75);
  assert.deepEqual({ ...(v[1] as object) }, { start: 1, stop: 9, step: null });
});
