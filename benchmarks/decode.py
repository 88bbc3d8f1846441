"""Greedy decoding with transformers' generate: tfmbs vs CPU fp32 and int8.

A Llama-shaped model built from its config (6 layers, width 2048, MLP 5632,
16 heads / 4 KV heads, vocab 32000; random init, seed 0, eval mode; no hub
access), batch 1, a 32-token prompt, N new tokens (do_sample=False,
min_new_tokens = max_new_tokens: every side generates N). Three sides in one
run, interleaved (a, b, c, a, b, c, ...), median of the repeats:
  * fp32:  the model on CPU;
  * int8:  quantize_dynamic(model, {nn.Linear}, qint8), x86 engine, on CPU;
  * tfmbs: torch_tfmbs.convert(model) (every nn.Linear -> TFMBSLinear, PT-5
           weights, int8 activations, latent weights dropped), then .to("tfmbs").
A streamer stamps the time of each token: prefill = prompt -> first token,
decode = the N - 1 steps after it (ms/token and tokens/s are of those).
For tfmbs also: PT-5 weight bytes / memory read bandwidth (the roofline of a
token), and from one generate under torch.profiler the self CPU time per
decode step of the ternary linear op and of every other op (host ops).
`--quick`: fewer tokens and repeats.
"""
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from a config: nothing to download

import common
import torch
import transformers as tf
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from transformers.generation.streamers import BaseStreamer

import torch_tfmbs
from torch_tfmbs.nn import TFMBSLinear

QUICK = "--quick" in sys.argv
PROMPT = 32
NEW = 16 if QUICK else 64
REPEATS = 3 if QUICK else 7
TERNARY_OP = "tfmbs::ternary_linear"
MARK = "decode.token"  # profiler event at each token the streamer gets


class TokenClock(BaseStreamer):
    """generate's streamer: the time of each put (the prompt, then each new
    token); with mark=True also a profiler event there."""

    def __init__(self, mark=False):
        self.times, self.mark = [], mark

    def put(self, value):
        self.times.append(time.perf_counter())
        if self.mark:
            with record_function(MARK):
                pass

    def end(self):
        pass

    def prefill(self):
        return self.times[1] - self.times[0]

    def per_token(self):
        return (self.times[-1] - self.times[1]) / (len(self.times) - 2)


def build_models():
    cfg = tf.LlamaConfig(num_hidden_layers=6, hidden_size=2048, intermediate_size=5632,
                         num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)
    torch.manual_seed(0)
    fp = tf.LlamaForCausalLM(cfg).eval()
    torch.backends.quantized.engine = "x86"
    int8 = torch.ao.quantization.quantize_dynamic(fp, {nn.Linear}, dtype=torch.qint8)  # a copy
    tern, report = torch_tfmbs.convert(fp)  # a copy; lm_head (not tied) included
    tern = tern.to("tfmbs")
    gen = tf.GenerationConfig(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, use_cache=True,
                              bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                              pad_token_id=cfg.eos_token_id)
    for m in (fp, int8, tern):
        m.generation_config = gen
    return cfg, {"fp32": (fp, "cpu"), "int8": (int8, "cpu"), "tfmbs": (tern, "tfmbs")}, report


def generate(model, device, ids, clock):
    with torch.inference_mode():
        out = model.generate(ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                             streamer=clock)
    return out[0, ids.shape[1]:].cpu()


def agreement(sides, seq):
    """Each side's logits on `seq` (teacher-forced) against fp32's: {side:
    (mean cosine, share of positions with fp32's top-1)}, and fp32's median
    lead of the top-1 logit over the second."""
    with torch.inference_mode():
        logits = {n: m(seq.to(d)).logits[0].float().cpu() for n, (m, d) in sides.items()}
    ref = logits["fp32"]
    top2 = ref.topk(2, dim=-1).values
    return ({n: (float(torch.cosine_similarity(lg, ref, dim=-1).mean()),
                 float((lg.argmax(-1) == ref.argmax(-1)).float().mean())) for n, lg in logits.items()},
            float((top2[:, 0] - top2[:, 1]).median()))


