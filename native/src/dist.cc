// Distributed training on libtorch's c10d: TCPStore rendezvous (rank 0 hosts), process groups (Gloo; NCCL in CUDA
// builds that ship its headers), collectives with timeouts, a differentiable all-reduce (SyncBatchNorm) and the
// gradient bucketing of DistributedDataParallel with hooks on the gradient accumulators.
//
// Everything is exposed as `vit_adapter::dist_*` operators through the dispatcher, like the tensor operations, so
// the JavaScript side reaches it with the addon's generic `call` (src/engine/dist.ts, src/train/ddp.ts). Groups and
// DDP states live in registries keyed by integer ids. Collectives are synchronous for the caller: they wait for the
// work with the group's timeout; a failure names the lost peer where it can be determined.
//
// libtorch 1.x: process groups derive from c10d::ProcessGroup. libtorch 2.x: they derive from c10d::Backend (the
// ProcessGroup became a dispatcher over backends); the collectives used here have the same signatures on both.

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/library.h>
#include <torch/version.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif

// Gloo: its headers come with Debian's libgloo-dev or a libtorch folder that ships them.
#if __has_include(<gloo/config.h>)
#define VITA_HAVE_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

// NCCL: only in CUDA builds whose include path has nccl.h.
#if defined(VITA_WITH_CUDA) && __has_include(<nccl.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#define VITA_HAVE_NCCL 1
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace vita_dist {

#if TORCH_VERSION_MAJOR >= 2
using PgBase = c10d::Backend;
#else
using PgBase = c10d::ProcessGroup;
#endif

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Group {
  int rank = 0;
  int size = 1;
  std::string backend;
  std::string masterAddr;
  int port = 0;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;   // the TCPStore (server on rank 0)
  c10::intrusive_ptr<c10d::Store> vstore;  // our keys ("vita/")
  c10::intrusive_ptr<PgBase> pg;
  at::Device commDevice{at::kCPU};  // where small bookkeeping tensors (object gather, shape checks) live
  int64_t failures = 0;
};

// Registries. Deliberately never destroyed: a process that exits without destroy() must not run c10d destructors
// (they join threads that may wait on peers) during static destruction; the OS closes its sockets.
std::mutex g_mu;
auto* g_groups = new std::map<int64_t, std::shared_ptr<Group>>();
int64_t g_nextGroup = 1;

std::shared_ptr<Group> GetGroup(int64_t id) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_groups->find(id);
  TORCH_CHECK(it != g_groups->end(), "process group ", id, " does not exist (destroyed?)");
  return it->second;
}

bool Contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

std::string FirstLine(const std::string& s) {
  auto p = s.find("\nException raised from");
  std::string r = p == std::string::npos ? s : s.substr(0, p);
  while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
  return r;
}

// After a collective failed with a transport error, finds which peers are gone. Two ranks: the other one. More:
// each survivor posts a key on the store and waits briefly for the others' keys; missing ranks are reported (rank 0
// itself when the store, which it hosts, is unreachable).
std::vector<int> LostRanks(Group& g) {
  if (g.size == 2) return {1 - g.rank};
  std::vector<int> lost;
  const int64_t epoch = ++g.failures;
  try {
    const std::string prefix = "alive/" + std::to_string(epoch) + "/";
    g.vstore->set(prefix + std::to_string(g.rank), std::vector<uint8_t>{1});
    auto grace = std::min<std::chrono::milliseconds>(g.timeout, std::chrono::milliseconds(3000));
    auto until = Clock::now() + grace;
    for (;;) {
      lost.clear();
      for (int r = 0; r < g.size; ++r) {
        if (r != g.rank && !g.vstore->check({prefix + std::to_string(r)})) lost.push_back(r);
      }
      if (lost.empty() || Clock::now() >= until) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  } catch (const std::exception&) {
    if (g.rank != 0) return {0};
  }
  return lost;
}

bool LooksLikePeerFailure(const std::string& m) {
  for (const char* k : {"closed by peer", "Connection closed", "Connection reset", "Connection refused", "Broken pipe",
                        "Timed out", "timed out", "Timeout", "timeout", "Socket", "socket", "NCCL communicator was aborted",
                        "ncclRemoteError", "ncclSystemError"}) {
    if (Contains(m, k)) return true;
  }
  return false;
}

[[noreturn]] void Fail(Group& g, const std::string& what, const std::string& raw) {
  std::string msg = FirstLine(raw);
  std::ostringstream os;
  os << what << " failed on rank " << g.rank << " of " << g.size;
  if (LooksLikePeerFailure(msg)) {
    auto lost = LostRanks(g);
    if (!lost.empty()) {
      os << ": lost rank " << lost[0];
      if (lost.size() > 1) {
        os << " (unresponsive ranks:";
        for (int r : lost) os << " " << r;
        os << ")";
      }
      os << (Contains(msg, "imed out") || Contains(msg, "imeout") ? " (no answer within the timeout of " : " (connection lost; timeout ")
         << g.timeout.count() << " ms)";
    }
  }
  os << ": " << msg;
  TORCH_CHECK(false, os.str());
}

void Wait(Group& g, const c10::intrusive_ptr<c10d::Work>& w, const char* what) {
  try {
    // The transport enforces the timeout itself; the wait's own limit is a backstop.
    w->wait(g.timeout + std::chrono::milliseconds(5000));
  } catch (const std::exception& e) {
    Fail(g, what, e.what());
  }
}

template <typename F>
c10::intrusive_ptr<c10d::Work> Launch(Group& g, const char* what, F&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    Fail(g, what, e.what());
  }
}

