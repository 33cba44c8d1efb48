"""ESPnet-style DistributedDataParallel with KD models (issue 15, "Multi-GPU", item 3), on CPU with gloo.

Two processes train each configuration for ITERATIONS steps exactly as espnet2/train/trainer.py does under
`--multiprocessing_distributed`: the model wrapped in `DistributedDataParallel(model, device_ids=None,
find_unused_parameters=False)` (ESPnet's default `--unused_parameters false`), the loss weighted by the batch size,
the stats all-reduced with ESPnet's `recursive_average`, the loss multiplied by the world size (DDP averages the
gradients), `backward()`, `optimizer.step()`. Each rank gets half of a batch built once for both (rows sliced, so
the padded lengths are those of the whole batch; see ITERATION_LENGTHS), and saves its gradients, stats and
parameters; the parent runs the same steps in one process on the whole batch and compares.

What this shows:
- every parameter takes part in every step's loss: with find_unused_parameters=False DDP raises "Expected to have
  finished reduction in the prior iteration ..." at the start of the second iteration otherwise (a control case
  with one unused parameter shows that the harness sees that error);
- DDP's averaged gradients (and the stats, and the updated parameters) equal single-process training on the
  concatenated batch, so training on N GPUs is training on the N-times-larger batch;
- the online teacher is outside what DDP reduces (parameters) and broadcasts (buffers), and each rank's teacher
  scored that rank's transcripts.

The encoder is a Transformer: Conformer's convolution module has BatchNorm, whose training-mode batch statistics
are per rank under DDP (ESPnet does not convert it to SyncBatchNorm, which gloo/CPU does not support anyway), so a
Conformer's DDP gradients legitimately differ from the concatenated batch's; that is ESPnet's behaviour, not KD's.
Dropout is 0 everywhere (set in the configs and checked), so each forward pass is deterministic.
"""
from __future__ import annotations

import datetime
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import torch.multiprocessing as mp

from conftest import TEXTS, batch, build_asr_model, kd_model_conf, soft_label_kwargs

