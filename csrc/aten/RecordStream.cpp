// Tensor.record_stream on tfmbs. CUDA's caching allocator holds a freed
// block back until the streams recorded on it have finished their work;
// on tfmbs the work queued on a stream holds the tensors it uses
// (device/StreamWork.h), so their blocks are not freed before it has run,
// recorded or not. What stays is CUDA's argument check: the stream is one
// of the tensor's device.
#include <ATen/core/Tensor.h>
#include <c10/core/Stream.h>
#include <torch/library.h>

namespace tfmbs {
namespace {

void record_stream(at::Tensor& self, c10::Stream stream) {
  TORCH_CHECK(stream.device() == self.device(), "record_stream: the stream is on ", stream.device(),
              ", the tensor on ", self.device(), "; expected a stream of the tensor's device");
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) { m.impl("record_stream", record_stream); }

}  // namespace
}  // namespace tfmbs
