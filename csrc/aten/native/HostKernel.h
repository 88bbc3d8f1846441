// The tfmbs kernel of an ATen op whose arithmetic is PyTorch's own CPU
// kernel (oneDNN/MKL GEMMs, the vectorized CPU kernels), run directly on
// device memory: HostKernel<at::_ops::add_Tensor>::call has the op's exact
// C++ signature, is registered unboxed for the tfmbs key, and redispatches
// to the CPU kernel with each argument replaced by its CPU view (HostCall).
// Results the kernel allocates land in the device pool (PoolCapture) and
// are adopted as device tensors; in-place and out= results are written
// straight into the destination's memory.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <ATen/core/IListRef.h>
#include <c10/core/DispatchKeySet.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "aten/HostCall.h"
#include "aten/native/Common.h"
#include "device/TfmbsDevices.h"

namespace tfmbs {

// A list of CPU views, passed where the op takes a TensorList or an
// ITensorListRef.
struct HostTensorList {
  std::vector<at::Tensor> tensors;
  operator at::TensorList() const { return tensors; }
  operator at::ITensorListRef() const { return at::ITensorListRef(at::TensorList(tensors)); }
};

// Argument and result types that hold device state: each needs its own
// conversion below, so a new one is a compile error, not a device tensor
// handed to a CPU kernel.
template <class T>
constexpr bool kHoldsDeviceState =
    std::is_same_v<T, at::Tensor> || std::is_same_v<T, std::optional<at::Tensor>> ||
    std::is_same_v<T, at::TensorList> || std::is_same_v<T, at::ITensorListRef> ||
    std::is_same_v<T, std::optional<at::TensorList>> || std::is_same_v<T, c10::List<at::Tensor>> ||
    std::is_same_v<T, c10::List<std::optional<at::Tensor>>> || std::is_same_v<T, at::Generator> ||
    std::is_same_v<T, std::optional<at::Generator>> || std::is_same_v<T, c10::Device> ||
    std::is_same_v<T, std::optional<c10::Device>> || std::is_same_v<T, c10::Storage> ||
    std::is_same_v<T, std::vector<at::Tensor>> || std::is_same_v<T, c10::TensorOptions>;

// How one argument type reaches the CPU kernel (others pass unchanged).
template <class T>
struct HostArg {
  static_assert(!kHoldsDeviceState<std::decay_t<T>>, "tfmbs: no host conversion for this argument type");
  static T convert(HostCall&, T value) { return std::forward<T>(value); }
};
template <>
struct HostArg<const at::Tensor&> {
  static at::Tensor convert(HostCall& call, const at::Tensor& t) { return call.tensor(t); }
};
template <>
struct HostArg<at::Tensor&> {
  static at::Tensor convert(HostCall& call, at::Tensor& t) { return call.tensor(t); }
};
template <>
struct HostArg<const std::optional<at::Tensor>&> {
  static std::optional<at::Tensor> convert(HostCall& call, const std::optional<at::Tensor>& t) {
    return t ? std::optional<at::Tensor>(call.tensor(*t)) : t;
  }
};
template <class List>
HostTensorList host_list(HostCall& call, const List& list) {
  HostTensorList host;
  host.tensors.reserve(list.size());
  for (const at::Tensor& t : list) host.tensors.push_back(call.tensor(t));
  return host;
}
template <>
struct HostArg<at::TensorList> {
  static HostTensorList convert(HostCall& call, at::TensorList list) { return host_list(call, list); }
};
template <>
struct HostArg<const at::ITensorListRef&> {
  static HostTensorList convert(HostCall& call, const at::ITensorListRef& list) {
    return host_list(call, list);
  }
};
// Indices may be CPU tensors, as on CUDA.
template <>
struct HostArg<const c10::List<std::optional<at::Tensor>>&> {
  static c10::List<std::optional<at::Tensor>> convert(HostCall& call,
                                                      const c10::List<std::optional<at::Tensor>>& list) {
    c10::List<std::optional<at::Tensor>> host;
    host.reserve(list.size());
    for (std::optional<at::Tensor> t : list) {
      host.push_back(t ? std::optional<at::Tensor>(call.tensor(*t, /*allow_cpu=*/true)) : t);
    }
    return host;
  }
};
template <>
struct HostArg<std::optional<at::Generator>> {
  static std::optional<at::Generator> convert(HostCall& call, std::optional<at::Generator> g) {
    return call.generator(g);
  }
};
template <>
struct HostArg<std::optional<c10::Device>> {
  static std::optional<c10::Device> convert(HostCall& call, std::optional<c10::Device> device) {
    return device ? std::optional<c10::Device>(call.device_argument(*device)) : device;
  }
};

// How one result type comes back (others pass unchanged). `originals` and
// `hosts` are the arguments as the caller passed them and as the kernel got them.
template <class R>
struct HostResult {
  static_assert(!kHoldsDeviceState<std::decay_t<R>>, "tfmbs: no host conversion for this result type");
  template <class Originals, class Hosts>
  static R convert(const HostCall&, Originals&, Hosts&, R r) { return r; }
};
template <>
struct HostResult<at::Tensor> {
  template <class Originals, class Hosts>
  static at::Tensor convert(const HostCall& call, Originals&, Hosts&, const at::Tensor& r) {
    return call.to_device(r);
  }
};
// An in-place or out= result is the argument the kernel wrote: the caller's
// device tensor, not its view.
template <>
struct HostResult<at::Tensor&> {
  template <class Originals, class Hosts>
  static at::Tensor& convert(const HostCall&, Originals& originals, Hosts& hosts, at::Tensor& r) {
    at::Tensor* found = nullptr;
    find(originals, hosts, r, found, std::make_index_sequence<std::tuple_size_v<Hosts>>());
    TORCH_INTERNAL_ASSERT(found, "tfmbs: an op returned a tensor that is none of its arguments");
    return *found;
  }

