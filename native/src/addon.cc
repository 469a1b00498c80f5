// vit-adapter native addon: libtorch behind Node-API.
//
// The addon exposes one generic entry point, `call(opId, args)`, that runs any ATen (or vit_adapter::) operator
// through libtorch's dispatcher with boxed arguments converted according to the operator's schema. Autograd,
// CPU and CUDA kernels all come from that dispatch. Besides it: tensor creation from bytes, reading bytes back,
// metadata, autograd entry points (backward, grad), grad mode, threads, seeds and device queries.
//
// Tensors travel to JavaScript as type-tagged externals owning a heap `Holder`; the finalizer (GC) or an explicit
// `dispose` releases the libtorch tensor. Their storage size is reported to V8 as external memory.
// Every libtorch error becomes a JavaScript Error naming the operator and the argument shapes.

#include <napi.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/version.h>

#include <ATen/CPUGeneratorImpl.h>
#ifdef VITA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cstring>
#include <sstream>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

namespace {

const napi_type_tag kTensorTag = {0x5b1ad9e3c47f4e21ULL, 0x9a3c0d5e7b2f6a18ULL};

struct Holder {
  at::Tensor t;
  int64_t reported = 0;
};

int64_t StorageBytes(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return 0;
  return static_cast<int64_t>(t.storage().nbytes());
}

void ReleaseHolder(Napi::BasicEnv env, Holder* h) {
  if (h->reported != 0) Napi::MemoryManagement::AdjustExternalMemory(env, -h->reported);
  h->reported = 0;
  h->t.reset();
}

Napi::Value Wrap(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  auto* h = new Holder{std::move(t), 0};
  h->reported = StorageBytes(h->t);
  if (h->reported != 0) Napi::MemoryManagement::AdjustExternalMemory(env, h->reported);
  // A basic (pure) finalizer runs during garbage collection itself, not later on the event loop, so native memory is
  // released even while JavaScript runs a long synchronous loop. It must not call into JavaScript.
  auto ext = Napi::External<Holder>::New(env, h, [](Napi::BasicEnv env, Holder* h) {
    ReleaseHolder(env, h);
    delete h;
  });
  ext.TypeTag(&kTensorTag);
  return ext;
}

Holder* HolderOf(const Napi::Value& v, const char* what) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected a tensor");
  auto ext = v.As<Napi::External<Holder>>();
  if (!ext.CheckTypeTag(&kTensorTag)) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected a tensor");
  return ext.Data();
}

const at::Tensor& TensorOf(const Napi::Value& v, const char* what) {
  Holder* h = HolderOf(v, what);
  if (!h->t.defined()) throw Napi::Error::New(v.Env(), std::string(what) + ": tensor was disposed");
  return h->t;
}

std::string DescribeTensor(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::ostringstream os;
  os << c10::toString(t.scalar_type()) << t.sizes() << " " << t.device();
  return os.str();
}

std::string DescribeJs(const Napi::Value& v) {
  if (v.IsExternal()) {
    auto ext = v.As<Napi::External<Holder>>();
    if (ext.CheckTypeTag(&kTensorTag)) return DescribeTensor(ext.Data()->t);
    return "external";
  }
  if (v.IsNull() || v.IsUndefined()) return "None";
  if (v.IsArray()) {
    auto a = v.As<Napi::Array>();
    std::string s = "[";
    for (uint32_t i = 0; i < a.Length() && i < 8; ++i) {
      if (i) s += ", ";
      s += DescribeJs(a.Get(i));
    }
    if (a.Length() > 8) s += ", ...";
    return s + "]";
  }
  if (v.IsString()) return "'" + v.As<Napi::String>().Utf8Value() + "'";
  if (v.IsNumber()) {
    std::ostringstream os;
    os << v.As<Napi::Number>().DoubleValue();
    return os.str();
  }
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  return "?";
}

// ---- operator registry ------------------------------------------------------------------------------------

struct OpEntry {
  c10::OperatorHandle handle;
  std::string name;
};
std::vector<OpEntry> g_ops;

Napi::Value FindOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string overload = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  auto op = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!op.has_value()) {
    if (info.Length() > 2 && info[2].ToBoolean()) return env.Null();  // probing for an optional op
    throw Napi::Error::New(env, "unknown operator " + name + (overload.empty() ? "" : "." + overload) +
                                    " in this libtorch (" + TORCH_VERSION + ")");
  }
  g_ops.push_back({*op, overload.empty() ? name : name + "." + overload});
  return Napi::Number::New(env, static_cast<double>(g_ops.size() - 1));
}

Napi::Value OpSchema(const Napi::CallbackInfo& info) {
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  if (id >= g_ops.size()) throw Napi::RangeError::New(info.Env(), "bad operator id");
  std::ostringstream os;
  os << g_ops[id].handle.schema();
  return Napi::String::New(info.Env(), os.str());
}

