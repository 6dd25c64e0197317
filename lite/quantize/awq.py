"""AWQ (activation-aware weight quantization, Lin et al. 2023) for one decoder layer.

1. Scale search: input channels that carry large activations matter most, so each group of linears
   sharing an input gets per-channel scales s = x_mean^a / w_mean^(1-a), with a picked on a grid to
   minimize the error of the block's output once the scaled weights are int4. The scales are folded
   into the op before (norm weight or linear rows), leaving the float function unchanged.
2. Clip search: per output channel and group, shrink the weight range when that lowers the output
   error (outliers otherwise stretch the int4 grid for the whole group).
3. Round-to-nearest int4 of the resulting weights.
Candidates include "no scaling" and "no clipping", so on the calibration data a layer never ends up
worse than plain round-to-nearest.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lite.quantize.decoder_layer import CalibrationLayer, Weights
from lite.quantize.int4 import Int4Weight, fake_quantize_int4, quantize_int4
from lite.quantize.layer_table import LayerTable, ScaleGroup

# Block outputs are compared this many tokens at a time, bounding the memory of one evaluation.
LOSS_CHUNK_TOKENS = 4096


@dataclass(frozen=True)
class AWQSettings:
    group_size: int = 128
    search_scales: bool = True  # False (and clip False): plain round-to-nearest, the RTN baseline
    clip: bool = True
    scale_grid: int = 20
    clip_grid: int = 20
    clip_max_shrink: float = 0.5  # try ranges down to half the original
    clip_tokens: int = 512  # tokens the clip search uses (evenly subsampled)
    clip_batch_elements: int = 16 << 20  # floats of one [groups, tokens, channels] clip product


def quantize_layer(layer: CalibrationLayer, inputs: dict[str, torch.Tensor], table: LayerTable,
                   settings: AWQSettings) -> dict[str, Int4Weight]:
    """Rescale and clip `layer.weights` in place, then return each linear as int4.
    `inputs`: each linear's input on the calibration data, as CalibrationLayer.forward gives them."""
    if settings.search_scales:
        for group in table.scale_groups:
            if not group.applies_to(layer.cfg):
                continue
            x = inputs[group.linears[0]]  # one tensor shared by the group's linears
            scales = search_scales(layer, group, x, settings)
            fold_scales(layer.weights, group, scales)
            x.div_(scales)  # what these linears now receive; the clip search reads it
    if settings.clip:
        for name in table.linears:
            if name not in table.skip_clip:
                clip_weight(layer.weights, name, inputs[name], settings)
    return {name: quantize_int4(layer.weights[f"{name}.weight"], settings.group_size)
            for name in table.linears}


def _block_loss(layer: CalibrationLayer, block: str, x: torch.Tensor, reference: list[torch.Tensor],
                weights: Weights) -> float:
    samples_per_chunk = max(1, LOSS_CHUNK_TOKENS // x.shape[1])
    total = 0.0
    for chunk, expected in zip(x.split(samples_per_chunk), reference):
        total += (layer.block(block, chunk, weights) - expected).pow(2).sum().item()
    return total / (x.shape[0] * x.shape[1])


def search_scales(layer: CalibrationLayer, group: ScaleGroup, x: torch.Tensor,
                  settings: AWQSettings) -> torch.Tensor:
    """Per input channel scales [in] for the linears of `group`, whose input is x: [S, L, in]."""
    weights, g = layer.weights, settings.group_size
    x_mean = x.abs().reshape(-1, x.shape[-1]).mean(0)
    stacked = torch.cat([weights[f"{name}.weight"] for name in group.linears])
    # How large each weight is relative to its int4 group's range, averaged per input channel.
    magnitude = stacked.abs().view(-1, g)
    w_mean = (magnitude / (magnitude.amax(dim=1, keepdim=True) + 1e-6)).view(stacked.shape).mean(0)
    samples_per_chunk = max(1, LOSS_CHUNK_TOKENS // x.shape[1])
    reference = [layer.block(group.block, chunk) for chunk in x.split(samples_per_chunk)]

    def loss(scales: torch.Tensor) -> float:
        trial = dict(weights)
        for name in group.linears:
            w = weights[f"{name}.weight"]
            trial[f"{name}.weight"] = fake_quantize_int4(w * scales, g) / scales
        return _block_loss(layer, group.block, x, reference, trial)

    best_scales = torch.ones_like(x_mean)
    best_loss = loss(best_scales)
    for step in range(settings.scale_grid):
        ratio = step / settings.scale_grid
        scales = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        scales = scales / (scales.max() * scales.min()).sqrt()  # centre the scales around 1
        current = loss(scales)
        if current < best_loss:
            best_loss, best_scales = current, scales
    return best_scales


def fold_scales(weights: Weights, group: ScaleGroup, scales: torch.Tensor) -> None:
    """Divide the previous op's output by s and multiply the linears' input columns by s."""
    previous = weights[f"{group.previous}.weight"]  # a norm's [in], or a linear's [in, its input]
    previous.div_(scales if previous.dim() == 1 else scales.unsqueeze(1))
    bias = weights.get(f"{group.previous}.bias")
    if bias is not None:
        bias.div_(scales)
    for name in group.linears:
        weights[f"{name}.weight"].mul_(scales)


def clip_weight(weights: Weights, name: str, x: torch.Tensor, settings: AWQSettings) -> None:
    """Clamp each (output channel, group) of a linear's weight to the range that minimizes the
    error of that group's partial output on calibration tokens x: [S, L, in]."""
    weight, g = weights[f"{name}.weight"], settings.group_size
    out_features, in_features = weight.shape
    num_groups = in_features // g
    tokens = x.reshape(-1, in_features)
    tokens = tokens[::max(1, tokens.shape[0] // settings.clip_tokens)]
    x_groups = tokens.view(-1, num_groups, g).transpose(0, 1)  # [groups, tokens, g]
    limits = []
    channel_batch = max(1, settings.clip_batch_elements // (num_groups * x_groups.shape[1]))
    for rows in weight.split(channel_batch):
        w = rows.view(-1, num_groups, g)  # [channels, groups, g]
        original_max = w.abs().amax(dim=-1)  # [channels, groups]
        expected = torch.bmm(x_groups, w.permute(1, 2, 0))  # [groups, tokens, channels]
        best_max, best_err = original_max.clone(), torch.full_like(original_max, float("inf"))
        for step in range(int(settings.clip_max_shrink * settings.clip_grid)):
            max_val = (original_max * (1 - step / settings.clip_grid)).unsqueeze(-1)
            quantized = fake_quantize_int4(torch.maximum(torch.minimum(w, max_val), -max_val), g)
            err = (torch.bmm(x_groups, quantized.permute(1, 2, 0)) - expected).pow(2).mean(dim=1).t()
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, max_val.squeeze(-1), best_max)
        limits.append(best_max)
    limit = torch.cat(limits).unsqueeze(-1)  # [out, groups, 1]
    clipped = torch.maximum(torch.minimum(weight.view(out_features, num_groups, g), limit), -limit)
    weight.copy_(clipped.view(out_features, in_features))
