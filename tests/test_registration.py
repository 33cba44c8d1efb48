"""Importing espnet_bertkd registers `model: bertkd` without importing ESPnet itself until ESPnet's ASR task is
imported (light tools stay fast), in either import order. Each case runs in a fresh interpreter."""
import subprocess
import sys

import pytest

CHECK = (
    "from espnet2.tasks.asr import ASRTask, model_choices\n"
    "assert 'bertkd' in model_choices.classes, 'model: bertkd not registered'\n"
    "assert 'kd_token' in ASRTask.optional_data_names(), 'soft-label inputs not registered'\n"
)


def run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_light_import_does_not_load_espnet():
    run("import sys\nimport espnet_bertkd.recipe.scp, espnet_bertkd.recipe.score\n"
        "assert 'espnet2' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n")


@pytest.mark.parametrize("first", ["espnet_bertkd", "espnet2.tasks.asr", "espnet_bertkd.tasks.asr", "espnet_bertkd.asr.export"])
def test_registered_in_either_import_order(first):
    run(f"import {first}\nimport espnet_bertkd\n" + CHECK)


def test_launcher_runs_a_tool_module_as_main_so_its_type_checks_work():
    """`python -m espnet_bertkd.launch -m espnet2.bin.tokenize_text` (asr.sh stages 5 and 13 through --python) runs the
    module as __main__: typeguard finds its functions there and says nothing, as under plain `python -m`."""
    import subprocess
    import sys

    from espnet_bertkd.launch import spawns_workers

    done = subprocess.run(
        [sys.executable, "-m", "espnet_bertkd.launch", "-m", "espnet2.bin.tokenize_text", "--input", "-",
         "--output", "-", "--token_type", "char", "-f", "2-"],
        input="utt1 ab c\n", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a", "b", "<space>", "c"]
    assert "InstrumentationWarning" not in done.stderr and "not typechecking" not in done.stderr
    assert spawns_workers("espnet2.bin.asr_train") and spawns_workers("espnet2.bin.lm_train")
    assert not spawns_workers("espnet2.bin.tokenize_text") and not spawns_workers("espnet2.bin.asr_inference")