[[noreturn]] void BadArg(Napi::Env env, const c10::Argument& arg, const std::string& expected, const Napi::Value& v) {
  throw Napi::TypeError::New(env, "argument '" + arg.name() + "': expected " + expected + ", got " + DescribeJs(v));
}

c10::IValue ToIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type, const c10::Argument& arg,
                     c10::optional<int32_t> n);

int64_t ToInt(Napi::Env env, const Napi::Value& v, const c10::Argument& arg) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d != static_cast<double>(static_cast<int64_t>(d))) BadArg(env, arg, "an integer", v);
    return static_cast<int64_t>(d);
  }
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  if (v.IsBigInt()) {
    bool lossless = true;
    return v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  BadArg(env, arg, "an integer", v);
}

c10::IValue ToIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type, const c10::Argument& arg,
                     c10::optional<int32_t> n) {
  switch (type->kind()) {
    case c10::TypeKind::OptionalType:
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      return ToIValue(env, v, type->castRaw<c10::OptionalType>()->getElementType(), arg, n);
    case c10::TypeKind::TensorType:
      if (!v.IsExternal()) BadArg(env, arg, "a tensor", v);
      return TensorOf(v, arg.name().c_str());
    case c10::TypeKind::IntType:
      return ToInt(env, v, arg);
    case c10::TypeKind::FloatType:
      if (!v.IsNumber()) BadArg(env, arg, "a number", v);
      return v.As<Napi::Number>().DoubleValue();
    case c10::TypeKind::BoolType:
      if (!v.IsBoolean()) BadArg(env, arg, "a boolean", v);
      return v.As<Napi::Boolean>().Value();
    case c10::TypeKind::NumberType: {  // Scalar
      if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
      if (!v.IsNumber()) BadArg(env, arg, "a number", v);
      double d = v.As<Napi::Number>().DoubleValue();
      if (std::isfinite(d) && d == static_cast<double>(static_cast<int64_t>(d)) && std::abs(d) < 9.007199254740992e15)
        return static_cast<int64_t>(d);
      return d;
    }
    case c10::TypeKind::StringType:
      if (!v.IsString()) BadArg(env, arg, "a string", v);
      return v.As<Napi::String>().Utf8Value();
    case c10::TypeKind::DeviceObjType:
      if (!v.IsString()) BadArg(env, arg, "a device string", v);
      return c10::Device(v.As<Napi::String>().Utf8Value());
    case c10::TypeKind::ListType: {
      const c10::TypePtr& elem = type->castRaw<c10::ListType>()->getElementType();
      if (!v.IsArray()) {
        // int[2] stride accepts one integer for all entries, as in Python.
        if (elem->kind() == c10::TypeKind::IntType && n.has_value() && v.IsNumber()) {
          return c10::List<int64_t>(std::vector<int64_t>(*n, ToInt(env, v, arg)));
        }
        BadArg(env, arg, "an array", v);
      }
      auto a = v.As<Napi::Array>();
      uint32_t len = a.Length();
      switch (elem->kind()) {
        case c10::TypeKind::IntType: {
          c10::List<int64_t> out;
          out.reserve(len);
          for (uint32_t i = 0; i < len; ++i) out.push_back(ToInt(env, a.Get(i), arg));
          return out;
        }
        case c10::TypeKind::FloatType: {
          c10::List<double> out;
          out.reserve(len);
          for (uint32_t i = 0; i < len; ++i) {
            Napi::Value e = a.Get(i);
            if (!e.IsNumber()) BadArg(env, arg, "an array of numbers", v);
            out.push_back(e.As<Napi::Number>().DoubleValue());
          }
          return out;
        }
        case c10::TypeKind::BoolType: {
          c10::List<bool> out;
          out.reserve(len);
          for (uint32_t i = 0; i < len; ++i) out.push_back(a.Get(i).ToBoolean().Value());
          return out;
        }
        case c10::TypeKind::TensorType: {
          c10::List<at::Tensor> out;
          out.reserve(len);
          for (uint32_t i = 0; i < len; ++i) out.push_back(TensorOf(a.Get(i), arg.name().c_str()));
          return out;
        }
        case c10::TypeKind::OptionalType: {
          c10::List<c10::optional<at::Tensor>> out;
          out.reserve(len);
          for (uint32_t i = 0; i < len; ++i) {
            Napi::Value e = a.Get(i);
            if (e.IsNull() || e.IsUndefined()) out.push_back(c10::nullopt);
            else out.push_back(TensorOf(e, arg.name().c_str()));
          }
          return out;
        }
        default:
          break;
      }
      throw Napi::TypeError::New(env, "argument '" + arg.name() + "': unsupported list type " + type->str());
    }
    default:
      break;
  }
  // ScalarType, Layout, MemoryFormat are ints in the schema's type(); anything else is not supported here.
  if (v.IsNumber()) return ToInt(env, v, arg);
  throw Napi::TypeError::New(env, "argument '" + arg.name() + "': unsupported type " + type->str());
}

