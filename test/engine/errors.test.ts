/**
 * Misuse gives JavaScript errors that name the operator and the argument shapes, and never takes the process down.
 * Cases that could abort the process run in a child process.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  Tensor, backend, bmm, cat, conv2d, crossEntropy, fromBytes, gridSample, interpolate, linear, matmul, maxPool2d, op,
  scope, softmax, tensor, where, zeros,
} from '../../src/engine/index.js';

const x23 = (): Tensor => tensor([[1, 2, 3], [4, 5, 6]]);

/** Asserts that fn throws an Error whose message matches every pattern. */
function throwsWith(fn: () => unknown, ...patterns: RegExp[]): Error {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Error, `expected an Error, got ${String(caught)}`);
  for (const p of patterns) assert.match(caught.message, p);
  return caught;
}

describe('shape errors name the op and the shapes', () => {
  test('matmul 2×3 @ 2×3', () => {
    const e = throwsWith(() => matmul(x23(), x23()), /aten::matmul/, /2x3 and 2x3/, /self=Float\[2, 3\] cpu/, /other=Float\[2, 3\] cpu/);
    assert.ok(!e.message.includes('frame #'), 'no C++ backtrace in the message');
  });

  test('other shape mismatches', () => {
    throwsWith(() => x23().add(zeros([4])), /aten::add\.Tensor/, /size of tensor a \(3\) must match the size of tensor b \(4\)/, /Float\[4\]/);
    throwsWith(() => bmm(x23(), x23()), /aten::bmm/, /3D/, /Float\[2, 3\]/);
    throwsWith(() => linear(x23(), zeros([4, 4])), /aten::linear/, /2x3 and 4x4/, /weight=Float\[4, 4\]/);
    throwsWith(() => conv2d(zeros([1, 3, 4, 4]), zeros([2, 4, 3, 3])), /aten::conv2d/, /expected input\[1, 3, 4, 4\] to have 4 channels/,
      /weight=Float\[2, 4, 3, 3\]/);
    throwsWith(() => cat([x23(), zeros([2, 4])]), /aten::cat/, /Sizes of tensors must match/, /tensors=\[Float\[2, 3\] cpu, Float\[2, 4\] cpu\]/);
    throwsWith(() => x23().view(4), /aten::view/, /shape '\[4\]' is invalid for input of size 6/);
    throwsWith(() => x23().view(-1, -1), /aten::view/, /only one dimension can be inferred/);
    throwsWith(() => x23().transpose(0, 1).view(6), /aten::view/, /Float\[3, 2\]/);
    throwsWith(() => maxPool2d(zeros([1, 1, 2, 2]), 3), /aten::max_pool2d/, /Output size is too small/, /Float\[1, 1, 2, 2\]/);
    throwsWith(() => gridSample(zeros([1, 1, 2, 2]), zeros([1, 2, 2, 3])), /aten::grid_sampler/, /size 2 in last dimension/);
    throwsWith(() => x23().expand(3, 3), /aten::expand/, /Float\[2, 3\]/);
  });
});

describe('dtype errors where libtorch refuses', () => {
  test('float32 with float64 in matmul/linear/conv2d', () => {
    throwsWith(() => matmul(x23(), tensor([1, 2, 3], { dtype: 'float64' })), /aten::matmul/, /expected scalar type Float but found Double/,
      /Double\[3\]/);
    throwsWith(() => linear(x23(), tensor([[1, 2, 3]], { dtype: 'float64' })), /aten::linear/, /Double\[1, 3\]/);
    throwsWith(() => conv2d(zeros([1, 3, 4, 4]), zeros([2, 3, 3, 3], { dtype: 'float64' })), /aten::conv2d/, /Double\[2, 3, 3, 3\]/);
  });

  test('index dtypes, loss targets, conditions', () => {
    throwsWith(() => x23().gather(1, tensor([[0]], { dtype: 'int32' })), /aten::gather/, /int64 for index/, /index=Int\[1, 1\]/);
    throwsWith(() => x23().indexSelect(1, tensor([0])), /aten::index_select/, /index=Float\[1\]/);
    throwsWith(() => crossEntropy(x23(), tensor([0, 1], { dtype: 'int32' })), /aten::cross_entropy_loss/, /Long but found Int/, /target=Int\[2\]/);
    throwsWith(() => crossEntropy(x23(), tensor([0, 1])), /aten::cross_entropy_loss/, /target=Float\[2\]/);
    throwsWith(() => where(zeros([2, 3]), x23(), x23()), /aten::where/, /boolean/, /condition=Float\[2, 3\]/);
    throwsWith(() => { tensor([1], { dtype: 'int64' }).requiresGrad = true; }, /floating point/);
    throwsWith(() => tensor([1], { dtype: 'complex64' as never }), /unknown dtype "complex64"/);
  });
});