// ---- process groups -------------------------------------------------------------------------------------------

std::vector<int64_t> DistAvailable() {
#ifdef VITA_HAVE_GLOO
  const int64_t gloo = 1;
#else
  const int64_t gloo = 0;
#endif
#ifdef VITA_HAVE_NCCL
  const int64_t nccl = 1;
#else
  const int64_t nccl = 0;
#endif
  return {gloo, nccl};
}

bool IsLoopback(const std::string& a) {
  return a == "localhost" || a == "::1" || a.rfind("127.", 0) == 0;
}

std::string Where(const std::string& addr, int64_t port) { return addr + ":" + std::to_string(port); }

int64_t DistInit(std::string backend, int64_t rank, int64_t worldSize, std::string masterAddr, int64_t masterPort,
                 int64_t timeoutMs) {
  TORCH_CHECK(worldSize >= 1, "worldSize must be at least 1, got ", worldSize);
  TORCH_CHECK(rank >= 0 && rank < worldSize, "rank must be in [0, ", worldSize - 1, "], got ", rank);
  TORCH_CHECK(masterPort >= 1 && masterPort <= 65535, "masterPort must be in [1, 65535], got ", masterPort);
  TORCH_CHECK(timeoutMs >= 1, "timeoutMs must be positive, got ", timeoutMs);
  TORCH_CHECK(backend == "gloo" || backend == "nccl", "backend must be \"gloo\" or \"nccl\", got \"", backend, "\"");
  auto g = std::make_shared<Group>();
  g->rank = static_cast<int>(rank);
  g->size = static_cast<int>(worldSize);
  g->backend = backend;
  g->masterAddr = masterAddr;
  g->port = static_cast<int>(masterPort);
  g->timeout = std::chrono::milliseconds(timeoutMs);

  // Rendezvous. Rank 0 hosts the store but does not let it wait for the clients: the explicit check below does,
  // with messages that name the missing ranks.
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(masterPort);
  so.isServer = rank == 0;
  so.numWorkers = static_cast<std::size_t>(worldSize);
  so.waitWorkers = false;
  so.timeout = g->timeout;
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(masterAddr, so);
  } catch (const std::exception& e) {
    std::string m = FirstLine(e.what());
    if (rank == 0) {
      TORCH_CHECK(false, "rank 0 could not host the rendezvous store on ", Where(masterAddr, masterPort),
                  (Contains(m, "in use") ? " (the port is already in use: choose another masterPort)" : ""), ": ", m);
    }
    TORCH_CHECK(false, "rank ", rank, " could not reach rank 0's rendezvous store at ", Where(masterAddr, masterPort),
                " within ", timeoutMs, " ms (is rank 0 running, with this address and port?): ", m);
  }
  g->vstore = c10::make_intrusive<c10d::PrefixStore>("vita", g->store);

  // Every rank announces its world size; each compares with rank 0's (and rank 0 with everyone's).
  const std::string me = std::to_string(rank);
  const int64_t joined = g->vstore->add("rank/" + me, 1);
  TORCH_CHECK(joined == 1, "rank ", rank, " joined the rendezvous at ", Where(masterAddr, masterPort),
              " twice (two processes were started with the same rank)");
  const std::string ws = std::to_string(worldSize);
  g->vstore->set("ws/" + me, std::vector<uint8_t>(ws.begin(), ws.end()));
  auto readWs = [&](int r) {
    auto v = g->vstore->get("ws/" + std::to_string(r));
    return std::string(v.begin(), v.end());
  };
  if (rank == 0) {
    // Poll the ranks' announcements: a mismatch fails at once, a missing rank at the timeout.
    const auto until = Clock::now() + g->timeout;
    std::vector<char> seen(static_cast<size_t>(worldSize), 0);
    seen[0] = 1;
    for (;;) {
      std::string missing;
      for (int r = 1; r < worldSize; ++r) {
        if (seen[r]) continue;
        if (g->vstore->check({"ws/" + std::to_string(r)})) {
          std::string other = readWs(r);
          TORCH_CHECK(other == ws, "mismatched world size: rank 0 was started with worldSize ", ws, ", rank ", r,
                      " with ", other);
          seen[r] = 1;
        } else {
          missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        }
      }
      if (missing.empty()) break;
      TORCH_CHECK(Clock::now() < until, "rendezvous at ", Where(masterAddr, masterPort), ": rank(s) ", missing,
                  " did not join within ", timeoutMs, " ms (worldSize ", worldSize, "); lost rank ",
                  missing.substr(0, missing.find(',')));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } else {
    std::string root;
    try {
      root = readWs(0);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rendezvous at ", Where(masterAddr, masterPort), ": rank 0 did not answer within ", timeoutMs,
                  " ms: ", FirstLine(e.what()));
    }
    TORCH_CHECK(root == ws, "mismatched world size: rank ", rank, " was started with worldSize ", ws,
                ", rank 0 with ", root);
  }

  auto pgStore = c10::make_intrusive<c10d::PrefixStore>("pg", g->store);
  try {
    if (backend == "gloo") {
#ifdef VITA_HAVE_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (IsLoopback(masterAddr)) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(masterAddr == "::1" ? "::1" : "127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      opts->threads = 2;
      g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(pgStore, g->rank, g->size, opts);
#else
      TORCH_CHECK(false, "this addon was built without Gloo headers (install libgloo-dev and rebuild)");
#endif
    } else {
#ifdef VITA_HAVE_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(pgStore, g->rank, g->size, opts);
      g->commDevice = at::Device(at::kCUDA, c10::impl::getDeviceGuardImpl(at::kCUDA)->getDevice().index());
#else
      TORCH_CHECK(false, "this addon was built without NCCL (it needs a CUDA libtorch and nccl.h)");
#endif
    }
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "creating the ", backend, " process group (rank ", rank, " of ", worldSize, "): ",
                FirstLine(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "creating the ", backend, " process group (rank ", rank, " of ", worldSize, "): ",
                FirstLine(e.what()));
  }
  std::lock_guard<std::mutex> lock(g_mu);
  int64_t id = g_nextGroup++;
  (*g_groups)[id] = g;
  return id;
}