Napi::Value FromIValue(Napi::Env env, const c10::IValue& iv) {
  if (iv.isTensor()) return Wrap(env, iv.toTensor());
  if (iv.isNone()) return env.Null();
  if (iv.isInt()) return Napi::Number::New(env, static_cast<double>(iv.toInt()));
  if (iv.isDouble()) return Napi::Number::New(env, iv.toDouble());
  if (iv.isBool()) return Napi::Boolean::New(env, iv.toBool());
  if (iv.isTensorList()) {
    auto list = iv.toTensorList();
    auto a = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) a.Set(static_cast<uint32_t>(i), Wrap(env, list.get(i)));
    return a;
  }
  if (iv.isTuple()) {
    const auto& elems = iv.toTupleRef().elements();
    auto a = Napi::Array::New(env, elems.size());
    for (size_t i = 0; i < elems.size(); ++i) a.Set(static_cast<uint32_t>(i), FromIValue(env, elems[i]));
    return a;
  }
  if (iv.isList()) {
    auto list = iv.toListRef();
    auto a = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) a.Set(static_cast<uint32_t>(i), FromIValue(env, list[i]));
    return a;
  }
  if (iv.isString()) return Napi::String::New(env, iv.toStringRef());
  if (iv.isScalar()) return Napi::Number::New(env, iv.toScalar().toDouble());
  throw Napi::Error::New(env, "unsupported return type " + iv.tagKind());
}

std::string CallContext(const OpEntry& op, const Napi::CallbackInfo& info) {
  std::string s = op.name + "(";
  if (info.Length() > 1 && info[1].IsArray()) {
    auto a = info[1].As<Napi::Array>();
    const auto& sargs = op.handle.schema().arguments();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      if (i) s += ", ";
      if (i < sargs.size()) s += sargs[i].name() + "=";
      s += DescribeJs(a.Get(i));
    }
  }
  return s + ")";
}

// call(opId, args[]): runs the operator; returns a tensor, a number, null, or an array for multiple returns.
Napi::Value Call(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  if (id >= g_ops.size()) throw Napi::RangeError::New(env, "bad operator id");
  const OpEntry& op = g_ops[id];
  const auto& schema = op.handle.schema();
  const auto& sargs = schema.arguments();
  Napi::Array args = info[1].As<Napi::Array>();
  uint32_t given = args.Length();
  if (given > sargs.size()) {
    throw Napi::TypeError::New(env, op.name + ": " + std::to_string(given) + " arguments given, the schema has " +
                                        std::to_string(sargs.size()));
  }
  torch::jit::Stack stack;
  stack.reserve(sargs.size());
  try {
    for (size_t i = 0; i < sargs.size(); ++i) {
      const c10::Argument& a = sargs[i];
      Napi::Value v = i < given ? args.Get(static_cast<uint32_t>(i)) : env.Undefined();
      if (v.IsUndefined()) {
        if (a.default_value().has_value()) {
          stack.push_back(*a.default_value());
          continue;
        }
        if (a.type()->kind() == c10::TypeKind::OptionalType) {
          stack.emplace_back();
          continue;
        }
        throw Napi::TypeError::New(env, "missing argument '" + a.name() + "'");
      }
      stack.push_back(ToIValue(env, v, a.type(), a, a.N()));
    }
  } catch (const Napi::Error& e) {
    throw Napi::TypeError::New(env, op.name + ": " + e.Message() + " in " + CallContext(op, info));
  } catch (const c10::Error& e) {
    throw Napi::TypeError::New(env, op.name + ": " + e.what_without_backtrace() + " in " + CallContext(op, info));
  } catch (const std::exception& e) {
    throw Napi::TypeError::New(env, op.name + ": " + e.what() + " in " + CallContext(op, info));
  }
  try {
    op.handle.callBoxed(&stack);
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, op.name + ": " + e.what_without_backtrace() + "\n  in " + CallContext(op, info));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, op.name + ": " + e.what() + "\n  in " + CallContext(op, info));
  }
  if (stack.empty()) return env.Undefined();
  if (stack.size() == 1) return FromIValue(env, stack[0]);
  auto out = Napi::Array::New(env, stack.size());
  for (size_t i = 0; i < stack.size(); ++i) out.Set(static_cast<uint32_t>(i), FromIValue(env, stack[i]));
  return out;
}

