"""The fabric emulator's speed (issue 5): the fast engine's ternary GEMV
4096x4096 with int8 activations, as time, GOPS and ratios to a dense int8
GEMV and an fp32 GEMV timed in the same run and to the bound of reading the
packed weights once at the measured memory bandwidth; batch 1 with each
resident layout (the 2-bit codes, the PT-5 rows) in cache and from DRAM;
PT-5 decode/encode throughput; the reference engine's speed. The timing loops are C++
(benchmarks/cpp/fabric_bench.cpp, pt5_bench.cpp); this script runs them and
writes the tables."""
import json
import os
import subprocess

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("TFMBS_BUILD_DIR", os.path.join(ROOT, "build")), "tests", "cpp")


def run_json(name, *args):
    out = subprocess.run([os.path.join(BIN, name), *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def main():
    cold_bytes = max(96 << 20, 3 * common.last_level_cache_bytes())
    bench = run_json("fabric_bench", "--cold-bytes", str(cold_bytes))
    machine = bench["machine"]
    rows = []
    for g in bench["gemv_4096x4096"]:
        rows.append({
            "batch": g["batch"], "ternary hot us": g["ternary_int8_hot_us"],
            "ternary cold us": g["ternary_int8_cold_us"], "GOPS hot": g["gops_hot"],
            "dense int8 us": g["dense_int8_us"], "fp32 us": g["fp32_us"],
            "x vs dense int8": g["speedup_vs_dense_int8"], "x vs fp32": g["speedup_vs_fp32"],
            "PT-5 roofline us": g["roofline_pt5_us"],
            "hot / PT-5 roofline": g["ternary_int8_hot_us"] / g["roofline_pt5_us"],
            "cold / PT-5 roofline": g["ternary_int8_cold_us"] / g["roofline_pt5_us"],
        })
    layouts = [{"weights from": where, "codes us (2 bits/weight)": g[f"codes_{key}_us"],
                "PT-5 rows us (1.6 bits/weight)": g[f"pt5_{key}_us"],
                "PT-5 rows / codes": g[f"pt5_{key}_us"] / g[f"codes_{key}_us"],
                "engine's pick us": g[f"ternary_int8_{key}_us"]}
               for g in bench["gemv_4096x4096"] if "codes_hot_us" in g
               for where, key in (("cache (hot)", "hot"), ("DRAM (cold)", "cold"))]
    if layouts:
        common.write_results(
            "fabric_batch1_layouts", "Batch 1, 4096x4096: the codes' VNNI kernel vs the PT-5 rows' lookup-table "
            "kernel", list(layouts[0].keys()), layouts,
            [f"{machine['threads']} threads, ISA {machine['isa']}; the same frame, each kernel forced "
             "(FastEngineOptions::batch1), and the engine's own pick (it reads the PT-5 rows when more than half "
             "the last-level cache of frame bytes went by since the frame's last read)",
             f"cold: rotating over frames totalling {cold_bytes >> 20} MiB of codes"])
    ref = bench["reference_engine_1024x1024"]
    common.write_results(
        "fabric", "Fabric fast engine: ternary GEMV 4096x4096, int8 activations",
        list(rows[0].keys()), rows,
        [f"{machine['threads']} threads, ISA {machine['isa']}, read bandwidth "
         f"{machine['read_bandwidth_gbs']:.1f} GB/s (measured in the same run)",
         "x vs ...: baseline time / ternary hot time; roofline: PT-5 weight bytes / read bandwidth",
         f"cold: rotating over frames totalling {cold_bytes >> 20} MiB (3x this CPU's last-level cache, "
         f"at least 96 MiB)",
         "dense int8 / fp32 baselines: AVX-512 (VNNI) kernels" if machine["isa"] in ("avx512", "amx") else
         "dense int8 / fp32 baselines: plain loops, as this CPU lacks AVX-512 VNNI (the x vs columns "
         "overstate; ternary_linear.md compares with torch's own kernels)",
         f"reference engine 1024x1024 GEMV: {ref['seconds'] * 1e3:.1f} ms, "
         f"{ref['lane_cycles_per_s']:.3g} lane-cycles/s",
         f"frame load (4096x4096, once): {bench['frame_load_4096x4096_ms']:.1f} ms",
         bench.get("note", "")])
    codec = run_json("pt5_bench", "--json")
    common.write_results(
        "pt5_codec", "PT-5 codec throughput (1 thread)",
        ["impl", "packed_bytes", "decode_gb_s_packed", "encode_gb_s_trits"], codec,
        ["goals: decode >= 2 GB/s of packed input, encode >= 1 GB/s of trits"])


if __name__ == "__main__":
    main()