def profile_tfmbs(model, ids):
    """(ternary op s, host ops s, host op calls) per decode step, from one
    generate under torch.profiler: the self CPU time of the events between
    the first and the last token, the ternary op's own children counted
    with it; and that generate's seconds per decode step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        clock = TokenClock(mark=True)
        generate(model, "tfmbs", ids, clock)
    events = prof.events()
    marks = sorted(e.time_range.start for e in events if e.name == MARK)
    first, last = marks[1], marks[-1]  # marks[0]: the prompt
    ternary_us = host_us = host_calls = 0
    for e in events:
        if e.name == MARK or not first <= e.time_range.start <= last:
            continue
        top = e
        while top.cpu_parent is not None and top.name != TERNARY_OP:
            top = top.cpu_parent
        if top.name == TERNARY_OP:
            ternary_us += e.self_cpu_time_total
        else:
            host_us += e.self_cpu_time_total
            host_calls += e.cpu_parent is None
    steps = len(marks) - 2
    return ternary_us / 1e6 / steps, host_us / 1e6 / steps, host_calls / steps, clock.per_token()


def main():
    torch_tfmbs.set_fallback_mode("allow")
    bw = common.read_bandwidth()
    print(f"memory read bandwidth: {bw / 1e9:.1f} GB/s", flush=True)
    cfg, sides, report = build_models()
    print(report, flush=True)
    tern = sides["tfmbs"][0]
    layers = [m for m in tern.modules() if isinstance(m, TFMBSLinear)]
    pt5_bytes = sum(m.packed_bytes() for m in layers)
    head_bytes = tern.lm_head.packed_bytes() if isinstance(tern.lm_head, TFMBSLinear) else 0
    roof = pt5_bytes / bw
    ids = torch.randint(3, cfg.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(1))

    clocks = {name: [] for name in sides}
    tokens = {}

    def run(name):
        def fn():
            clock = TokenClock()
            tokens[name] = generate(*sides[name], ids, clock)
            clocks[name].append(clock)
        return fn

    torch_tfmbs.reset_fallback_stats()
    warmup = 1
    totals = common.median_seconds_interleaved([run(n) for n in sides], REPEATS, warmup=warmup)
    fallbacks = torch_tfmbs.fallback_stats()
    tern_op, host, host_calls, profiled = profile_tfmbs(tern, ids)
    agree, lead = agreement(sides, torch.cat([ids[0], tokens["fp32"]])[None])

    per_token = {n: statistics.median(c.per_token() for c in clocks[n][warmup:]) for n in sides}
    prefill = {n: statistics.median(c.prefill() for c in clocks[n][warmup:]) for n in sides}
    rows = []
    for name, total in zip(sides, totals):
        same = int((tokens[name] == tokens["fp32"]).sum())
        diff = (tokens[name] != tokens["fp32"]).nonzero()
        row = {"side": name, "prefill ms": prefill[name] * 1e3, "ms / token": per_token[name] * 1e3,
               "tokens/s": 1 / per_token[name], "tokens/s with prefill": NEW / total,
               "tfmbs speed / this": per_token[name] / per_token["tfmbs"],
               "tokens = fp32's": f"{same}/{NEW}" + (f" (first differs: {int(diff[0])})" if len(diff) else ""),
               "logits cos to fp32": agree[name][0], "top-1 = fp32's": agree[name][1],
               "roofline ms": "-", "ternary op ms / token": "-", "host ops ms / token": "-",
               "ms / token / (roofline + host ops)": "-"}
        if name == "tfmbs":
            row.update({"roofline ms": roof * 1e3, "ternary op ms / token": tern_op * 1e3,
                        "host ops ms / token": host * 1e3,
                        "ms / token / (roofline + host ops)": per_token[name] / (roof + host)})
        rows.append(row)
        print(row, flush=True)
    mib = 2 ** 20
    common.write_results(
        "decode", "Greedy decoding (transformers generate), Llama-shaped 6 x 2048: tfmbs vs CPU fp32 / int8"
        + (" (--quick)" if QUICK else ""), list(rows[0].keys()), rows,
        [f"model: LlamaForCausalLM(6 layers, hidden 2048, MLP 5632, 16 heads / 4 KV heads, vocab 32000), "
         f"random init (seed 0), eval; batch 1, prompt {PROMPT} random tokens, {NEW} new tokens, greedy "
         f"(do_sample=False, min_new_tokens=max_new_tokens), KV cache, attention sdpa",
         f"median of {REPEATS} interleaved runs after {warmup} warm-up; prefill = prompt to first token; "
         f"ms / token and tokens/s = the {NEW - 1} decode steps after it (a streamer stamps each token); "
         f"tokens/s with prefill = {NEW} / the whole generate call; tfmbs speed / this = this side's "
         f"ms / token over tfmbs's",
         "fp32 = the model on CPU; int8 = torch.ao.quantization.quantize_dynamic({nn.Linear}, qint8), x86 "
         "engine, every nn.Linear including lm_head, fp32 activations in and out",
         f"tfmbs = torch_tfmbs.convert(model) then .to('tfmbs'): {len(layers)} nn.Linear -> TFMBSLinear "
         f"(PT-5 weights, int8 activations, latent fp weights dropped), lm_head included so that both "
         f"quantized sides quantize the same layers (BitNet b1.58 models keep it in higher precision; "
         f"fp32 on tfmbs it would read {cfg.vocab_size * cfg.hidden_size * 4 / mib:.0f} MiB a token, the "
         f"other ternary weights together "
         f"{(pt5_bytes - head_bytes) / mib:.0f} MiB); embedding and norms fp32 on tfmbs",
         f"ternary weight bytes (PT-5 + scales, from the TFMBSLinear modules): {pt5_bytes / mib:.1f} MiB "
         f"(lm_head {head_bytes / mib:.1f} MiB); roofline ms = those bytes / the memory read bandwidth "
         f"measured in this run, {bw / 1e9:.1f} GB/s (torch.sum over 1 GiB)",
         f"ternary op / host ops ms / token: self CPU time per decode step under torch.profiler (CPU "
         f"activity) in one more tfmbs generate: {TERNARY_OP} (its child ops included) / every other "
         f"op ({host_calls:.0f} top-level op calls a token); the profiler's own cost inflates both "
         f"(profiled ms / token: {profiled * 1e3:.3g}); per token, time outside any op (Python: "
         f"generate's loop, module calls) is in neither",
         f"ops that fell back to CPU on tfmbs during the timed generates: "
         f"{fallbacks if fallbacks else 'none'}",
         "tokens = fp32's: generated tokens equal to fp32's at the same position (a ternary model "
         "differs from its fp32 original: expected, not a failure); once one differs the contexts "
         "differ, so also, teacher-forced on fp32's prompt + generated tokens: logits cos to fp32 "
         "(mean over positions) and top-1 = fp32's (share of positions); the random init's logits "
         f"are flat at the top (fp32's top-1 leads the second by a median {lead:.3f}), so small "
         "errors flip greedy choices",
         f"threads: torch {torch.get_num_threads()} (intra-op), fabric TFMBS_THREADS="
         f"{os.environ.get('TFMBS_THREADS', 'default (all cores)')}, {os.cpu_count()} cores"])


if __name__ == "__main__":
    main()
