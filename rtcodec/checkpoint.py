"""The published checkpoint layout: weight-norm folding, training-only keys, and clear mismatch errors.

Every model class mixes in `PublishedCheckpointMixin`, so `model.load_state_dict(torch.load(path))` takes a
published file as it is: `X.weight_g`/`X.weight_v` (or the newer `X.parametrizations.weight.original0/1`)
are folded into `X.weight` once, the training-only heads and the positional tables are dropped without
being allocated, and any remaining mismatch raises `CheckpointError` naming what the file holds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

PUBLISHED_FILES = {
    "FACodecEncoder": "ns3_facodec_encoder.bin",
    "FACodecDecoder": "ns3_facodec_decoder.bin",
    "FACodecEncoderV2": "ns3_facodec_encoder_v2.bin",
    "FACodecDecoderV2": "ns3_facodec_decoder_v2.bin",
    "FACodecRedecoder": "ns3_facodec_redecoder.bin",
}

# Heads used only in training (f0/phone predictors and gradient-reversal classifiers).
TRAINING_ONLY_PREFIXES = (
    "f0_predictor.",
    "phone_predictor.",
    "res_f0_predictor.",
    "res_phone_predictor.",
    "x_timbre_predictor.",
    "content_f0_predictor.",
    "prosody_phone_predictor.",
)
# The sinusoidal tables of the transformers: only their first row is ever used (see layers/transformer.py).
POSITION_TABLE_SUFFIX = "position_emb.pe"

_WEIGHT_NORM_PAIRS = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)
_MAX_LISTED_KEYS = 8


class CheckpointError(ValueError):
    """A state dict that does not fit the model it is loaded into."""


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`g * v / ||v||`, the norm over every dim but 0 (for a transposed conv, dim 0 is the input channel)."""
    v32 = v.float()
    norm = v32.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return g.float() * v32 / norm


def to_inference_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A published (or our own) state dict in the layout of our modules."""
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith(TRAINING_ONLY_PREFIXES) or key.endswith(POSITION_TABLE_SUFFIX):
            continue
        for g_suffix, v_suffix in _WEIGHT_NORM_PAIRS:
            for part, suffix in (("g", g_suffix), ("v", v_suffix)):
                if key.endswith(suffix):
                    pending.setdefault(key[: -len(suffix)], {})[part] = value
                    break
            else:
                continue
            break
        else:
            out[key] = value
    for prefix, parts in pending.items():
        if set(parts) != {"g", "v"}:
            missing = "weight_v" if "g" in parts else "weight_g"
            raise CheckpointError(f"weight-normed layer '{prefix}' has no {missing} in the checkpoint")
        out[prefix + ".weight"] = fold_weight_norm(parts["g"], parts["v"])
    return out


def identify(keys) -> str:
    """Which published model a state dict belongs to, from its keys."""
    keys = set(keys)
    if "prosody_embs.0.weight" in keys:
        return "FACodecRedecoder"
    if any(k.startswith("melspec_linear.") for k in keys):
        return "FACodecDecoderV2"
    if any(k.startswith("quantizer.") for k in keys):
        return "FACodecDecoder"
    if any(k.startswith("block.") for k in keys):
        return "FACodecEncoderV2" if "mel_transform.mel_basis" in keys else "FACodecEncoder"
    return "no FACodec model"


def _describe(name: str) -> str:
    file = PUBLISHED_FILES.get(name)
    return f"{name} (published as {file})" if file else name


def _listing(title: str, items: list[str]) -> str:
    shown = "\n".join(f"    {item}" for item in items[:_MAX_LISTED_KEYS])
    more = f"\n    ... and {len(items) - _MAX_LISTED_KEYS} more" if len(items) > _MAX_LISTED_KEYS else ""
    return f"\n  {title} ({len(items)}):\n{shown}{more}"


def _check_tensors(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Every entry the model uses is a dense floating-point tensor with data (not meta, not sparse)."""
    for key, value in state_dict.items():
        if key.startswith(TRAINING_ONLY_PREFIXES) or key.endswith(POSITION_TABLE_SUFFIX):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"the checkpoint's {key} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided:
            raise CheckpointError(f"the checkpoint's {key} is a {value.layout} tensor; a checkpoint holds dense ones")
        if value.is_meta:
            raise CheckpointError(f"the checkpoint's {key} is a meta tensor, with a shape but no values")
        if not value.is_floating_point():
            raise CheckpointError(f"the checkpoint's {key} is {value.dtype}; FACodec weights are floating-point")


class PublishedCheckpointMixin:
    """Gives `load_state_dict` the published layout; see the module docstring."""

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(
                f"expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}"
            )
        _check_tensors(state_dict)
        converted = to_inference_layout(state_dict)
        for key, value in converted.items():  # after folding: a zero weight_v folds to NaN
            if not torch.isfinite(value).all():
                raise CheckpointError(f"the checkpoint's {key} holds NaN or infinite values: the file is damaged")
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        missing = sorted(set(expected) - set(converted))
        unexpected = sorted(set(converted) - set(expected))
        mismatched = [
            f"{k}: checkpoint {tuple(converted[k].shape)}, model {expected[k]}"
            for k in sorted(set(expected) & set(converted))
            if tuple(converted[k].shape) != expected[k]
        ]
        if mismatched or (strict and (missing or unexpected)):
            found = identify(state_dict.keys())
            message = f"cannot load this checkpoint into {type(self).__name__}: it holds {_describe(found)}"
            if found == type(self).__name__ and (mismatched or unexpected):
                message += ", built with other constructor arguments"
            elif found == type(self).__name__:
                message += ", with keys missing: a damaged or incomplete file, or one built with fewer layers"
            if mismatched:
                message += _listing("shapes differ", mismatched)
            if strict and missing:
                message += _listing("missing from the checkpoint", missing)
            if strict and unexpected:
                message += _listing("not in this model", unexpected)
            raise CheckpointError(message)
        return super().load_state_dict(converted, strict=strict, assign=assign)