 private:
  template <class Originals, class Hosts, size_t... I>
  static void find(Originals& originals, Hosts& hosts, const at::Tensor& r, at::Tensor*& found,
                   std::index_sequence<I...>) {
    (match(std::get<I>(originals), std::get<I>(hosts), r, found), ...);
  }
  static void match(at::Tensor& original, const at::Tensor& host, const at::Tensor& r,
                    at::Tensor*& found) {
    if (!found && host.is_same(r)) found = &original;
  }
  template <class A, class B>
  static void match(A&, const B&, const at::Tensor&, at::Tensor*&) {}
};
template <>
struct HostResult<std::vector<at::Tensor>> {
  template <class Originals, class Hosts>
  static std::vector<at::Tensor> convert(const HostCall& call, Originals&, Hosts&,
                                         std::vector<at::Tensor> r) {
    for (at::Tensor& t : r) t = call.to_device(t);
    return r;
  }
};
template <class... R>
struct HostResult<std::tuple<R...>> {
  template <class Originals, class Hosts>
  static std::tuple<R...> convert(const HostCall& call, Originals& originals, Hosts& hosts,
                                  std::tuple<R...> r) {
    return std::apply(
        [&](auto&... element) {
          return std::tuple<R...>(HostResult<R>::convert(call, originals, hosts, element)...);
        },
        r);
  }
};

// Records the call in the device's telemetry and, while a profiler records,
// in the op log.
void count_host_kernel(const HostCall& call, const char* name, const char* overload,
                       OpLogScope& log);

template <class Op, class Schema = typename Op::schema>
struct HostKernel;

template <class Op, class R, class... Args>
struct HostKernel<Op, R(Args...)> {
  static R call(Args... args) {
    HostCall host;
    OpLogScope log;
    std::tuple<Args&...> originals(args...);
    // Braced initialisation converts the arguments left to right.
    std::tuple<decltype(HostArg<Args>::convert(host, std::declval<Args>()))...> hosts{
        HostArg<Args>::convert(host, std::forward<Args>(args))...};
    const c10::DeviceIndex device = host.begin(Op::name);
    auto run = [&]() -> R {
      PoolCapture capture(device);
      return std::apply(
          [](auto&... a) -> R {
            return Op::redispatch(c10::DispatchKeySet(c10::DispatchKey::CPU), a...);
          },
          hosts);
    };
    if constexpr (std::is_void_v<R>) {
      run();
      host.end();
      count_host_kernel(host, Op::name, Op::overload_name, log);
    } else {
      R result = run();
      host.end();
      count_host_kernel(host, Op::name, Op::overload_name, log);
      return HostResult<R>::convert(host, originals, hosts, result);
    }
  }
};

}  // namespace tfmbs