void DistDestroy(int64_t id) {
  std::shared_ptr<Group> g;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_groups->find(id);
    if (it == g_groups->end()) return;
    g = it->second;
    g_groups->erase(it);
  }
  // The last reference goes here (unless a DDP call is in flight): the group joins its threads, rank 0's store stops.
  g.reset();
}

// ---- collectives --------------------------------------------------------------------------------------------

c10d::ReduceOp ParseOp(const std::string& op) {
  if (op == "sum" || op == "avg") return c10d::ReduceOp(c10d::ReduceOp::SUM);
  if (op == "max") return c10d::ReduceOp(c10d::ReduceOp::MAX);
  if (op == "min") return c10d::ReduceOp(c10d::ReduceOp::MIN);
  TORCH_CHECK(false, "reduce op must be sum, avg, max or min, got \"", op, "\"");
}

// Groups tensors by (dtype, device), keeping order within each group.
std::vector<std::vector<size_t>> Coalesce(const std::vector<at::Tensor>& ts) {
  std::vector<std::vector<size_t>> groups;
  std::vector<std::pair<at::ScalarType, at::Device>> keys;
  for (size_t i = 0; i < ts.size(); ++i) {
    TORCH_CHECK(ts[i].defined(), "tensor ", i, " is undefined");
    TORCH_CHECK(ts[i].layout() == at::kStrided, "tensor ", i, " is not dense");
    std::pair<at::ScalarType, at::Device> k{ts[i].scalar_type(), ts[i].device()};
    auto it = std::find(keys.begin(), keys.end(), k);
    if (it == keys.end()) {
      keys.push_back(k);
      groups.push_back({i});
    } else {
      groups[static_cast<size_t>(it - keys.begin())].push_back(i);
    }
  }
  return groups;
}