// Runs fn, turning libtorch exceptions into JS errors prefixed with `what`.
template <typename F>
auto Guard(Napi::Env env, const char* what, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string(what) + ": " + e.what());
  }
}

std::vector<int64_t> ShapeOf(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + ": shape must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> shape(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + ": shape must be an array of integers");
    double d = e.As<Napi::Number>().DoubleValue();
    if (d < 0 || d != static_cast<double>(static_cast<int64_t>(d)))
      throw Napi::RangeError::New(env, std::string(what) + ": shape entries must be non-negative integers");
    shape[i] = static_cast<int64_t>(d);
  }
  return shape;
}

// fromBytes(bytes: ArrayBufferView, scalarType, shape, device?) -> tensor (the bytes are copied).
Napi::Value FromBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() && !info[0].IsDataView() && !info[0].IsBuffer())
    throw Napi::TypeError::New(env, "fromBytes: expected a typed array");
  auto view = info[0].As<Napi::TypedArray>();
  auto ab = view.ArrayBuffer();
  const uint8_t* data = static_cast<const uint8_t*>(ab.Data()) + view.ByteOffset();
  size_t nbytes = view.ByteLength();
  auto st = static_cast<c10::ScalarType>(info[1].As<Napi::Number>().Int32Value());
  auto shape = ShapeOf(env, info[2], "fromBytes");
  return Guard(env, "fromBytes", [&]() {
    int64_t numel = 1;
    for (auto s : shape) numel *= s;
    size_t need = static_cast<size_t>(numel) * c10::elementSize(st);
    if (need != nbytes)
      throw Napi::RangeError::New(env, "fromBytes: " + std::to_string(nbytes) + " bytes given, shape needs " +
                                           std::to_string(need));
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(st));
    if (nbytes) std::memcpy(t.data_ptr(), data, nbytes);
    if (info.Length() > 3 && info[3].IsString()) {
      std::string dev = info[3].As<Napi::String>().Utf8Value();
      if (dev != "cpu") t = t.to(c10::Device(dev));
    }
    return Wrap(env, t);
  });
}

// toBytes(tensor) -> Buffer with the contiguous CPU bytes.
Napi::Value ToBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t0 = TensorOf(info[0], "toBytes");
  return Guard(env, "toBytes", [&]() -> Napi::Value {
    at::NoGradGuard ng;
    at::Tensor t = t0.detach().to(at::kCPU).contiguous();
    size_t nbytes = t.numel() * t.element_size();
    auto buf = Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(t.data_ptr()), nbytes);
    return buf;
  });
}

// meta(tensor) -> [sizes[], scalarTypeCode, deviceString]
Napi::Value Meta(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = TensorOf(info[0], "meta");
  auto sizes = t.sizes();
  auto shape = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>(sizes[i]));
  auto out = Napi::Array::New(env, 3);
  out.Set(0u, shape);
  out.Set(1u, static_cast<int>(t.scalar_type()));
  out.Set(2u, t.device().str());
  return out;
}

Napi::Value Strides(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = TensorOf(info[0], "strides");
  auto st = t.strides();
  auto a = Napi::Array::New(env, st.size());
  for (size_t i = 0; i < st.size(); ++i) a.Set(static_cast<uint32_t>(i), static_cast<double>(st[i]));
  return a;
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  Holder* h = HolderOf(info[0], "dispose");
  ReleaseHolder(info.Env(), h);
  return info.Env().Undefined();
}

Napi::Value IsDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !HolderOf(info[0], "isDisposed")->t.defined());
}

Napi::Value RequiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), TensorOf(info[0], "requiresGrad").requires_grad());
}

Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = TensorOf(info[0], "setRequiresGrad");
  bool on = info[1].ToBoolean();
  Guard(env, "setRequiresGrad", [&]() { t.set_requires_grad(on); return 0; });
  return env.Undefined();
}

Napi::Value Grad(const Napi::CallbackInfo& info) {
  const at::Tensor& t = TensorOf(info[0], "grad");
  return Wrap(info.Env(), t.grad());
}

Napi::Value SetGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& t = TensorOf(info[0], "setGrad");
  at::Tensor g = info[1].IsNull() || info[1].IsUndefined() ? at::Tensor() : TensorOf(info[1], "setGrad");
  Guard(env, "setGrad", [&]() {
    if (g.defined()) {
      TORCH_CHECK(g.sizes() == t.sizes(), "gradient has shape ", g.sizes(), ", the tensor has shape ", t.sizes());
      TORCH_CHECK(g.scalar_type() == t.scalar_type(), "gradient has dtype ", g.scalar_type(), ", the tensor has ",
                  t.scalar_type());
      TORCH_CHECK(g.device() == t.device(), "gradient is on ", g.device(), ", the tensor on ", t.device());
    }
    t.mutable_grad() = g;
    return 0;
  });
  return env.Undefined();
}

