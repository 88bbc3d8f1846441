"""Small random-weight models (offline) and one training step, for comparing
tfmbs with CPU: GPT-2, BERT, Llama (GQA, rotary, RMSNorm), ViT, MiniLM and a
ResNet-style CNN block."""
import torch
from torch import nn


def _transformers_model(name, attn_implementation):
    import transformers as tf
    if name == "gpt2":
        cfg = tf.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
        return tf.GPT2LMHeadModel(cfg), "lm"
    if name == "bert":
        cfg = tf.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=32)
        return tf.BertForSequenceClassification(cfg), "cls"
    if name == "llama":
        cfg = tf.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                             attn_implementation=attn_implementation)
        return tf.LlamaForCausalLM(cfg), "lm"
    if name == "minilm":
        cfg = tf.BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=12,
                            intermediate_size=96, max_position_embeddings=32)
        return tf.BertModel(cfg), "embed"
    if name == "vit":
        cfg = tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, num_labels=5)
        return tf.ViTForImageClassification(cfg), "image"
    raise ValueError(name)


class ResNetBlock(nn.Module):
    def __init__(self, channels=8, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.stem(x))))
        x = torch.relu(x + self.bn2(self.conv(x)))
        x = nn.functional.adaptive_avg_pool2d(self.avg(x), 1).flatten(1)
        return self.head(x)


MODELS = ("gpt2", "bert", "llama", "minilm", "vit", "resnet")


def make(name, seed=0, attn_implementation="sdpa"):
    """(model, kind): the same weights for the same seed."""
    torch.manual_seed(seed)
    if name == "resnet":
        return ResNetBlock(), "image"
    return _transformers_model(name, attn_implementation)


def batch(kind, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind == "image":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}, torch.randint(0, 5, (2,), generator=g)
    ids = torch.randint(0, 97, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 2, (2,), generator=g)


def loss_of(model, kind, inputs, labels):
    if isinstance(model, ResNetBlock):
        return nn.functional.cross_entropy(model(inputs["pixel_values"]), labels, label_smoothing=0.1)
    if kind == "lm":
        return model(**inputs, labels=inputs["input_ids"]).loss
    if kind == "cls":
        return model(**inputs, labels=labels).loss
    if kind == "image":
        return model(**inputs, labels=labels).loss
    out = model(**inputs).last_hidden_state
    return (out * inputs["attention_mask"].unsqueeze(-1)).square().mean()


def trainer(name, device, fused=False, attn_implementation="sdpa"):
    """(model, step): step() runs one training step (forward, backward,
    clip_grad_norm_, AdamW with foreach or fused) on `device` and returns the
    loss."""
    model, kind = make(name, attn_implementation=attn_implementation)
    model.to(device).train()
    torch.manual_seed(2)  # dropout draws the same numbers on every device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=not fused, fused=fused or None)
    inputs, labels = batch(kind)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    labels = labels.to(device)

    def step():
        opt.zero_grad()
        loss = loss_of(model, kind, inputs, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.detach()
    return model, step


def train_step(name, device, fused=False, steps=2, attn_implementation="sdpa"):
    """Losses, gradients of the last step and the updated weights (on CPU)
    after `steps` training steps on `device`."""
    model, step = trainer(name, device, fused, attn_implementation)
    losses = [step().cpu() for _ in range(steps)]
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    weights = {n: p.detach().cpu() for n, p in model.named_parameters()}
    return losses, grads, weights