describe('devices', () => {
  test('bad device strings are refused before reaching libtorch', () => {
    throwsWith(() => zeros([2], { device: 'tpu' }), /unknown device "tpu"/);
    throwsWith(() => tensor([1], { device: 'cuda:x' }), /unknown device/);
    throwsWith(() => x23().to({ device: 'gpu' }), /unknown device "gpu"/);
    throwsWith(() => x23().to('gpu'), /unknown device or dtype "gpu"/);
    throwsWith(() => fromBytes(new Float32Array(2), 'float32', [2], 'CPU'), /unknown device "CPU"/);
  });

  test('a CUDA device on a CPU-only build is a JS error naming the op', { skip: backend().cudaIsAvailable() ? 'CUDA available' : false }, () => {
    throwsWith(() => zeros([2], { device: 'cuda' }), /aten::zeros/, /CUDA/);
    throwsWith(() => x23().to('cuda:0'), /aten::to/, /CUDA/, /Float\[2, 3\]/);
    assert.equal(typeof backend().cudaDeviceCount(), 'number');
  });
});

describe('dimension and index errors', () => {
  test('out-of-range dims and indices', () => {
    throwsWith(() => x23().transpose(0, 5), /aten::transpose/, /Dimension out of range/, /Float\[2, 3\]/);
    throwsWith(() => x23().sum(3), /aten::sum/, /Dimension out of range \(expected to be in range of \[-2, 1\], but got 3\)/);
    throwsWith(() => softmax(x23(), 2), /aten::softmax/, /Dimension out of range/);
    throwsWith(() => x23().unsqueeze(5), /aten::unsqueeze/, /Dimension out of range/);
    throwsWith(() => x23().squeeze(4), /aten::squeeze/, /Dimension out of range/);
    throwsWith(() => x23().select(0, 5), /aten::select/, /index 5 out of range/);
    throwsWith(() => x23().narrow(1, 2, 5), /aten::narrow/, /exceeds dimension size/);
    throwsWith(() => x23().permute(0, 0), /aten::permute/, /Float\[2, 3\]/);
    throwsWith(() => x23().indexSelect(1, tensor([3], { dtype: 'int64' })), /aten::index_select/, /out of range|index/i);
    throwsWith(() => cat([x23(), x23()], 3), /aten::cat/, /Dimension out of range/);
    assert.throws(() => x23().size(2), RangeError);
    throwsWith(() => x23().item(), /item\(\): tensor has 6 elements/, /shape \[2,3\]/);
  });
});

describe('bad arguments', () => {
  test('a string where a number is expected', () => {
    const e = throwsWith(() => x23().add('a' as never), /aten::add\.Scalar/, /argument 'other': expected a number, got 'a'/,
      /self=Float\[2, 3\] cpu/);
    assert.ok(e instanceof TypeError);
    throwsWith(() => conv2d(zeros([1, 1, 4, 4]), zeros([1, 1, 2, 2]), null, { stride: 'x' as never }), /aten::conv2d/,
      /argument 'stride': expected an integer/, /input=Float\[1, 1, 4, 4\]/);
    throwsWith(() => x23().clamp('0' as never, 1), /aten::clamp/, /argument 'min'/);
    throwsWith(() => x23().sum(1, 'yes' as never), /aten::sum/, /argument 'keepdim': expected a boolean/);
  });

  test('non-integers where integers are expected', () => {
    throwsWith(() => x23().view(1.5 as number, 4), /aten::view/, /expected an integer, got 1.5/);
    throwsWith(() => x23().reshape(-1, NaN), /aten::reshape/, /expected an integer, got nan/);
    throwsWith(() => interpolate(zeros([1, 1, 2, 2]), { size: 2.5 }), /upsample_nearest2d/, /output_size/, /expected an integer/);
    throwsWith(() => x23().narrow(0, tensor([1]) as never, 1), /aten::narrow/, /argument 'start': expected an integer/);
  });

  test('raw operator calls: arity, missing arguments, unknown operators, non-tensors', () => {
    const h = x23().handle;
    throwsWith(() => op('aten::relu').call([h, 1, 2]), /aten::relu: 3 arguments given, the schema has 1/);
    throwsWith(() => op('aten::add', 'Tensor').call([h]), /aten::add\.Tensor: missing argument 'other'/);
    throwsWith(() => op('aten::no_such_op').call([]), /unknown operator aten::no_such_op/);
    assert.equal(op('aten::no_such_op_either').available(), false);
    throwsWith(() => op('aten::relu').call([5]), /aten::relu/, /argument 'self': expected a tensor, got 5/);
    throwsWith(() => op('aten::cat').call([[h, 5], 0]), /aten::cat/, /expected a tensor/);
    throwsWith(() => op('aten::gelu').call([h, 'bogus']), /aten::gelu/, /approximate/);
    throwsWith(() => backend().meta({} as never), /meta: expected a tensor/);
  });

  test('allocation failure', () => {
    throwsWith(() => zeros([1e6, 1e6]), /aten::zeros/, /allocate/);
  });

  test('backward misuse', () => {
    throwsWith(() => x23().sum().backward(), /backward/, /does not require grad/);
    const t = tensor([1, 2], { requiresGrad: true });
    throwsWith(() => t.mul(2).backward(), /backward/, /scalar/);
    throwsWith(() => t.add_(1), /aten::add_/, /leaf Variable that requires grad/, /Float\[2\]/);
  });

  test('assigning a gradient of another shape or dtype is refused (as in PyTorch)', () => {
    // BUG (native/src/addon.cc SetGrad): the assignment is accepted unchecked; a later backward then fails far from
    // the cause (shape), or silently keeps a float64 gradient on a float32 tensor (dtype).
    const t = tensor([1, 2], { requiresGrad: true });
    assert.throws(() => { t.grad = tensor([1, 2, 3]); }, /grad|shape|size/i, 'grad of shape [3] assigned to a [2] tensor');
    const u = tensor([1, 2], { requiresGrad: true });
    assert.throws(() => { u.grad = tensor([1, 2], { dtype: 'float64' }); }, /grad|type/i, 'float64 grad assigned to a float32 tensor');
  });
});

