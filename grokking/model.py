"""The models: a decoder-only causal transformer whose architecture is a set of switches (LayerNorm
before or after each residual add or none, biases, learned or sinusoidal positions, activation, MLP
width, logits over the answers or the whole vocabulary), so that openai/grok's model (the paper's
code), this project's pre-LN model and Nanda et al.'s one-layer model are all configs; and an MLP
baseline. Both read the sequence format from the task's `Layout`.

Analysis reads activations at named hook points (as Nanda et al.'s `hook_post`), never by index:
`FeedForward.hook_pre` and `hook_post` are the MLP's neurons before and after the activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grokking.config import ACTIVATIONS, OPENAI_VOCAB, RunConfig
from grokking.layout import Layout


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """Fixed position encodings as openai/grok computes them: sin(pos / 10000^(i/width)) at even i,
    cos(pos / 10000^((i-1)/width)) at odd i."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    i = torch.arange(width)[None, :]
    angle = position / 10000 ** ((i - i % 2) / width)
    return torch.where(i % 2 == 0, angle.sin(), angle.cos()).float()


def layer_norm(config: RunConfig) -> nn.Module:
    return nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()


def split_heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[batch, length, width] -> [batch, heads, length, width / heads]."""
    batch, length, width = t.shape
    return t.view(batch, length, n_heads, width // n_heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[batch, heads, length, head width] -> [batch, length, width]."""
    batch, heads, length, head_width = t.shape
    return t.transpose(1, 2).reshape(batch, length, heads * head_width)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # the heads' query, key and value maps, fused
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of `h`, split into heads."""
        q, k, v = self.qkv(h).split(h.shape[-1], dim=2)
        return split_heads(q, self.n_heads), split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(h)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.proj(merge_heads(out))


class FeedForward(nn.Module):
    """The MLP of a block: w_in, the activation between the hook points `hook_pre` and `hook_post`
    (identities whose forward hooks see the neurons before and after the activation), w_out, dropout.
    The layers are named 0-3 as in the Sequential that held them, so checkpoints keep their keys."""

    def __init__(self, d_model: int, width: int, activation: str, dropout: float, bias: bool):
        super().__init__()
        self.add_module("0", nn.Linear(d_model, width, bias=bias))
        self.add_module("1", activation_module(activation))
        self.add_module("2", nn.Linear(width, d_model, bias=bias))
        self.add_module("3", nn.Dropout(dropout))
        self.hook_pre, self.hook_post = nn.Identity(), nn.Identity()

    @property
    def w_in(self) -> nn.Linear:
        return self._modules["0"]  # type: ignore[return-value]

    @property
    def activation(self) -> nn.Module:
        return self._modules["1"]  # type: ignore[return-value]

    @property
    def w_out(self) -> nn.Linear:
        return self._modules["2"]  # type: ignore[return-value]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        neurons = self.hook_post(self.activation(self.hook_pre(self.w_in(h))))
        return self._modules["3"](self.w_out(neurons))


def activation_module(name: str) -> nn.Module:
    return getattr(nn, ACTIVATIONS[name])()


class Block(nn.Module):
    """Attention, then MLP, each added to the residual stream; LayerNorm before each (pre, with a
    final LayerNorm before the unembedding) or after each residual add (post, as openai/grok)."""

    def __init__(self, config: RunConfig):
        super().__init__()
        d_model, dropout = config.d_model, config.dropout
        attention_dropout = dropout if config.attention_dropout else 0.0  # openai/grok: the MLP output only
        attention_bias = config.bias and config.attention_bias  # Nanda et al.: biases in the MLP only
        self.post = config.layer_norm and config.norm_position == "post"
        self.ln1 = layer_norm(config)
        self.attn = CausalSelfAttention(d_model, config.n_heads, attention_dropout, attention_bias)
        self.ln2 = layer_norm(config)
        self.mlp = FeedForward(d_model, config.hidden_width, config.activation, dropout, config.bias)
        self.drop = nn.Dropout(attention_dropout)

    def attention_input(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.post else self.ln1(h)

    def add_attention(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return self.ln1(h + attended) if self.post else h + attended

    def add_mlp(self, h: torch.Tensor) -> torch.Tensor:
        return self.ln2(h + self.mlp(h)) if self.post else h + self.mlp(self.ln2(h))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.add_mlp(self.add_attention(h, self.drop(self.attn(self.attention_input(h)))))

    def forward_split(
        self, prefix: torch.Tensor, suffix: torch.Tensor, x: torch.Tensor, keep: slice | None, causal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same block on a sequence split in two (no dropout; see `Transformer.forward`).

        `prefix` [n_x, k, width] holds the positions before y (`x, op`, `eos, x, op` or `x` alone) once
        per value of x (under the causal mask they depend on x alone); `suffix` [batch, s, width] holds
        the positions from y on (`y, =`, or `y, =, c`) per example, and `x` [batch] picks each example's
        prefix row. With `keep` (the last block), only those suffix positions are computed. `causal`
        [length, length] is the causal mask of the whole sequence.
        """
        split = prefix.shape[1]
        prefix_mask, suffix_mask = causal[:split, :split], causal[split : split + suffix.shape[1]]
        qp, kp, vp = self.attn.heads(self.attention_input(prefix))
        qs, ks, vs = self.attn.heads(self.attention_input(suffix))
        keys, values = torch.cat([kp[x], ks], dim=2), torch.cat([vp[x], vs], dim=2)
        if keep is not None:
            suffix = suffix[:, keep]
            attended = attend(qs[:, :, keep], keys, values, suffix_mask[keep])
        else:
            attended = attend(qs, keys, values, suffix_mask)
        suffix = self.add_mlp(self.add_attention(suffix, self.attn.proj(merge_heads(attended))))
        if keep is None:
            attended = attend(qp, kp, vp, prefix_mask)
            prefix = self.add_mlp(self.add_attention(prefix, self.attn.proj(merge_heads(attended))))
        return prefix, suffix


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out: for 1-4 tokens it beats the fused kernel on CPU, and unlike
    that kernel it has batching rules for `torch.func.vmap` (many seeds at once)."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