Napi::Value IsLeaf(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), TensorOf(info[0], "isLeaf").is_leaf());
}

Napi::Value GradFnName(const Napi::CallbackInfo& info) {
  const at::Tensor& t = TensorOf(info[0], "gradFn");
  auto fn = t.grad_fn();
  if (!fn) return info.Env().Null();
  return Napi::String::New(info.Env(), fn->name());
}

std::vector<at::Tensor> TensorList(Napi::Env env, const Napi::Value& v, const char* what, bool allowNull) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + ": expected an array of tensors");
  auto a = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (allowNull && (e.IsNull() || e.IsUndefined())) out.emplace_back();
    else out.push_back(TensorOf(e, what));
  }
  return out;
}

// backward(outputs[], grads[] (null entries allowed), retainGraph, createGraph)
Napi::Value Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto outputs = TensorList(env, info[0], "backward", false);
  auto grads = TensorList(env, info[1], "backward", true);
  bool retain = info.Length() > 2 && info[2].ToBoolean();
  bool create = info.Length() > 3 && info[3].ToBoolean();
  Guard(env, "backward", [&]() {
    torch::autograd::backward(outputs, grads, retain, create);
    return 0;
  });
  return env.Undefined();
}

// grad(outputs[], inputs[], gradOutputs[], retainGraph, createGraph, allowUnused) -> grads[] (null where unused)
Napi::Value AutogradGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto outputs = TensorList(env, info[0], "grad", false);
  auto inputs = TensorList(env, info[1], "grad", false);
  auto gouts = TensorList(env, info[2], "grad", true);
  bool retain = info.Length() > 3 && info[3].ToBoolean();
  bool create = info.Length() > 4 && info[4].ToBoolean();
  bool allowUnused = info.Length() > 5 && info[5].ToBoolean();
  auto res = Guard(env, "grad", [&]() {
    return torch::autograd::grad(outputs, inputs, gouts, retain, create, allowUnused);
  });
  auto a = Napi::Array::New(env, res.size());
  for (size_t i = 0; i < res.size(); ++i) a.Set(static_cast<uint32_t>(i), Wrap(env, res[i]));
  return a;
}

Napi::Value SetGradEnabled(const Napi::CallbackInfo& info) {
  bool prev = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(info[0].ToBoolean());
  return Napi::Boolean::New(info.Env(), prev);
}

Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), c10::GradMode::is_enabled());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::RangeError::New(env, "setNumThreads: need at least 1 thread, got " + std::to_string(n));
  Guard(env, "setNumThreads", [&]() { at::set_num_threads(n); return 0; });
  return env.Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double d = info[0].As<Napi::Number>().DoubleValue();
  Guard(env, "manualSeed", [&]() { at::manual_seed(static_cast<uint64_t>(d)); return 0; });
  return env.Undefined();
}

// The default CPU generator's state (what torch.get_rng_state() returns) as bytes, and its restore: training
// checkpoints save it so that a resumed run draws the same dropout / drop-path masks. Both libtorch 1.13 and 2.x
// expose get_state()/set_state() on at::Generator, with the state as a CPU uint8 tensor.
Napi::Value GetRngState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor st = Guard(env, "getRngState", [&]() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state().contiguous();
  });
  auto out = Napi::Uint8Array::New(env, static_cast<size_t>(st.numel()));
  if (st.numel() > 0) std::memcpy(out.Data(), st.data_ptr(), static_cast<size_t>(st.numel()));
  return out;
}

Napi::Value SetRngState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "setRngState: expected a Uint8Array (from getRngState)");
  }
  auto a = info[0].As<Napi::Uint8Array>();
  std::vector<uint8_t> copy(a.Data(), a.Data() + a.ElementLength());
  Guard(env, "setRngState", [&]() {
    at::Tensor st = at::empty({static_cast<int64_t>(copy.size())}, at::TensorOptions().dtype(at::kByte));
    if (!copy.empty()) std::memcpy(st.data_ptr(), copy.data(), copy.size());
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(st);
    return 0;
  });
  return env.Undefined();
}

// ---- autocast (mixed precision) ----------------------------------------------------------------------------
// libtorch >= 2.4 has a device-generic API (at::autocast::set_autocast_enabled(DeviceType, bool), ...); older ones
// (Debian's 1.13) have per-device functions (set_enabled = CUDA, set_cpu_enabled, set_autocast_gpu_dtype, ...).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define VIT_AUTOCAST_GENERIC_API 1
#else
#define VIT_AUTOCAST_GENERIC_API 0
#endif