at::Tensor Flatten(const std::vector<at::Tensor>& ts, const std::vector<size_t>& idx) {
  int64_t n = 0;
  for (size_t i : idx) n += ts[i].numel();
  at::Tensor flat = at::empty({n}, ts[idx[0]].options().requires_grad(false));
  int64_t off = 0;
  for (size_t i : idx) {
    const auto k = ts[i].numel();
    flat.narrow(0, off, k).view(ts[i].sizes()).copy_(ts[i].detach());
    off += k;
  }
  return flat;
}

void Unflatten(const at::Tensor& flat, const std::vector<at::Tensor>& ts, const std::vector<size_t>& idx) {
  int64_t off = 0;
  for (size_t i : idx) {
    const auto k = ts[i].numel();
    ts[i].detach().copy_(flat.narrow(0, off, k).view(ts[i].sizes()));  // bumps the shared version counter
    off += k;
  }
}

void AllReduceList(Group& g, const std::vector<at::Tensor>& ts, const std::string& op, const char* what) {
  at::NoGradGuard ng;
  c10d::AllreduceOptions o;
  o.reduceOp = ParseOp(op);
  o.timeout = g.timeout;
  for (const auto& idx : Coalesce(ts)) {
    const at::Tensor& first = ts[idx[0]];
    if (op == "avg") {
      TORCH_CHECK(at::isFloatingType(first.scalar_type()), "avg needs floating-point tensors, got ",
                  first.scalar_type(), " (use sum)");
    }
    std::vector<at::Tensor> buf{Flatten(ts, idx)};
    auto w = Launch(g, what, [&]() { return g.pg->allreduce(buf, o); });
    Wait(g, w, what);
    if (op == "avg") buf[0].div_(g.size);
    Unflatten(buf[0], ts, idx);
  }
}

void DistAllReduce(int64_t id, std::vector<at::Tensor> tensors, std::string op) {
  auto g = GetGroup(id);
  AllReduceList(*g, tensors, op, "allReduce");
}

void DistBroadcast(int64_t id, std::vector<at::Tensor> tensors, int64_t root) {
  auto g = GetGroup(id);
  TORCH_CHECK(root >= 0 && root < g->size, "root must be a rank in [0, ", g->size - 1, "], got ", root);
  at::NoGradGuard ng;
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.rootTensor = 0;
  o.timeout = g->timeout;
  for (const auto& idx : Coalesce(tensors)) {
    std::vector<at::Tensor> buf{Flatten(tensors, idx)};
    auto w = Launch(*g, "broadcast", [&]() { return g->pg->broadcast(buf, o); });
    Wait(*g, w, "broadcast");
    if (g->rank != root) Unflatten(buf[0], tensors, idx);
  }
}

// All-gathers one contiguous tensor of the same numel on every rank.
std::vector<at::Tensor> RawAllGather(Group& g, const at::Tensor& t, const char* what) {
  std::vector<at::Tensor> in{t.contiguous()};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < g.size; ++r) out[0].push_back(at::empty_like(in[0]));
  c10d::AllgatherOptions o;
  o.timeout = g.timeout;
  auto w = Launch(g, what, [&]() { return g.pg->allgather(out, in, o); });
  Wait(g, w, what);
  return out[0];
}

std::string Describe(const std::vector<int64_t>& sig) {
  std::ostringstream os;
  os << c10::toString(static_cast<at::ScalarType>(sig[0])) << "[";
  for (int64_t d = 0; d < sig[1]; ++d) os << (d ? ", " : "") << sig[2 + d];
  os << "]";
  return os.str();
}