class Transformer(nn.Module):
    def __init__(self, layout: Layout, config: RunConfig):
        super().__init__()
        self.layout = layout
        self.n_classes = layout.n_elements  # the elements, tokens 0..n_classes-1, are the possible answers
        vocab_size = model_vocab_size(layout, config)
        length = layout.length
        self.token_embedding = nn.Embedding(vocab_size, config.d_model)
        if config.positions == "learned":
            self.position_embedding = nn.Embedding(length, config.d_model)
        else:
            self.register_buffer("sinusoids", sinusoidal_positions(length, config.d_model), persistent=False)
        self.register_buffer("causal", torch.ones(length, length, dtype=torch.bool).tril(), persistent=False)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        post = config.layer_norm and config.norm_position == "post"
        self.ln_f = nn.Identity() if post else layer_norm(config)  # post-LN blocks end normalized
        n_out = vocab_size if config.logits == "vocab" else self.n_classes
        self.unembed = nn.Linear(config.d_model, n_out, bias=False)
        self.dropout = config.dropout

    def positions(self) -> torch.Tensor:
        return self.position_embedding.weight if hasattr(self, "position_embedding") else self.sinusoids

    def forward_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at every position, [batch, length, n_out]: the plain reference computation."""
        h = self.token_embedding(tokens) + self.positions()[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_f(h))

    def forward(self, tokens: torch.Tensor, scored: bool = False) -> torch.Tensor:
        """Logits of the answer at `=`, [batch, n_out]; with `scored`, of every token the loss scores:
        the answer and, with the end token, the eos after it ([batch, 2, n_out]).

        Equal (to float rounding) to `forward_all(tokens)` at those positions, but the positions before y
        are computed once per value of x and the last block runs only where logits are read. That needs
        the layout's contract (`Layout.shares_prefix`: before y only x and fixed symbols, which the task's
        table is checked against when it is built); a layout without it, and dropout in training (whose
        masks must stay per example), take the plain forward.
        """
        layout = self.layout
        first = layout.y  # the suffix, computed per row, starts at y
        read = layout.scored if scored else layout.scored[:1]  # positions whose logits are returned
        if (self.training and self.dropout > 0) or not layout.shares_prefix:
            logits = self.forward_all(tokens)[:, read.start : read.stop]
        else:
            keep = slice(read.start - first, read.stop - first)  # the positions read, within the suffix
            x_values = torch.arange(self.n_classes, device=tokens.device)
            prefix_tokens = tokens[:1, :first].expand(len(x_values), -1).clone()
            prefix_tokens[:, layout.x] = x_values
            positions = self.positions()
            prefix = self.token_embedding(prefix_tokens) + positions[:first]
            suffix = self.token_embedding(tokens[:, first:]) + positions[first : tokens.shape[1]]
            x = tokens[:, layout.x]
            for i, block in enumerate(self.blocks):
                last = i == len(self.blocks) - 1
                prefix, suffix = block.forward_split(prefix, suffix, x, keep if last else None, self.causal)
            logits = self.unembed(self.ln_f(suffix[:, 0] if suffix.shape[1] == 1 else suffix))
        return logits[:, 0] if logits.dim() == 3 and logits.shape[1] == 1 else logits


class MLP(nn.Module):
    """The baseline without attention: embeddings of x and y (one shared table) concatenated, then
    `n_layers` hidden layers of width `hidden_width`, then logits of the answer."""

    def __init__(self, layout: Layout, config: RunConfig):
        super().__init__()
        self.layout = layout
        self.token_embedding = nn.Embedding(model_vocab_size(layout, config), config.d_model)
        layers: list[nn.Module] = []
        width = 2 * config.d_model
        for _ in range(config.n_layers):
            layers += [
                nn.Linear(width, config.hidden_width),
                activation_module(config.activation),
                nn.Dropout(config.dropout),
            ]
            width = config.hidden_width
        self.hidden = nn.Sequential(*layers)
        self.unembed = nn.Linear(width, layout.n_elements)

    def forward(self, tokens: torch.Tensor, scored: bool = False) -> torch.Tensor:
        """Logits of the answer, [batch, n_classes], from the operands alone."""
        pair = self.token_embedding(tokens[:, [self.layout.x, self.layout.y]]).flatten(start_dim=1)
        return self.unembed(self.hidden(pair))


@torch.no_grad()
def nanda_init_(model: nn.Module, d_model: int) -> None:
    """Nanda et al.'s initialisation: embeddings and weight matrices N(0, 1/d_model), the unembedding
    N(0, 1/n_classes), biases zero; LayerNorm parameters keep their ones and zeros."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            fan = module.weight.shape[0] if name == "unembed" else d_model
            module.weight.normal_(0.0, fan**-0.5)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


