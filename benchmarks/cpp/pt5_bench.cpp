// PT-5 codec throughput, one thread, per implementation: decode in GB/s of
// packed input, encode in GB/s of trits (one byte each). Two working sets:
// cache-resident (compute bound) and larger than the last-level cache.
// Usage: pt5_bench [--json]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fabric/cpu_features.h"
#include "fabric/pt5_codec.h"
#include "fabric/pt5_codec_detail.h"

namespace pt5 = tfmbs::fabric::pt5;
using tfmbs::fabric::Isa;

namespace {

template <class Fn>
double best_seconds(Fn fn, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  return best;
}

struct Impl {
  const char* name;
  void (*encode)(const int8_t*, size_t, uint8_t*);
  void (*decode)(const uint8_t*, size_t, int8_t*);
};

}  // namespace

int main(int argc, char** argv) {
  const bool json = argc > 1 && std::strcmp(argv[1], "--json") == 0;
  std::vector<Impl> impls;
  for (Isa isa : tfmbs::fabric::supported_isas()) {
    const pt5::detail::Codec c = pt5::detail::codec(isa);
    impls.push_back({tfmbs::fabric::isa_name(isa), c.encode, c.decode});
  }

  std::mt19937 rng(1);
  std::uniform_int_distribution<int> d(-1, 1);
  if (json) std::printf("[\n");
  bool first = true;
  for (size_t n_trits : {size_t{160000}, size_t{160000000}}) {  // 32 KB / 32 MB packed
    std::vector<int8_t> trits(n_trits), back(n_trits);
    for (auto& t : trits) t = static_cast<int8_t>(d(rng));
    std::vector<uint8_t> packed(pt5::packed_size(n_trits));
    const double bytes_packed = static_cast<double>(packed.size());
    const int reps = n_trits > 1000000 ? 5 : 2000;
    for (const Impl& impl : impls) {
      const int r = impl.name[0] == 's' ? (reps > 100 ? reps / 20 : 2) : reps;
      const double enc = best_seconds([&] { impl.encode(trits.data(), n_trits, packed.data()); }, r);
      const double dec = best_seconds([&] { impl.decode(packed.data(), n_trits, back.data()); }, r);
      if (back != trits) {
        std::fprintf(stderr, "%s: round trip mismatch\n", impl.name);
        return 1;
      }
      const double dec_gbs = bytes_packed / dec / 1e9, enc_gbs = static_cast<double>(n_trits) / enc / 1e9;
      if (json) {
        std::printf("%s  {\"impl\": \"%s\", \"packed_bytes\": %zu, \"decode_gb_s_packed\": %.3f, "
                    "\"encode_gb_s_trits\": %.3f}",
                    first ? "" : ",\n", impl.name, packed.size(), dec_gbs, enc_gbs);
      } else {
        std::printf("%-7s packed %9zu B: decode %7.2f GB/s packed (%6.2f GB/s trits out), "
                    "encode %7.2f GB/s trits\n",
                    impl.name, packed.size(), dec_gbs, dec_gbs * 5, enc_gbs);
      }
      first = false;
    }
  }
  if (json) std::printf("\n]\n");
  return 0;
}