std::vector<at::Tensor> DistAllGather(int64_t id, at::Tensor t) {
  auto g = GetGroup(id);
  at::NoGradGuard ng;
  TORCH_CHECK(t.defined() && t.layout() == at::kStrided, "allGather needs a dense tensor");
  TORCH_CHECK(t.dim() <= 16, "allGather supports up to 16 dimensions");
  // Shapes and dtypes must agree: compare them first (a mismatched all-gather would corrupt or hang).
  std::vector<int64_t> sig(18, -1);
  sig[0] = static_cast<int64_t>(t.scalar_type());
  sig[1] = t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) sig[2 + d] = t.size(d);
  auto sigT = at::tensor(sig, at::kLong).to(g->commDevice);
  auto sigs = RawAllGather(*g, sigT, "allGather");
  for (int r = 0; r < g->size; ++r) {
    auto c = sigs[r].cpu();
    std::vector<int64_t> other(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + 18);
    TORCH_CHECK(other == sig, "tensors differ between ranks: rank ", g->rank, " has ", Describe(sig),
                ", rank ", r, " has ", Describe(other));
  }
  return RawAllGather(*g, t.detach(), "allGather");
}

std::vector<std::string> DistAllGatherObject(int64_t id, std::string value) {
  auto g = GetGroup(id);
  at::NoGradGuard ng;
  auto len = at::tensor(std::vector<int64_t>{static_cast<int64_t>(value.size())}, at::kLong).to(g->commDevice);
  auto lens = RawAllGather(*g, len, "allGatherObject");
  int64_t maxLen = 1;
  std::vector<int64_t> sizes;
  for (auto& l : lens) {
    sizes.push_back(l.cpu().item<int64_t>());
    maxLen = std::max(maxLen, sizes.back());
  }
  auto bytes = at::zeros({maxLen}, at::kByte);
  if (!value.empty()) std::memcpy(bytes.data_ptr<uint8_t>(), value.data(), value.size());
  auto all = RawAllGather(*g, bytes.to(g->commDevice), "allGatherObject");
  std::vector<std::string> out;
  for (int r = 0; r < g->size; ++r) {
    auto c = all[r].cpu();
    out.emplace_back(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(sizes[r]));
  }
  return out;
}

void DistBarrier(int64_t id) {
  auto g = GetGroup(id);
  c10d::BarrierOptions o;
  o.timeout = g->timeout;
  auto w = Launch(*g, "barrier", [&]() { return g->pg->barrier(o); });
  Wait(*g, w, "barrier");
}

// Differentiable all-reduce (sum): backward all-reduces the output gradient.
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& t, int64_t id) {
    ctx->saved_data["id"] = id;
    auto g = GetGroup(id);
    at::Tensor out = t.detach().clone(at::MemoryFormat::Contiguous);
    AllReduceList(*g, {out}, "sum", "allReduceAutograd");
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto g = GetGroup(ctx->saved_data["id"].toInt());
    at::Tensor grad = grads[0].defined() ? grads[0].detach().clone(at::MemoryFormat::Contiguous) : at::Tensor();
    TORCH_CHECK(grad.defined(), "allReduceAutograd: undefined output gradient");
    AllReduceList(*g, {grad}, "sum", "allReduceAutograd (backward)");
    return {grad, at::Tensor()};
  }
};

at::Tensor DistAllReduceAutograd(int64_t id, at::Tensor t) {
  return AllReduceSum::apply(t, id);
}

// ---- DistributedDataParallel: bucketed gradient all-reduce driven by gradient-accumulator hooks ------------------

struct Bucket {
  std::vector<size_t> params;   // indices into Ddp::params
  std::vector<int64_t> offsets;
  int64_t numel = 0;
  at::Tensor flat;
  size_t pending = 0;
  bool launched = false;
  bool inBackward = false;
  Clock::time_point launchedAt;
  c10::intrusive_ptr<c10d::Work> work;
};

struct Ddp {
  std::weak_ptr<Group> group;
  std::vector<at::Tensor> params;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucketOf;
  std::vector<char> ready;      // gradient accumulated in this synchronising backward
  std::vector<char> zeroFilled; // grad created as zeros by finish (unused parameter without a gradient)
  bool findUnused = false;
  bool armed = false;
  bool sync = false;
  bool finishing = false;
  size_t next = 0;
  std::mutex mu;

