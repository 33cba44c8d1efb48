"""Training overhead of KD: step time of an inter_aed_kd model vs the same model with `kd_layers: []`.

    python benchmarks/train_step.py [--steps 7] [--device cpu] [--online] [--amp bfloat16]

Both models are built through ESPnet's parser (conformer encoder, BERT-base-sized teacher vocabulary of 30522),
and their steps (forward + backward + optimizer) alternate in one process, so the ratio is measured side by side.
The KD model runs twice: with the fused KD head (the default) and through full (B, L, V) logits (`fused_kd_head =
False`, the reference path and the implementation before the fused head), so both overheads come from one run.
Cached mode feeds synthetic soft labels of the shape extract_soft_labels writes; `--online` adds the online mode
with a small random BERT teacher (first visit of each transcript, i.e. the un-memoised cost).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import torch
import yaml

import espnet_bertkd  # noqa: F401
from espnet2.tasks.asr import ASRTask

from espnet_bertkd.kd.soft_labels import collate_arrays

CHARS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
TOKENS = ["<blank>", "<unk>", "<space>"] + CHARS + ["<sos/eos>"]


def build(model_conf: Dict, encoder_conf: Dict) -> torch.nn.Module:
    argv = ["--token_list", "x", "--input_size", "80", "--encoder", "conformer", "--model", "bertkd"]
    args = ASRTask.get_parser().parse_args(argv)
    args.token_list = TOKENS
    args.encoder_conf = encoder_conf
    args.model_conf = model_conf
    torch.manual_seed(0)
    return ASRTask.build_model(args)


def make_batch(batch: int, frames: int, chars: int, teacher_tokens: int, topk: int, vocab: int) -> Dict:
    g = torch.Generator().manual_seed(0)
    text = torch.randint(3, len(TOKENS) - 1, (batch, chars), generator=g)
    text[:, 5::6] = TOKENS.index("<space>")  # five-letter words, so the online teacher sees ~25 words
    arrays = []
    for _ in range(batch):
        tok = torch.randint(0, vocab, (teacher_tokens, 1 + topk), generator=g).numpy().astype("int16")
        prob = torch.softmax(torch.randn(teacher_tokens, topk, generator=g), -1).numpy().astype("float16")
        arrays.append((tok, prob))
    return {
        "speech": torch.randn(batch, frames, 80, generator=g),
        "speech_lengths": torch.full((batch,), frames),
        "text": text,
        "text_lengths": torch.full((batch,), chars),
        "utt_id": [f"u{i}" for i in range(batch)],
        **collate_arrays(arrays),
    }


def amp_context(device: str, amp: str) -> torch.autocast:
    """Autocast in `amp` on the device's type, or a disabled one for "none" (ESPnet's --use_amp false)."""
    return torch.autocast(device.split(":")[0], dtype=getattr(torch, amp, None), enabled=amp != "none")


def step_fn(model: torch.nn.Module, batch: Dict, device: str, amp: str) -> Callable[[], float]:
    """One forward + backward + Adam step, under autocast in `amp` unless it is "none" (as ESPnet's --use_amp)."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    autocast = amp_context(device, amp)

    def step() -> float:
        start = time.perf_counter()
        with autocast:
            loss, _, _ = model(**{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in data.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def saved_for_backward(model: torch.nn.Module, batch: Dict, device: str, amp: str) -> int:
    """Bytes of the tensors autograd keeps from one forward pass for the backward (each storage once, parameters
    excluded): the activation memory of a step, which on the CPU stands in for the GPU's peak-memory counter."""
    storages: Dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # counted as static, not here

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    data = {k: (v.to(device).clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp_context(device, amp):
        loss, _, _ = model(**data)
    del loss
    return sum(storages.values())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=800, help="80-dim fbank frames per utterance (10 ms each)")
    p.add_argument("--blocks", type=int, default=12)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--kd_layers", default="4,8,12")
    p.add_argument("--online", action="store_true", help="also time online mode (small random BERT teacher)")
    p.add_argument("--amp", default="none", choices=["none", "bfloat16"],
                   help="run every step under bfloat16 autocast (float16 would also need ESPnet's GradScaler)")
    args = p.parse_args()

    encoder_conf = {"output_size": args.units, "attention_heads": 4, "linear_units": 4 * args.units,
                    "num_blocks": args.blocks, "input_layer": "conv2d", "rel_pos_type": "latest",
                    "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
                    "macaron_style": True, "use_cnn_module": True, "cnn_module_kernel": 15}
    kd_layers = [int(x) for x in args.kd_layers.split(",")]
    vocab, topk = 30522, 8
    kd_conf = {"ctc_weight": 0.5, "kd_layers": kd_layers, "kd_alpha": 0.5,
               "kd_decoder_conf": {"num_blocks": 2, "attention_heads": 4, "linear_units": 1024},
               "teacher": {"model": "bert-base-uncased", "mode": "cached", "topk": topk, "vocab_size": vocab}}
    systems = {"ctc (kd_layers: [])": {"ctc_weight": 1.0}, f"inter_aed_kd cached {kd_layers}": kd_conf,
               f"inter_aed_kd cached {kd_layers}, reference head": kd_conf}
    batch = make_batch(args.batch, args.frames, chars=150, teacher_tokens=35, topk=topk, vocab=vocab)

    if args.online:
        from espnet_bertkd.kd.build_teacher import build_bert

        texts = [" ".join("".join(CHARS[(i * 7 + j) % 26] for j in range(5)) for i in range(40))]
        teacher = build_bert(texts * 5, tempfile.mkdtemp(), vocab_size=500, hidden_size=256, num_layers=4,
                             num_heads=4, max_position_embeddings=512, model_vocab_size=vocab)
        systems[f"inter_aed_kd online {kd_layers} (first visit)"] = {
            **kd_conf, "teacher": {"model": teacher, "mode": "online", "topk": topk}}

    steps = {}
    params, saved, peak = {}, {}, {}
    cuda = args.device.startswith("cuda")
    for name, conf in systems.items():
        model = build(conf, encoder_conf)
        model.fused_kd_head = "reference head" not in name  # the reference: KD loss through (B, L, V) logits
        params[name] = sum(p.numel() for p in model.parameters())
        b = dict(batch)
        if "online" in name:
            b = {k: v for k, v in b.items() if not k.startswith("kd_")}
        steps[name] = (model, step_fn(model, b, args.device, args.amp))
        steps[name][1]()  # warm-up
        saved[name] = saved_for_backward(model, b, args.device, args.amp)

    times: Dict[str, List[float]] = {name: [] for name in systems}
    for _ in range(args.steps):
        for name, (model, step) in steps.items():
            if "online" in name:
                model._online.memo.clear()  # time the un-memoised (first epoch) cost
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times[name].append(step())
            if cuda:
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated())

    print(yaml.safe_dump({"device": torch.cuda.get_device_name() if cuda else args.device,
                          "torch_threads": torch.get_num_threads(), "amp": args.amp, "batch": args.batch,
                          "frames": args.frames, "encoder": encoder_conf, "kd": kd_conf, "steps": args.steps},
                         sort_keys=False))
    base_name = "ctc (kd_layers: [])"
    base = statistics.median(times[base_name])
    print("saved: bytes autograd keeps for backward from one forward (activations); static: parameters + gradients "
          "+ Adam's two moments, float32; peak: torch.cuda.max_memory_allocated over the timed steps")
    print(f"{'system':60s} {'params':>11s} {'median step s':>14s} {'ratio':>6s} {'saved MiB':>10s} {'ratio':>6s} "
          f"{'static+saved':>12s} {'ratio':>6s}" + (f" {'peak MiB':>9s} {'ratio':>6s}" if cuda else ""))
    mib = 1 << 20

    def total(name: str) -> int:
        return 16 * params[name] + saved[name]

    for name, t in times.items():
        med = statistics.median(t)
        line = (f"{name:60s} {params[name]:11d} {med:14.3f} {med / base:6.2f} {saved[name] / mib:10.1f} "
                f"{saved[name] / saved[base_name]:6.2f} {total(name) / mib:12.1f} {total(name) / total(base_name):6.2f}")
        if cuda:
            line += f" {peak[name] / mib:9.1f} {peak[name] / peak[base_name]:6.2f}"
        print(line)


if __name__ == "__main__":
    main()