bool AutocastIsCuda(Napi::Env env, const Napi::Value& v) {
  if (!v.IsString()) throw Napi::TypeError::New(env, "autocast: device type must be \"cpu\" or \"cuda\"");
  std::string d = v.As<Napi::String>().Utf8Value();
  if (d == "cuda") return true;
  if (d == "cpu") return false;
  throw Napi::TypeError::New(env, "autocast: device type must be \"cpu\" or \"cuda\", got \"" + d + "\"");
}

bool AutocastEnabled(bool cuda) {
#if VIT_AUTOCAST_GENERIC_API
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

at::ScalarType AutocastDtype(bool cuda) {
#if VIT_AUTOCAST_GENERIC_API
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

Napi::Value AutocastPair(Napi::Env env, bool enabled, at::ScalarType dtype) {
  auto a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Boolean::New(env, enabled));
  a.Set(1u, Napi::Number::New(env, static_cast<double>(static_cast<int>(dtype))));
  return a;
}

// getAutocast(deviceType) -> [enabled, scalarType]
Napi::Value GetAutocast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool cuda = AutocastIsCuda(env, info[0]);
  return AutocastPair(env, AutocastEnabled(cuda), AutocastDtype(cuda));
}

// setAutocast(deviceType, enabled, scalarType) -> previous [enabled, scalarType]
Napi::Value SetAutocast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool cuda = AutocastIsCuda(env, info[0]);
  if (!info[1].IsBoolean()) throw Napi::TypeError::New(env, "setAutocast: enabled must be a boolean");
  if (!info[2].IsNumber()) throw Napi::TypeError::New(env, "setAutocast: scalar type must be a number");
  bool enabled = info[1].As<Napi::Boolean>().Value();
  auto dtype = static_cast<at::ScalarType>(info[2].As<Napi::Number>().Int32Value());
  if (dtype != at::kBFloat16 && dtype != at::kHalf && dtype != at::kFloat) {
    throw Napi::TypeError::New(env, "setAutocast: the autocast dtype must be bfloat16, float16 or float32");
  }
  Napi::Value prev = AutocastPair(env, AutocastEnabled(cuda), AutocastDtype(cuda));
  Guard(env, "setAutocast", [&]() {
#if VIT_AUTOCAST_GENERIC_API
    at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, dtype);
    at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, enabled);
#else
    if (cuda) {
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(enabled);
    } else {
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(enabled);
    }
#endif
    return 0;
  });
  return prev;
}

// autocastNesting(delta): +1 on entering an autocast region, -1 on leaving; leaving the outermost one clears the
// cache of casted weights (as torch.autocast's __exit__). Returns the new depth.
Napi::Value AutocastNesting(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int delta = info[0].As<Napi::Number>().Int32Value();
  int depth = 0;
  if (delta > 0) {
    depth = at::autocast::increment_nesting();
  } else {
    depth = at::autocast::decrement_nesting();
    if (depth == 0) at::autocast::clear_cache();
  }
  return Napi::Number::New(env, depth);
}

Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), at::hasCUDA() && at::detail::getCUDAHooks().getNumGPUs() > 0);
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0);
}

Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t idx = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : -1;
  Guard(env, "cuda.synchronize", [&]() {
    if (!at::hasCUDA()) TORCH_CHECK(false, "CUDA is not available in this libtorch build");
    auto& hooks = at::detail::getCUDAHooks();
    if (idx >= 0) {
      hooks.deviceSynchronize(idx);
    } else {
      for (int i = 0; i < hooks.getNumGPUs(); ++i) hooks.deviceSynchronize(i);
    }
    return 0;
  });
  return env.Undefined();
}

// CUDA caching-allocator statistics of one device (bytes, all pools: StatType::AGGREGATE = index 0):
// {allocated, peakAllocated, reserved, peakReserved}; with a second argument true, the peaks are reset afterwards
// (torch.cuda.reset_peak_memory_stats). Throws in a build without CUDA.
Napi::Value CudaMemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t idx = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : 0;
  bool reset = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  double v[4] = {0, 0, 0, 0};
  Guard(env, "cuda.memoryStats", [&]() {
#ifdef VITA_WITH_CUDA
    if (!at::hasCUDA()) TORCH_CHECK(false, "CUDA is not available in this libtorch build");
    const int n = at::detail::getCUDAHooks().getNumGPUs();
    TORCH_CHECK(idx >= 0 && idx < n, "device index ", idx, " out of range (", n, " devices)");
    const auto dev = static_cast<c10::DeviceIndex>(idx);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
    v[0] = static_cast<double>(stats.allocated_bytes[0].current);
    v[1] = static_cast<double>(stats.allocated_bytes[0].peak);
    v[2] = static_cast<double>(stats.reserved_bytes[0].current);
    v[3] = static_cast<double>(stats.reserved_bytes[0].peak);
    if (reset) c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
#else
    (void)idx;
    (void)reset;
    TORCH_CHECK(false, "the addon was built without CUDA (VITA_WITH_CUDA)");
#endif
    return 0;
  });
  auto o = Napi::Object::New(env);
  o.Set("allocated", v[0]);
  o.Set("peakAllocated", v[1]);
  o.Set("reserved", v[2]);
  o.Set("peakReserved", v[3]);
  return o;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("torchVersion", TORCH_VERSION);
  o.Set("threads", at::get_num_threads());
  o.Set("interopThreads", at::get_num_interop_threads());
  o.Set("cuda", at::hasCUDA());
  o.Set("cudaDevices", at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0);
  o.Set("config", at::show_config());
  o.Set("parallel", at::get_parallel_info());