  std::shared_ptr<Group> G() {
    auto g = group.lock();
    TORCH_CHECK(g, "the process group of this DistributedDataParallel was destroyed");
    return g;
  }

  void LaunchBucket(Group& g, Bucket& b) {
    at::NoGradGuard ng;
    for (size_t k = 0; k < b.params.size(); ++k) {
      const at::Tensor& p = params[b.params[k]];
      const at::Tensor& grad = p.grad();
      auto dst = b.flat.narrow(0, b.offsets[k], p.numel());
      if (grad.defined()) dst.view(p.sizes()).copy_(grad);
      else dst.zero_();
    }
    std::vector<at::Tensor> buf{b.flat};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
    o.timeout = g.timeout;
    b.work = Launch(g, "DistributedDataParallel all-reduce", [&]() { return g.pg->allreduce(buf, o); });
    b.launched = true;
    b.inBackward = !finishing;
    b.launchedAt = Clock::now();
  }

  // Buckets start strictly in order on every rank, so that the ranks' collectives match.
  void LaunchReady(Group& g) {
    while (next < buckets.size() && buckets[next].pending == 0) LaunchBucket(g, buckets[next++]);
  }

  void MarkReady(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (!armed || !sync || finishing) return;
    TORCH_CHECK(!ready[i], "DistributedDataParallel: parameter index ", i,
                " received a gradient twice in one synchronising backward; call prepareBackward before each backward");
    ready[i] = 1;
    Bucket& b = buckets[bucketOf[i]];
    if (--b.pending == 0) {
      auto g = G();
      LaunchReady(*g);
    }
  }
};

// Runs after a parameter's AccumulateGrad node (its .grad holds this backward's gradient). A FunctionPostHook of our
// own: its interface is the same in libtorch 1.x and 2.x (LambdaPostHook's constructor is not).
struct ReadyHook : public torch::autograd::FunctionPostHook {
  std::weak_ptr<Ddp> ddp;
  size_t index;
  ReadyHook(std::weak_ptr<Ddp> d, size_t i) : ddp(std::move(d)), index(i) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto d = ddp.lock()) d->MarkReady(index);
    return outputs;
  }
};

std::mutex g_ddpMu;
auto* g_ddps = new std::map<int64_t, std::shared_ptr<Ddp>>();
int64_t g_nextDdp = 1;

std::shared_ptr<Ddp> GetDdp(int64_t id) {
  std::lock_guard<std::mutex> lock(g_ddpMu);
  auto it = g_ddps->find(id);
  TORCH_CHECK(it != g_ddps->end(), "DistributedDataParallel ", id, " does not exist (disposed?)");
  return it->second;
}

int64_t DdpNew(int64_t groupId, std::vector<at::Tensor> params, int64_t capBytes, bool findUnused) {
  auto g = GetGroup(groupId);
  TORCH_CHECK(capBytes >= 1, "bucket cap must be positive, got ", capBytes, " bytes");
  auto d = std::make_shared<Ddp>();
  d->group = g;
  d->params = params;
  d->findUnused = findUnused;
  const size_t n = params.size();
  d->bucketOf.assign(n, 0);
  d->ready.assign(n, 0);
  d->zeroFilled.assign(n, 0);
  // Buckets over the parameters in reverse order (gradients of the last layers are ready first), one open bucket per
  // dtype/device, closed when it reaches the cap (1 MiB for the first).
  using Key = std::pair<at::ScalarType, at::Device>;
  struct Open {
    Key key;
    size_t bucket;
    bool first;  // the first bucket of its dtype/device
  };
  std::vector<Open> open;
  std::vector<Key> seen;  // dtype/devices that have had a bucket
  for (size_t j = n; j-- > 0;) {
    const at::Tensor& p = params[j];
    TORCH_CHECK(p.requires_grad() && p.is_leaf(), "DistributedDataParallel: parameter index ", j,
                " must be a leaf that requires grad");
    TORCH_CHECK(p.layout() == at::kStrided, "DistributedDataParallel: parameter index ", j, " is not dense");
    const Key key{p.scalar_type(), p.device()};
    auto it = std::find_if(open.begin(), open.end(), [&](const Open& e) { return e.key == key; });
    if (it == open.end()) {
      d->buckets.emplace_back();
      const bool first = std::find(seen.begin(), seen.end(), key) == seen.end();
      if (first) seen.push_back(key);
      open.push_back({key, d->buckets.size() - 1, first});
      it = open.end() - 1;
    }
    const size_t bi = it->bucket;
    Bucket& b = d->buckets[bi];
    b.params.push_back(j);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    d->bucketOf[j] = bi;
    // As torch's DDP, the first bucket of each dtype/device holds at most 1 MiB, so that communication starts early.
    const int64_t cap = it->first ? std::min<int64_t>(capBytes, int64_t(1) << 20) : capBytes;
    if (b.numel * static_cast<int64_t>(p.element_size()) >= cap) open.erase(it);
  }
  for (auto& b : d->buckets) {
    const at::Tensor& p = params[b.params[0]];
    b.flat = at::zeros({b.numel}, p.options().requires_grad(false));
  }
  std::weak_ptr<Ddp> weak = d;
  for (size_t i = 0; i < n; ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params[i]);
    TORCH_CHECK(acc, "DistributedDataParallel: no gradient accumulator for parameter index ", i);
    acc->add_post_hook(std::make_unique<ReadyHook>(weak, i));
    d->accumulators.push_back(std::move(acc));
  }
  std::lock_guard<std::mutex> lock(g_ddpMu);
  int64_t id = g_nextDdp++;
  (*g_ddps)[id] = d;
  return id;
}

