"""torch.compile (inductor) vs eager, on tfmbs and on CPU, side by side in
one run: a GPT-2 forward (4 layers, width 256, batch 4 x 128 tokens) and an
MLP training step (3 x Linear(512) + GELU, AdamW, batch 64). The goal: on
tfmbs compiled <= eager, with the ratio CPU gets.
"""
import common
import torch
import transformers as tf

import torch_tfmbs  # noqa: F401


def gpt2_forward(device):
    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=1000, n_positions=256, n_embd=256, n_layer=4, n_head=4)
    model = tf.GPT2LMHeadModel(cfg).to(device).eval()
    model.config.use_cache = False
    ids = torch.randint(0, 1000, (4, 128), generator=torch.Generator().manual_seed(1)).to(device)

    def make(fn):
        def run():
            with torch.no_grad():
                return fn(input_ids=ids).logits
        return run
    return make(model), make(torch.compile(model))


def mlp_step(device):
    def make(compiled):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 512),
                                    torch.nn.GELU(), torch.nn.Linear(512, 10)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        forward = torch.compile(model) if compiled else model
        x = torch.randn(64, 512, generator=torch.Generator().manual_seed(1)).to(device)
        y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2)).to(device)

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(forward(x), y)
            loss.backward()
            opt.step()
            return loss
        return step
    return make(False), make(True)


def main():
    rows = []
    for name, build in (("GPT-2 forward", gpt2_forward), ("MLP training step", mlp_step)):
        row = {"case": name}
        for device in ("cpu", "tfmbs"):
            eager, compiled = build(device)
            compiled()  # the compile itself is not timed
            eager_t, compiled_t = common.median_seconds_interleaved([eager, compiled], 15, warmup=3)
            row[f"{device} eager ms"] = eager_t * 1e3
            row[f"{device} compiled ms"] = compiled_t * 1e3
            row[f"{device} compiled / eager"] = compiled_t / eager_t
        rows.append(row)
    common.write_results("compile", "torch.compile (inductor) vs eager, tfmbs and CPU", list(rows[0].keys()),
                         rows, ["compiled / eager < 1: compiling helps", "default mode, fp32"])


if __name__ == "__main__":
    main()