TESTS_DIR = str(Path(__file__).resolve().parent)
WORLD = 2
ITERATIONS = 2
LR = 1e-3  # plain SGD: each update is exactly -LR * gradient
ENCODER = "transformer"
NO_DROPOUT_ENCODER = {"dropout_rate": 0.0, "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0}
NO_DROPOUT_DECODER = {
    "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
    "self_attention_dropout_rate": 0.0, "src_attention_dropout_rate": 0.0,
}
# Per iteration, the whole batch (2 rows per rank): iteration 1 sees transcripts the teacher has not scored yet.
ITERATION_TEXTS = [TEXTS[0:4], TEXTS[2:6]]
# Speech lengths (frames, padded to FRAMES): each rank's half holds one utterance of the whole batch's longest
# length. ESPnet's _extract_feats trims a batch's padding to its longest utterance, so that keeps every rank's padded
# length the whole batch's; it matters with ESPnet 202511, whose Conv2dSubsampling counts output frames on the
# padded mask (`x_mask[:, :, :-2:2][:, :, :-2:2]`): a 140-frame utterance gets 35 encoder frames padded to 200 and
# 34 padded to 140, whatever the batching (202611 computes the length from the input length). Not a DDP matter.
FRAMES = 200
ITERATION_LENGTHS = [[200, 170, 200, 140], [170, 200, 200, 140]]
UNUSED_ERROR = "Expected to have finished reduction in the prior iteration"

# Plain picklable specs (they travel to the spawned workers).
CASES: Dict[str, Dict[str, Any]] = {
    "layers_cached": {"mode": "cached"},
    "layers_online": {"mode": "online"},
    "shared_decoder_online": {"mode": "online", "model_conf": {"kd_share_decoder": True}},
    "shared_decoder_cached": {"mode": "cached", "model_conf": {"kd_share_decoder": True}},
    # interCTC at a KD layer (1) and at a layer without a KD decoder (2)
    "interctc_cached": {
        "mode": "cached", "model_conf": {"interctc_weight": 0.3}, "encoder_conf": {"interctc_layer_idx": [1, 2]},
    },
    # the KD loss through full (B, L, V) logits instead of the default fused output-layer + loss pass
    "layers_cached_logits_path": {"mode": "cached", "attributes": {"fused_kd_head": False}},
    # Control, run last: a parameter outside the loss must make DDP fail, or this test could not see the problem.
    "control_unused_parameter": {"mode": "cached", "unused_parameter": True},
}
REAL_CASES = [name for name, case in CASES.items() if not case.get("unused_parameter")]
ONLINE_CASES = [name for name in REAL_CASES if CASES[name]["mode"] == "online"]

# Tolerance, float32 throughout. DDP sums the per-utterance contributions to a gradient in another order than the
# one-process run (two half batches, then the all-reduce, instead of one sum over 4 rows), and matmuls on 2-row and
# 4-row inputs block their reductions differently. Those are rounding differences of a few ulps of the *summands*,
# and a gradient entry where summands of size ~max|g| cancel (say to 4e-4 of a tensor whose largest entry is 2.7)
# carries that absolute error, so an entry-wise relative tolerance is meaningless there (such entries differ by
# ~1e-7 absolute, i.e. 3e-4 relative). So each tensor is compared on its own scale:
#     |actual - expected| <= RTOL * (|expected| + max|expected|) + ATOL,
# RTOL = 1e-5 being ~80 ulps of float32 (eps 1.2e-7) of the tensor's largest entry; measured: at most 1.5e-6 of it.
# ATOL only matters for the attention key biases, whose gradient is exactly 0 in exact arithmetic (softmax ignores
# a shift shared by a row's scores) and ~1e-9 of rounding noise here. A wrong gradient (a rank's half missing, a
# loss scaled by the world size, other data, stale weights) is off by O(1) of the scale. Each case's measured
# worst |actual - expected| / max|expected| is printed (pytest -s). The reference and the workers run 1 thread.
RTOL, ATOL = 1e-5, 1e-8


# ------------------------------------------------------------------------------------------------ shared helpers
def make_model(teacher_dir: str, case: Dict[str, Any]) -> torch.nn.Module:
    """The case's bertkd model, built through ESPnet (build_asr_model seeds torch with 0 before building)."""
    conf = kd_model_conf(teacher_dir, case["mode"], **case.get("model_conf", {}))
    conf["kd_decoder_conf"].update(NO_DROPOUT_DECODER)
    model = build_asr_model(ENCODER, conf, encoder_conf={**NO_DROPOUT_ENCODER, **case.get("encoder_conf", {})})
    for attribute, value in case.get("attributes", {}).items():
        assert hasattr(model, attribute), attribute  # a renamed switch must not make the case test nothing
        setattr(model, attribute, value)
    if case.get("unused_parameter"):
        model.register_parameter("never_used", torch.nn.Parameter(torch.zeros(3)))
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(p == 0.0 for p in dropouts), dropouts
    return model.train()


def full_batches(teacher_dir: str) -> List[Dict[str, Any]]:
    """Each iteration's whole batch, cached soft labels included (online models ignore them)."""
    out = []
    for i, texts in enumerate(ITERATION_TEXTS):
        b = batch(texts, frames=FRAMES, seed=i)
        lengths = torch.tensor(ITERATION_LENGTHS[i])
        b["speech_lengths"] = lengths
        b["speech"] = b["speech"] * (torch.arange(FRAMES)[None, :, None] < lengths[:, None, None])  # zero padding
        b.update(soft_label_kwargs(teacher_dir, texts))
        out.append(b)
    return out


def rows(b: Dict[str, Any], start: int, stop: int, mode: str) -> Dict[str, Any]:
    """Rows start:stop of a batch (a fresh copy: forward may edit its inputs), without soft labels if online."""
    out = {k: v[start:stop].clone() if isinstance(v, torch.Tensor) else list(v[start:stop]) for k, v in b.items()}
    if mode == "online":
        out = {k: v for k, v in out.items() if not k.startswith("kd_")}
    return out


def train_steps(model: torch.nn.Module, forward: torch.nn.Module, batches: List[Dict[str, Any]],
                distributed: bool, records: List[Dict[str, Any]] | None = None) -> List[Dict[str, Any]]:
    """ESPnet's train_one_epoch (accum_grad 1, no AMP, no clipping) with SGD; each step's grads and stats, appended
    to `records` as the steps complete."""
    from espnet2.torch_utils.recursive_op import recursive_average

    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    records = [] if records is None else records
    for b in batches:
        loss, stats, weight = forward(**b)
        stats = {k: v for k, v in stats.items() if v is not None}
        if distributed:  # espnet2/train/trainer.py, verbatim in substance
            loss = (loss * weight.type(loss.dtype)).sum()
            stats, weight = recursive_average(stats, weight, distributed)
            loss /= weight
            loss *= torch.distributed.get_world_size()
        loss.backward()
        records.append({
            "params": {n: p.detach().clone() for n, p in model.named_parameters()},  # the ones this step used
            "grads": {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()},
            "stats": {k: v.detach().clone() for k, v in stats.items() if k.startswith("loss")},
        })
        optimizer.step()
        optimizer.zero_grad()
    return records


# ------------------------------------------------------------------------------------------------ worker (child)
def _run_case(rank: int, teacher_dir: str, case: Dict[str, Any], batches: List[Dict[str, Any]]) -> Dict[str, Any]:
    model = make_model(teacher_dir, case)
    initial = {k: v.clone() for k, v in model.state_dict().items()}  # before DDP broadcasts rank 0's weights
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=None, find_unused_parameters=False)
    half = batches[0]["speech"].shape[0] // WORLD
    mine = [rows(b, rank * half, (rank + 1) * half, case["mode"]) for b in batches]
    result: Dict[str, Any] = {"initial": initial, "error": None, "iterations": []}
    try:
        train_steps(model, ddp, mine, distributed=True, records=result["iterations"])
    except Exception:  # reported to the parent, which fails the case with this traceback
        result["error"] = traceback.format_exc()
        return result
    result["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}

    # What DDP reduces (its parameter list) and broadcasts (its buffer list); public fallbacks if torch renames them.
    reduced = list(getattr(ddp, "_module_parameters", None) or ddp.module.parameters())
    broadcast = list(getattr(ddp, "modules_buffers", None) or ddp.module.buffers())
    result["ddp"] = {
        "parameter_names": [n for n, _ in ddp.module.named_parameters()],
        "buffer_names": [n for n, _ in ddp.module.named_buffers()],
        "state_dict_keys": list(ddp.module.state_dict()),
        "n_reduced": len(reduced),
        "numel_reduced": sum(p.numel() for p in reduced),
    }
    online = getattr(model, "_online", None)
    if online is not None:
        teacher = online.teacher
        result["teacher"] = {"loaded": teacher is not None, "memo": sorted(online.memo)}
        if teacher is not None:
            t_params, t_buffers = list(teacher.model.parameters()), list(teacher.model.buffers())
            ids = {id(t) for t in reduced} | {id(t) for t in broadcast}
            result["teacher"].update({
                "n_params": len(t_params),
                "n_shared_with_ddp": sum(id(t) in ids for t in t_params + t_buffers),
                "params_with_grad": sum(p.grad is not None for p in t_params),
            })
    return result


def _worker(rank: int, init_file: str, tests_dir: str, teacher_dir: str, cases: Dict[str, Dict[str, Any]],
            data_file: str, out_dir: str) -> None:
    """One DDP rank: every case in turn, one result file per case. An exception outside a case's training steps
    ends the process and torch.multiprocessing.spawn re-raises it in the parent with this process's traceback."""
    # A spawned child starts with the parent's sys.path (multiprocessing passes it along), which is how it found this
    # module to unpickle the function; the builders' module, conftest, is put on the path explicitly all the same.
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    torch.set_num_threads(1)  # two ranks on a small machine
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        batches = torch.load(data_file)
        for name, case in cases.items():
            torch.save(_run_case(rank, teacher_dir, case, batches), os.path.join(out_dir, f"{name}.rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------ tests (parent)
@pytest.fixture(autouse=True)
def one_thread():
    """The one-process reference runs on one thread, like each worker, so the rounding differences compared come
    from DDP's split of the batch and not from the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ddp_results(teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    data_file = out / "batches.pt"
    torch.save(full_batches(teacher_dir), data_file)
    workers = mp.spawn(
        _worker,
        args=(str(out / "init"), TESTS_DIR, teacher_dir, CASES, str(data_file), str(out)),
        nprocs=WORLD, join=False,
    )
    from espnet2.tasks.asr import ASRTask  # noqa: F401  (the references need it: imported while the workers run)

    while not workers.join():  # re-raises a worker's exception with its traceback
        pass

    def load(name: str) -> List[Dict[str, Any]]:
        return [torch.load(out / f"{name}.rank{r}.pt") for r in range(WORLD)]

    return load


def assert_same_tensors(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], what: str) -> None:
    assert list(a) == list(b), what
    for k in a:
        assert torch.equal(a[k], b[k]), (what, k)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> float:
    """`actual` within the tolerance (see RTOL) of `expected`; returns max |diff| / max |expected|."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, rtol=RTOL, atol=RTOL * scale + ATOL), (
        what, "max |diff|", diff, "max |expected|", scale,
    )
    return diff / scale if scale > 0 else 0.0


def whole(b: Dict[str, Any], mode: str) -> Dict[str, Any]:
    return rows(b, 0, b["speech"].shape[0], mode)


@pytest.mark.parametrize("name", REAL_CASES)
def test_ddp_matches_single_process(ddp_results, teacher_dir, name):
    case = CASES[name]
    ranks = ddp_results(name)
    for rank, r in enumerate(ranks):
        assert r["error"] is None, f"rank {rank} failed:\n{r['error']}"
    batches = full_batches(teacher_dir)

    reference = make_model(teacher_dir, case)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    names = [n for n, _ in reference.named_parameters()]
    # Same seed, same construction: every rank starts from exactly the parent's weights (checked before DDP's
    # broadcast from rank 0, which would otherwise hide a difference).
    for r in ranks:
        assert_same_tensors(r["initial"], initial, "initial weights")

    worst = 0.0
    for it in range(ITERATIONS):
        steps = [r["iterations"][it] for r in ranks]
        # Both ranks ran this step from the same weights and the all-reduce left them the same gradients.
        assert_same_tensors(steps[0]["params"], steps[1]["params"], f"iteration {it} rank weights")
        assert_same_tensors(steps[0]["grads"], steps[1]["grads"], f"iteration {it} rank grads")
        # One process, the whole batch, the same weights: the same gradient for every parameter.
        with torch.no_grad():
            for n, p in reference.named_parameters():
                p.copy_(steps[0]["params"][n])
        (expected,) = train_steps(reference, reference, [whole(batches[it], case["mode"])], distributed=False)
        unused = [n for n, g in expected["grads"].items() if g is None]
        assert not unused, f"parameters without a gradient in a single-process step: {unused}"
        grads = steps[0]["grads"]
        assert list(grads) == list(expected["grads"]) == names
        for n in names:
            error = assert_close(grads[n], expected["grads"][n], f"iteration {it} grad of {n}")
            if expected["grads"][n].abs().max() > 1e-6:  # not a key bias's zero-plus-noise gradient
                worst = max(worst, error)
        # ESPnet's all-reduced stats: the losses (per-utterance means) are the whole batch's.
        stats, ref_stats = steps[0]["stats"], expected["stats"]
        assert sorted(stats) == sorted(ref_stats) and "loss" in stats and any("kd" in k for k in stats)
        for k in ref_stats:
            assert_close(stats[k].reshape(()), ref_stats[k].reshape(()), f"iteration {it} stat {k}")
        # The update each rank made is SGD's with those gradients, to the bit (the same elementwise op as SGD's).
        after = ranks[0]["iterations"][it + 1]["params"] if it + 1 < ITERATIONS else ranks[0]["params"]
        for n in names:
            assert torch.equal(after[n], steps[0]["params"][n].add(grads[n], alpha=-LR)), (it, n)
        assert not all(torch.equal(after[n], steps[0]["params"][n]) for n in names), f"iteration {it} did not update"
    assert_same_tensors(ranks[0]["params"], ranks[1]["params"], "final rank weights")
    print(f"{name}: worst gradient |DDP - one process| / max |one process| = {worst:.3g} (RTOL {RTOL:g})")

    # End to end: ITERATIONS steps of one-process training on the whole batches end at the same weights. (Per-step
    # rounding differences are amplified by the next step's curvature; with LR they stay far below the tolerance.)
    reference.load_state_dict(initial)
    train_steps(reference, reference, [whole(b, case["mode"]) for b in batches], distributed=False)
    for n, p in reference.named_parameters():
        assert_close(ranks[0]["params"][n], p.detach(), f"trained {n}")

    # DDP's parameter list is exactly the model's, and nothing called "teacher" is in it, its buffers or its state.
    ddp = ranks[0]["ddp"]
    assert ddp["parameter_names"] == names
    assert ddp["n_reduced"] == len(names)
    for key in ("parameter_names", "buffer_names", "state_dict_keys"):
        assert not [n for n in ddp[key] if "teacher" in n.lower()], key


@pytest.mark.parametrize("name", ONLINE_CASES)
def test_online_teacher_is_outside_ddp(ddp_results, teacher_dir, name):
    ranks = ddp_results(name)
    for rank, r in enumerate(ranks):
        assert r["error"] is None, f"rank {rank} failed:\n{r['error']}"
    # The online model has exactly the parameters of the same model in cached mode, which has no teacher at all.
    cached = make_model(teacher_dir, {**CASES[name], "mode": "cached"})
    for r in ranks:
        assert r["ddp"]["n_reduced"] == len(list(cached.parameters()))
        assert r["ddp"]["numel_reduced"] == sum(p.numel() for p in cached.parameters())
        assert r["ddp"]["buffer_names"] == [n for n, _ in cached.named_buffers()]
    half = len(ITERATION_TEXTS[0]) // WORLD
    for rank, r in enumerate(ranks):
        teacher = r["teacher"]
        # Each rank's teacher exists after the steps and scored exactly that rank's transcripts.
        assert teacher["loaded"], rank
        assert teacher["memo"] == sorted({t for texts in ITERATION_TEXTS for t in texts[rank * half:(rank + 1) * half]})
        assert teacher["n_params"] > 0
        assert teacher["n_shared_with_ddp"] == 0  # none of its tensors is reduced or broadcast by DDP
        assert teacher["params_with_grad"] == 0  # and the backward pass never reached it


def test_unused_parameter_is_caught(ddp_results):
    """The control: with find_unused_parameters=False a parameter outside the loss fails the second iteration."""
    for rank, r in enumerate(ddp_results("control_unused_parameter")):
        assert r["error"] is not None and UNUSED_ERROR in r["error"], (rank, r["error"])
        assert len(r["iterations"]) == 1, rank  # the first step went through; the second one's forward raised