describe('disposed tensors', () => {
  test('use after dispose is an Error; dispose is idempotent', () => {
    const t = tensor([1, 2]);
    t.dispose();
    assert.equal(t.disposed, true);
    t.dispose();
    assert.equal(t.toString(), 'Tensor(disposed)');
    throwsWith(() => t.add(1), /disposed/);
    throwsWith(() => t.shape, /disposed/);
    throwsWith(() => t.toArray(), /disposed/);
    throwsWith(() => x23().add(t), /disposed/);
    throwsWith(() => cat([x23(), t]), /disposed/);
  });

  test('disposed handles reaching the addon are refused with the op name and the other shapes', () => {
    const t = tensor([1, 2]);
    const h = t.handle;
    t.dispose();
    assert.equal(backend().isDisposed(h), true);
    throwsWith(() => backend().meta(h), /meta: tensor was disposed/);
    throwsWith(() => backend().toBytes(h), /toBytes: tensor was disposed/);
    throwsWith(() => op('aten::relu').call([h]), /aten::relu/, /tensor was disposed/);
    throwsWith(() => op('aten::cat').call([[x23().handle, h], 0]), /aten::cat/, /tensor was disposed/, /Float\[2, 3\]/);
    backend().dispose(h); // twice: no effect
  });

  test('an error inside scope() disposes its tensors and leaves the scope stack balanced', () => {
    let inner: Tensor | null = null;
    assert.throws(() => scope(() => {
      inner = tensor([1, 2, 3]);
      return matmul(inner, inner.view(1, 3));
    }), /aten::matmul/);
    assert.equal((inner as Tensor | null)?.disposed, true);
    // the next scope works normally and its result survives
    const out = scope(() => tensor([1]).add(1));
    assert.equal(out.disposed, false);
    assert.equal(out.item(), 2);
  });
});

// ---------------------------------------------------------------------------------------------------------------
/** Runs an ES module snippet (with `E` = the engine) in a child process; returns its status, signal and output. */
function child(code: string): { status: number | null; signal: string | null; out: string } {
  const engine = new URL('../../src/engine/index.js', import.meta.url).href;
  const src = `import * as E from ${JSON.stringify(engine)};\n${code}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

describe('the process survives', () => {
  test('a child process reports a caught libtorch error and exits normally (harness check)', () => {
    const r = child(`try { E.tensor([[1,2,3]]).matmul(E.tensor([[1,2,3]])); } catch (e) { console.log('caught:', e.message.split('\\n')[0]); }`);
    assert.equal(r.signal, null, r.out);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /caught: aten::matmul/);
  });

  test('an unparsable device index (cuda:99999999999) is a JS error, not an abort', () => {
    // BUG (native/src/addon.cc Call): c10::Device's constructor throws c10::Error while the arguments are converted,
    // and that loop catches only Napi::Error: the exception escapes the N-API callback → std::terminate (SIGABRT).
    const r = child(`try { E.zeros([2], { device: 'cuda:99999999999' }); console.log('no error'); }
      catch (e) { console.log('caught:', e.message.split('\\n')[0]); }`);
    assert.equal(r.signal, null, `the process was killed by ${r.signal}:\n${r.out.slice(0, 400)}`);
    assert.equal(r.status, 0, r.out.slice(0, 400));
    assert.match(r.out, /caught: .*aten::zeros.*device/i);
  });

  test('a bad device string passed straight to an operator is a JS error, not an abort', () => {
    const r = child(`try { E.op('aten::zeros').call([[2], null, null, 'tpu', null]); console.log('no error'); }
      catch (e) { console.log('caught:', e.message.split('\\n')[0]); }`);
    assert.equal(r.signal, null, `the process was killed by ${r.signal}:\n${r.out.slice(0, 400)}`);
    assert.equal(r.status, 0, r.out.slice(0, 400));
    assert.match(r.out, /caught: aten::zeros.*tpu/);
  });

  test('the engine still works after all the errors above', () => {
    assert.deepEqual(tensor([[1, 2], [3, 4]]).matmul(tensor([[1], [1]])).toArray(), [[3], [7]]);
  });
});
