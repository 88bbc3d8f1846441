// tfmbs::fabric_tgemm: a ternary GEMM run directly on one of the fabric's
// engines, for studying the fabric (reference vs fast engine, counters).
// Frames are built per call here; the ternary_linear op keeps them resident.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "aten/native/Common.h"
#include "device/TfmbsDevices.h"
#include "fabric/tgemm.h"

namespace tfmbs {
namespace {

at::Tensor fabric_tgemm(const at::Tensor& weight, const at::Tensor& input,
                        c10::string_view activations, c10::string_view engine) {
  TORCH_CHECK(input.device().type() == kTfmbs,
              "fabric_tgemm: input must be on a tfmbs device, got ", input.device());
  TORCH_CHECK(weight.device() == input.device() || weight.device().is_cpu(),
              "fabric_tgemm: weight is on ", weight.device(), " but input on ", input.device());
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar,
              "fabric_tgemm: weight must be a 2-D int8 tensor of trits, got ", weight.dim(),
              "-D ", weight.scalar_type());
  TORCH_CHECK(input.dim() == 2 && input.size(1) == weight.size(1),
              "fabric_tgemm: input must be [N, ", weight.size(1), "] to match weight ",
              weight.sizes(), ", got ", input.sizes());
  const bool fp32 = activations == "fp32";
  TORCH_CHECK(activations == "int8" || activations == "ternary" || fp32,
              "fabric_tgemm: activations must be 'int8', 'ternary' or 'fp32', got '", activations,
              "'");
  TORCH_CHECK(input.scalar_type() == (fp32 ? at::kFloat : at::kChar), "fabric_tgemm: ",
              activations, " activations need a ", fp32 ? "float32" : "int8", " input, got ",
              input.scalar_type());
  TORCH_CHECK(engine == "fast" || engine == "reference",
              "fabric_tgemm: engine must be 'fast' or 'reference', got '", engine, "'");

  const int64_t rows = weight.size(0), cols = weight.size(1), batch = input.size(0);
  const int tiles = static_cast<int>(fabric_config().tiles);
  at::Tensor w = host(weight).contiguous();
  at::Tensor x = host(input).contiguous();
  at::Tensor out = at::empty({batch, rows}, input.options().dtype(fp32 ? at::kFloat : at::kInt));
  at::Tensor y = cpu_alias(out);
  const auto* trits = w.const_data_ptr<int8_t>();
  const auto kind = fp32 ? fabric::ActivationKind::Fp32
                    : activations == "int8" ? fabric::ActivationKind::Int8
                                            : fabric::ActivationKind::Ternary;
  OpLogScope log;
  fabric::OpCounters counters;
  try {
    if (engine == "reference") {
      auto frame = fabric::LaneMajorFrame::from_trits(trits, rows, cols, tiles);
      counters = log.time_engine([&] {
        return fabric::run_tgemm(nullptr, nullptr, &frame, kind, x.const_data_ptr(), batch, y.mutable_data_ptr());
      });
    } else {
      // Frames built per call: building is the host's part.
      auto frame = fabric::FastFrame::from_trits(trits, rows, cols, tiles);
      counters = log.time_engine([&] {
        return fabric::run_tgemm(&fast_engine(), &frame, nullptr, kind, x.const_data_ptr(), batch,
                                 y.mutable_data_ptr());
      });
    }
  } catch (const std::exception& e) {
    TORCH_CHECK_VALUE(false, "fabric_tgemm: ", e.what());
  }
  c10::DeviceIndex device = input.device().index();
  device_telemetry(device).record(counters);
  if (log.enabled()) {
    log.record.op = "tfmbs::fabric_tgemm";
    log.record.shapes = c10::str(input.sizes(), ", ", weight.sizes());
    log.record.engine = engine == "fast" ? "fabric-fast" : "fabric-reference";
    log.record.device = device;
    log.record.counters = counters;
    log.record.bytes = static_cast<uint64_t>(x.nbytes() + y.nbytes() + w.nbytes());
  }
  return out;
}

TORCH_LIBRARY_FRAGMENT(tfmbs, m) {
  m.def("fabric_tgemm(Tensor weight, Tensor input, str activations=\"int8\", "
        "str engine=\"fast\") -> Tensor");
}

TORCH_LIBRARY_IMPL(tfmbs, PrivateUse1, m) { m.impl("fabric_tgemm", fabric_tgemm); }

}  // namespace
}  // namespace tfmbs