#ifdef VITA_WITH_CUDA
  o.Set("builtWithCuda", true);
#else
  o.Set("builtWithCuda", false);
#endif
  return o;
}

// Same storage and offset? (used by tests for views and in-place ops)
Napi::Value SameData(const Napi::CallbackInfo& info) {
  const at::Tensor& a = TensorOf(info[0], "sameData");
  const at::Tensor& b = TensorOf(info[1], "sameData");
  return Napi::Boolean::New(info.Env(), a.has_storage() && b.has_storage() && a.data_ptr() == b.data_ptr());
}

// ---- gradient checkpointing ---------------------------------------------------------------------------------
//
// checkpoint(fn, inputs[]) runs fn(inputs) without recording the graph, and records one autograd node that, in
// backward, re-runs fn with gradients on and back-propagates through the recomputed graph (PyTorch's reentrant
// checkpoint). The CPU random-number state is restored for the re-run so dropout / drop path masks match.
// The re-run calls JavaScript, which is only possible on the thread that runs JavaScript: libtorch runs CPU
// backward on the calling thread; CUDA graphs run on device threads and are refused with a clear error.

// References to JavaScript functions whose owner died, possibly during garbage collection (where no Node-API
// call that touches JavaScript is allowed): they are released at the start of the next checkpoint call.
std::mutex g_deadRefsMutex;
std::vector<napi_ref> g_deadRefs;

void ReleaseDeadRefs(napi_env env) {
  std::vector<napi_ref> dead;
  {
    std::lock_guard<std::mutex> lock(g_deadRefsMutex);
    dead.swap(g_deadRefs);
  }
  for (napi_ref r : dead) napi_delete_reference(env, r);
}

struct JsFunctionHolder : torch::CustomClassHolder {
  Napi::Env env;
  Napi::FunctionReference fn;
  std::thread::id thread;
  JsFunctionHolder(Napi::Env e, Napi::Function f) : env(e), fn(Napi::Persistent(f)), thread(std::this_thread::get_id()) {}
  ~JsFunctionHolder() override {
    napi_ref r = fn;
    fn.SuppressDestruct();
    std::lock_guard<std::mutex> lock(g_deadRefsMutex);
    g_deadRefs.push_back(r);
  }
  std::vector<at::Tensor> Call(const std::vector<at::Tensor>& inputs, const char* phase) {
    TORCH_CHECK(std::this_thread::get_id() == thread, "the ", phase,
                " pass ran off the JavaScript thread (CUDA backward); gradient checkpointing supports CPU tensors only");
    Napi::HandleScope scope(env);
    auto arr = Napi::Array::New(env, inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) arr.Set(static_cast<uint32_t>(i), Wrap(env, inputs[i]));
    Napi::Value r;
    try {
      r = fn.Call({arr});
    } catch (const Napi::Error& e) {
      TORCH_CHECK(false, "the function threw during ", phase, ": ", e.Message());
    }
    TORCH_CHECK(r.IsArray(), "the function must return an array of tensors");
    auto out = r.As<Napi::Array>();
    std::vector<at::Tensor> res;
    for (uint32_t i = 0; i < out.Length(); ++i) {
      Napi::Value v = out.Get(i);
      TORCH_CHECK(v.IsExternal() && v.As<Napi::External<Holder>>().CheckTypeTag(&kTensorTag),
                  "the function must return tensors only (entry ", i, ")");
      res.push_back(v.As<Napi::External<Holder>>().Data()->t);
    }
    return res;
  }
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs,
                                                c10::intrusive_ptr<JsFunctionHolder> holder) {
    at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
    std::vector<at::Tensor> detached;
    for (const auto& t : inputs) detached.push_back(t.detach());
    auto outs = holder->Call(detached, "forward");
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["fn"] = c10::IValue::make_capsule(holder);
    ctx->saved_data["rng"] = rng;
    c10::List<bool> needs;
    for (const auto& t : inputs) needs.push_back(t.requires_grad());
    ctx->saved_data["needs"] = needs;
    return outs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<JsFunctionHolder>(ctx->saved_data["fn"].toCapsule());
    auto saved = ctx->get_saved_variables();
    auto needs = ctx->saved_data["needs"].toBoolList();
    std::vector<at::Tensor> leaves;
    for (size_t i = 0; i < saved.size(); ++i) {
      at::Tensor d = saved[i].detach();
      if (needs.get(i)) d.set_requires_grad(true);
      leaves.push_back(d);
    }
    auto& gen = const_cast<at::Generator&>(at::detail::getDefaultCPUGenerator());
    at::Tensor now = gen.get_state();
    gen.set_state(ctx->saved_data["rng"].toTensor());
    std::vector<at::Tensor> outs;
    {
      at::AutoGradMode on(true);
      outs = holder->Call(leaves, "backward re-run");
    }
    gen.set_state(now);
    TORCH_CHECK(outs.size() == grads.size(), "the re-run returned ", outs.size(), " tensors, the first run ",
                grads.size());
    std::vector<at::Tensor> o;
    std::vector<at::Tensor> g;
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].requires_grad() && grads[i].defined()) {
        o.push_back(outs[i]);
        g.push_back(grads[i]);
      }
    }
    // backward (not grad): parameters used inside fn accumulate their gradients as in the plain graph.
    if (!o.empty()) torch::autograd::backward(o, g);
    torch::autograd::variable_list result;
    for (size_t i = 0; i < saved.size(); ++i) result.push_back(needs.get(i) ? leaves[i].grad() : at::Tensor());
    result.emplace_back();  // for the holder argument
    return result;
  }
};