std::vector<int64_t> DdpBuckets(int64_t id) {
  auto d = GetDdp(id);
  std::vector<int64_t> out;
  for (auto& b : d->buckets) out.push_back(static_cast<int64_t>(b.params.size()));
  return out;
}

void DdpPrepare(int64_t id, bool sync) {
  auto d = GetDdp(id);
  std::lock_guard<std::mutex> lock(d->mu);
  TORCH_CHECK(!d->finishing, "DistributedDataParallel: prepareBackward during finishBackward");
  // A previous synchronising step that was never finished: its launched buckets must still complete on every rank.
  TORCH_CHECK(!(d->armed && d->sync && d->next > 0), "DistributedDataParallel: prepareBackward called again before "
              "finishBackward of the previous synchronising backward (its all-reduces are in flight)");
  d->armed = true;
  d->sync = sync;
  d->next = 0;
  std::fill(d->ready.begin(), d->ready.end(), 0);
  std::fill(d->zeroFilled.begin(), d->zeroFilled.end(), 0);
  for (auto& b : d->buckets) {
    b.pending = b.params.size();
    b.launched = false;
    b.inBackward = false;
    b.work.reset();
  }
}

// Returns [ms blocked in finish, buckets, overlapped buckets, bytes, overlap ms], or [] when not a synchronising step.
// A bucket counts as overlapped when it started during backward and is not the last bucket (the last one starts with
// the last gradients, when nothing is left to overlap with); overlap ms runs from the first bucket's start during
// backward to the call of finish.
std::vector<double> DdpFinish(int64_t id) {
  auto d = GetDdp(id);
  std::unique_lock<std::mutex> lock(d->mu);
  if (!d->armed) return {};
  d->armed = false;
  if (!d->sync) return {};
  auto g = d->G();
  const auto t0 = Clock::now();
  d->finishing = true;
  struct Reset {
    Ddp* d;
    ~Reset() { d->finishing = false; }
  } reset{d.get()};
  at::NoGradGuard ng;
  const size_t n = d->params.size();
  std::vector<char> usedHere(d->ready.begin(), d->ready.end());
  std::vector<size_t> missing;
  for (size_t i = 0; i < n; ++i) {
    if (d->ready[i]) continue;
    missing.push_back(i);
    at::Tensor& p = d->params[i];
    if (!p.grad().defined()) {
      p.mutable_grad() = at::zeros_like(p);
      d->zeroFilled[i] = 1;
    }
    d->ready[i] = 1;
    --d->buckets[d->bucketOf[i]].pending;
  }
  d->LaunchReady(*g);
  TORCH_INTERNAL_ASSERT(d->next == d->buckets.size());
  // Which parameters were used on some rank (after the buckets, in the same order on every rank).
  at::Tensor usedAll;
  if (d->findUnused) {
    auto used = at::empty({static_cast<int64_t>(n)}, at::kInt);
    for (size_t i = 0; i < n; ++i) used.data_ptr<int>()[i] = static_cast<int>(usedHere[i]);
    std::vector<at::Tensor> buf{used.to(g->commDevice)};
    c10d::AllreduceOptions o;
    o.timeout = g->timeout;
    auto w = Launch(*g, "DistributedDataParallel (unused parameters)", [&]() { return g->pg->allreduce(buf, o); });
    Wait(*g, w, "DistributedDataParallel (unused parameters)");
    usedAll = buf[0].cpu().contiguous();
  }
  double bytes = 0;
  int64_t overlapped = 0;
  double overlapMs = 0;
  if (!d->buckets.empty() && d->buckets[0].inBackward) {
    overlapMs = std::chrono::duration<double, std::milli>(t0 - d->buckets[0].launchedAt).count();
  }
  for (size_t bi = 0; bi < d->buckets.size(); ++bi) {
    Bucket& b = d->buckets[bi];
    Wait(*g, b.work, "DistributedDataParallel all-reduce");
    b.work.reset();
    b.flat.div_(g->size);
    for (size_t k = 0; k < b.params.size(); ++k) {
      at::Tensor& p = d->params[b.params[k]];
      p.mutable_grad().copy_(b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes()));
    }
    bytes += static_cast<double>(b.numel) * static_cast<double>(b.flat.element_size());
    if (b.inBackward && bi + 1 < d->buckets.size()) ++overlapped;
  }
  // Parameters no rank used keep their gradient untouched (a zero-filled one becomes undefined again), as torch.
  for (size_t i = 0; i < n; ++i) {
    bool unusedEverywhere = usedAll.defined() ? usedAll.data_ptr<int>()[i] == 0 : !usedHere[i];
    if (d->zeroFilled[i] && (unusedEverywhere || !d->findUnused)) d->params[i].mutable_grad().reset();
  }
  const double ms = MsSince(t0);
  if (!d->findUnused && !missing.empty()) {
    std::ostringstream os;
    os << "parameter indices [";
    for (size_t k = 0; k < missing.size(); ++k) os << (k ? ", " : "") << missing[k];
    os << "] received no gradient in this step (findUnusedParameters is off)";
    TORCH_CHECK(false, os.str());
  }
  return {ms, static_cast<double>(d->buckets.size()), static_cast<double>(overlapped), bytes, overlapMs};
}

