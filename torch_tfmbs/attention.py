"""Sliding-window (local) attention: torch.ops.tfmbs.sliding_window_attention,
its autograd, and the attention modules built on it and on SDPA.

Query i attends the keys j with i - window < j <= i (causal) or
|i - j| < window (not causal), at O(L * window * D) cost: no L x L matrix.
"""
import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sliding_window_attention", "band_mask", "FabricAttention", "SlidingWindowAttention",
           "register_transformers_attention"]


def sliding_window_attention(q, k, v, window, causal=True, scale=None, attn_mask=None):
    """q [B, Hq, L, D], k and v [B, Hkv, L, D] (Hq a multiple of Hkv:
    grouped-query heads). attn_mask, as SDPA's (bool: True attends; float:
    added to the scores), broadcasts to [B, Hq, L, L] and applies within the
    window. Returns [B, Hq, L, D]."""
    return torch.ops.tfmbs.sliding_window_attention(q, k, v, window, causal, scale, attn_mask)


def _setup_context(ctx, inputs, output):
    q, k, v, window, causal, scale, attn_mask = inputs
    out, logsumexp = output
    ctx.save_for_backward(q, k, v, out, logsumexp, attn_mask)
    ctx.window, ctx.causal, ctx.scale = window, causal, scale


def _backward(ctx, grad_out, _grad_logsumexp):
    q, k, v, out, logsumexp, attn_mask = ctx.saved_tensors
    mask_grad = attn_mask is not None and ctx.needs_input_grad[6]
    grad_q, grad_k, grad_v, grad_scores = torch.ops.tfmbs._sliding_window_attention_backward(
        grad_out.contiguous(), q, k, v, out, logsumexp, ctx.window, ctx.causal, ctx.scale, attn_mask,
        mask_grad)
    grad_mask = grad_scores.sum_to_size(attn_mask.shape).to(attn_mask.dtype) if mask_grad else None
    return grad_q, grad_k, grad_v, None, None, None, grad_mask


torch.library.register_autograd("tfmbs::_sliding_window_attention", _backward,
                                setup_context=_setup_context)


# ------------------------------------------------------------------ modules

_KERNEL_DEVICES = ("cpu", "tfmbs", "meta")  # where tfmbs::sliding_window_attention has a kernel
_warned_band_fallback = False


def band_mask(length, window, causal, device=None):
    """The boolean [L, L] mask of the window (True: attend)."""
    i = torch.arange(length, device=device)
    d = i[:, None] - i[None, :]
    return ((d >= 0) & (d < window)) if causal else (d.abs() < window)


def _local_attention(q, k, v, window, causal, dropout_p, extra_mask):
    """The backend priority of local attention: the windowed kernel where it
    exists and no dropout is asked of it, else SDPA with the band mask."""
    global _warned_band_fallback
    if q.device.type in _KERNEL_DEVICES and dropout_p == 0.0:
        return sliding_window_attention(q, k, v, window, causal, attn_mask=extra_mask)
    if q.device.type not in _KERNEL_DEVICES and not _warned_band_fallback:
        _warned_band_fallback = True
        warnings.warn(f"tfmbs: no sliding-window kernel for {q.device.type} tensors; running "
                      f"SDPA with an L x L band mask (O(L^2) memory)", stacklevel=3)
    mask = band_mask(q.shape[-2], window, causal, q.device)
    if extra_mask is not None:
        mask = mask & extra_mask if extra_mask.dtype == torch.bool else \
            extra_mask.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          enable_gqa=q.shape[1] != k.shape[1])


def _merge_masks(attn_mask, key_padding_mask, batch, heads, length, source, dtype):
    """nn.MultiheadAttention's attn_mask ([L, S] or [B*H, L, S]) and
    key_padding_mask ([B, S]) as one SDPA mask, or None. There a True entry
    blocks; for SDPA a True entry attends. Float masks are added."""
    masks = []
    if attn_mask is not None:
        masks.append(attn_mask.view(batch, heads, length, source) if attn_mask.dim() == 3 else attn_mask)
    if key_padding_mask is not None:
        masks.append(key_padding_mask.view(batch, 1, 1, source))
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        blocked = masks[0]
        for m in masks[1:]:
            blocked = blocked | m
        return ~blocked
    merged = torch.zeros((), dtype=dtype, device=masks[0].device)
    for m in masks:
        merged = merged + (torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
                           if m.dtype == torch.bool else m)
    return merged


class FabricAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention (same constructor, parameters and forward) whose
    attention runs as the engine the project grew from chose its backend:
    sparse=True, window_size=w: the sliding-window kernel
    (tfmbs::sliding_window_attention; SDPA with the band mask where there is
    no kernel, or when dropout asks for it); dense
    (sparse=False): SDPA, CPU's fused kernel on tfmbs, causal with
    use_causal_mask=True. need_weights=True returns the averaged weights as
    nn.MultiheadAttention does, computed densely."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None, dtype=None,
                 *, sparse=False, window_size=None, use_causal_mask=False):
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("FabricAttention: add_bias_kv and add_zero_attn are not supported")
        if sparse and (window_size is None or window_size < 1):
            raise ValueError(f"FabricAttention: sparse=True needs window_size >= 1, got {window_size}")
        super().__init__(embed_dim, num_heads, dropout, bias, False, False, kdim, vdim, batch_first,
                         device, dtype)
        self.sparse, self.window_size, self.use_causal_mask = sparse, window_size, use_causal_mask

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        causal = is_causal or self.use_causal_mask
        if need_weights:
            return self._with_weights(query, key, value, key_padding_mask, attn_mask,
                                      average_attn_weights, causal)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._project(query, key, value)
        batch, length, source = q.shape[0], q.shape[2], k.shape[2]
        mask = _merge_masks(attn_mask, key_padding_mask, batch, self.num_heads, length, source, q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        if self.sparse:
            out = _local_attention(q, k, v, self.window_size, causal, dropout_p, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                 is_causal=causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _project(self, query, key, value):
        """q, k, v as [B, H, L, D] through the module's input projections."""
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(e)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = self.in_proj_bias.split(e) if self.in_proj_bias is not None else (None,) * 3
        heads = [F.linear(x, w, b) for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))]
        return [h.view(h.shape[0], h.shape[1], self.num_heads, self.head_dim).transpose(1, 2) for h in heads]

    def _with_weights(self, query, key, value, key_padding_mask, attn_mask, average, causal):
        mask = attn_mask
        if self.sparse or causal:
            length = query.shape[1 if self.batch_first else 0]
            window = self.window_size if self.sparse else length
            blocked = ~band_mask(length, window, causal, query.device)
            if mask is None:
                mask = blocked
            elif mask.dtype == torch.bool:
                mask = mask | blocked
            else:
                mask = mask.masked_fill(blocked, float("-inf"))
        return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=True,
                               attn_mask=mask, average_attn_weights=average)


class SlidingWindowAttention(FabricAttention):
    """Multi-head local attention: each position attends the `window` keys
    ending at it (causal) or within `window` of it. batch_first by default;
    forward(x) is self-attention."""

    def __init__(self, embed_dim, num_heads, window, causal=True, dropout=0.0, bias=True,
                 batch_first=True, device=None, dtype=None):
        super().__init__(embed_dim, num_heads, dropout, bias, batch_first=batch_first, device=device,
                         dtype=dtype, sparse=True, window_size=window, use_causal_mask=causal)

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        key = query if key is None else key
        value = key if value is None else value
        return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)


# ------------------------------------------------------------- transformers

def _transformers_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                            sliding_window=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    window = sliding_window or getattr(module, "sliding_window", None)
    length = query.shape[2]
    if window and dropout == 0.0 and key.shape[2] == length and getattr(module, "is_causal", True):
        # transformers' mask (the band, and padding if any) applies within the window.
        mask = None if attention_mask is None else attention_mask[..., :length]
        out = sliding_window_attention(query, key, value, window, True, scaling, mask)
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, sliding_window=sliding_window, **kwargs)


def register_transformers_attention(name="tfmbs_sliding_window"):
    """Registers `name` with transformers' attention interface and returns
    it: a model loaded with attn_implementation=name whose config has a
    sliding_window (Mistral, Qwen2, ...) runs its causal local attention
    through tfmbs::sliding_window_attention, padding included; calls with
    dropout, a KV cache longer than the queries or no window go to
    transformers' SDPA attention."""
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(name, _transformers_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