def model_vocab_size(layout: Layout, config: RunConfig) -> int:
    """The task's tokens, or openai/grok's larger vocabulary with --vocab openai (the task's tokens keep
    their ids, the others follow them)."""
    return OPENAI_VOCAB if config.vocab == "openai" else layout.vocab_size


def build_model(layout: Layout, config: RunConfig) -> Transformer | MLP:
    """The model for `config` over sequences in `layout`, initialised from `config.seed` alone."""
    kind = MLP if config.model == "mlp" else Transformer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = kind(layout, config)
        if config.init == "nanda":
            nanda_init_(model, config.d_model)
        return model


def noisy_weights(model: nn.Module, std: float) -> dict[str, torch.Tensor]:
    """Every parameter plus Gaussian noise of `std`, for one training forward (openai/grok's weight noise:
    its Linear, LayerNorm and Embedding layers add fresh noise to their weights and biases in training);
    the gradient reaches the parameters unchanged, as through openai's sum."""
    return {name: p + torch.randn_like(p) * std for name, p in model.named_parameters()}


def stacks_seeds(config: RunConfig) -> dict[str, bool]:
    """Whether the model's random parts can train seeds stacked in one tensor as if apart: dropout masks and
    weight noise draw from one random stream, so stacked seeds would not get their own draws."""
    return {"--dropout": config.dropout == 0, "--weight-noise": config.weight_noise == 0}


def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters together (Omnigrok's lens on grokking)."""
    return torch.sqrt(sum(p.detach().float().pow(2).sum() for p in model.parameters())).item()


def layer_of(parameter_name: str) -> str:
    """The layer a parameter belongs to: its top module, with the index inside a list of blocks or layers
    (`blocks.0.attn.qkv.weight` -> `blocks.0`, `unembed.weight` -> `unembed`)."""
    parts = parameter_name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def layer_weight_norms(model: nn.Module) -> dict[str, float]:
    """The L2 norm of each layer's parameters, as `weight_norm/<layer>` (the embeddings, each block, the
    unembedding): where weight growth or decay happens, e.g. the last layer's norm spikes of the slingshot."""
    squares: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        layer = layer_of(name)
        squares[layer] = squares.get(layer, 0) + param.detach().float().pow(2).sum()
    return {f"weight_norm/{layer}": value.sqrt().item() for layer, value in squares.items()}