void DdpFree(int64_t id) {
  std::shared_ptr<Ddp> d;
  {
    std::lock_guard<std::mutex> lock(g_ddpMu);
    auto it = g_ddps->find(id);
    if (it == g_ddps->end()) return;
    d = it->second;
    g_ddps->erase(it);
  }
  // The hooks hold weak references: they become no-ops when the state goes.
}

}  // namespace vita_dist

TORCH_LIBRARY_FRAGMENT(vit_adapter, m) {
  m.def("dist_available() -> int[]", &vita_dist::DistAvailable);
  m.def("dist_init(str backend, int rank, int world_size, str master_addr, int master_port, int timeout_ms) -> int",
        &vita_dist::DistInit);
  m.def("dist_destroy(int group) -> ()", &vita_dist::DistDestroy);
  m.def("dist_all_reduce(int group, Tensor[] tensors, str op) -> ()", &vita_dist::DistAllReduce);
  m.def("dist_broadcast(int group, Tensor[] tensors, int root) -> ()", &vita_dist::DistBroadcast);
  m.def("dist_all_gather(int group, Tensor t) -> Tensor[]", &vita_dist::DistAllGather);
  m.def("dist_all_gather_object(int group, str value) -> str[]", &vita_dist::DistAllGatherObject);
  m.def("dist_barrier(int group) -> ()", &vita_dist::DistBarrier);
  m.def("dist_all_reduce_autograd(int group, Tensor t) -> Tensor", &vita_dist::DistAllReduceAutograd);
  m.def("dist_ddp_new(int group, Tensor[] params, int bucket_cap_bytes, bool find_unused) -> int", &vita_dist::DdpNew);
  m.def("dist_ddp_buckets(int ddp) -> int[]", &vita_dist::DdpBuckets);
  m.def("dist_ddp_prepare(int ddp, bool sync) -> ()", &vita_dist::DdpPrepare);
  m.def("dist_ddp_finish(int ddp) -> float[]", &vita_dist::DdpFinish);
  m.def("dist_ddp_free(int ddp) -> ()", &vita_dist::DdpFree);
}