Napi::Value Checkpoint(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ReleaseDeadRefs(env);
  if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "checkpoint: expected a function");
  auto inputs = TensorList(env, info[1], "checkpoint", false);
  auto holder = c10::make_intrusive<JsFunctionHolder>(env, info[0].As<Napi::Function>());
  auto outs = Guard(env, "checkpoint", [&]() { return CheckpointFunction::apply(at::TensorList(inputs), holder); });
  auto a = Napi::Array::New(env, outs.size());
  for (size_t i = 0; i < outs.size(); ++i) a.Set(static_cast<uint32_t>(i), Wrap(env, outs[i]));
  return a;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("findOp", Napi::Function::New(env, FindOp));
  exports.Set("opSchema", Napi::Function::New(env, OpSchema));
  exports.Set("call", Napi::Function::New(env, Call));
  exports.Set("fromBytes", Napi::Function::New(env, FromBytes));
  exports.Set("toBytes", Napi::Function::New(env, ToBytes));
  exports.Set("meta", Napi::Function::New(env, Meta));
  exports.Set("strides", Napi::Function::New(env, Strides));
  exports.Set("dispose", Napi::Function::New(env, Dispose));
  exports.Set("isDisposed", Napi::Function::New(env, IsDisposed));
  exports.Set("requiresGrad", Napi::Function::New(env, RequiresGrad));
  exports.Set("setRequiresGrad", Napi::Function::New(env, SetRequiresGrad));
  exports.Set("grad", Napi::Function::New(env, Grad));
  exports.Set("setGrad", Napi::Function::New(env, SetGrad));
  exports.Set("isLeaf", Napi::Function::New(env, IsLeaf));
  exports.Set("gradFn", Napi::Function::New(env, GradFnName));
  exports.Set("backward", Napi::Function::New(env, Backward));
  exports.Set("autogradGrad", Napi::Function::New(env, AutogradGrad));
  exports.Set("setGradEnabled", Napi::Function::New(env, SetGradEnabled));
  exports.Set("isGradEnabled", Napi::Function::New(env, IsGradEnabled));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  exports.Set("manualSeed", Napi::Function::New(env, ManualSeed));
  exports.Set("getRngState", Napi::Function::New(env, GetRngState));
  exports.Set("setRngState", Napi::Function::New(env, SetRngState));
  exports.Set("cudaIsAvailable", Napi::Function::New(env, CudaIsAvailable));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount));
  exports.Set("cudaSynchronize", Napi::Function::New(env, CudaSynchronize));
  exports.Set("cudaMemoryStats", Napi::Function::New(env, CudaMemoryStats));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("sameData", Napi::Function::New(env, SameData));
  exports.Set("checkpoint", Napi::Function::New(env, Checkpoint));
  exports.Set("getAutocast", Napi::Function::New(env, GetAutocast));
  exports.Set("setAutocast", Napi::Function::New(env, SetAutocast));
  exports.Set("autocastNesting", Napi::Function::New(env, AutocastNesting));
  return exports;
}

}  // namespace

NODE_API_MODULE(vit_adapter, Init)
