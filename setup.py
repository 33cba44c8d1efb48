"""Packaging for espnet-bertkd: BERT knowledge distillation into ESPnet CTC recognisers."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent  # README.md is read from here, not from the directory setup.py is run in

# Two supported ESPnet releases, chosen by the Python version (ESPnet 202611 requires Python >= 3.12); espnet_bertkd/
# compat.py knows exactly these two, so they are pinned. Everything else is a range, so that `pip install` on a
# cluster keeps the site's CUDA build of torch: ESPnet itself bounds torch/torchaudio (202611: torch >= 2.11, < 2.15,
# not 2.12.0/2.12.1; torchaudio < 2.12). The exact versions tested together (torch 2.11.0) are in
# tools/constraints/espnet<RELEASE>.txt, which tools/install.sh applies and the README's commands use.
install_requires = [
    "espnet==202611; python_version>='3.12'",
    "espnet==202511; python_version<'3.12'",
    "torch>=2.1",  # torch.load(weights_only=True, mmap=True), torch.amp.autocast(device_type)
    "torchaudio>=2.1",  # the lexicon CTC decoder (torchaudio.models.decoder) and speed perturbation
    "editdistance>=0.6",  # ESPnet's CER/WER reports during training import it; 202611 no longer installs it
    "transformers>=4.46",
    "tokenizers>=0.20",
    "kaldiio>=2.18",
    "soundfile>=0.12",
    "tqdm>=4.60",
    "tensorboard>=2.14",  # ESPnet's trainer writes tensorboard logs
    "matplotlib>=3.7",  # ESPnet's trainer plots the training curves every epoch (ESPnet lists it only as an extra)
    "numpy>=1.24",
]

# The recipe toolkit (espnet_bertkd.recipe) and the embedded recipe's corpus generator (egs/homophones/asr1/local)
# need these; the plugin does not (`pip install espnet-bertkd[recipe]`, which tools/install.sh does).
recipe_requires = [
    "jiwer>=3.0",  # scoring (espnet_bertkd.recipe.score)
    "espeakng-loader>=0.2.4",  # eSpeak NG library + data for the synthetic corpus
    "scipy>=1.10",  # resampling and noise in the corpus generator (ESPnet itself also depends on it)
    "sentencepiece>=0.2.0",  # BPE token lists (espnet_bertkd.recipe.tokens; ESPnet itself also depends on it)
]

# Lexicon CTC beam search with a word n-gram (espnet_bertkd.asr.lexicon_ctc, bin/ctc_lm_inference): torchaudio's
# ctc_decoder runs flashlight-text's C++ decoder, whose wheels bundle KenLM (`pip install espnet-bertkd[lm]`, which
# tools/install.sh does). Its last release (0.0.7) has wheels for CPython <= 3.12 only; the plugin imports without it.
lm_requires = ["flashlight-text>=0.0.7; python_version<'3.13'"]

# ESPnet's Lightning trainer (espnet2.bin.lightning_train, asr.sh's --use_lightning true): ESPnet 202511 requires
# lightning itself, 202611 only in its `train` extra, so this extra adds it where ESPnet 202611 is installed
# (`pip install espnet-bertkd[lightning]`, which tools/install.sh does for 202611). Tested: 2.6.6.
lightning_requires = ["lightning>=2.6; python_version>='3.12'"]

setup(
    name="espnet-bertkd",
    version="0.2.0",
    description="Distil a masked-LM teacher into an ESPnet CTC recogniser through attention decoders "
    "attached at chosen encoder layers",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["espnet_bertkd", "espnet_bertkd.*"]),
    install_requires=install_requires,
    extras_require={"recipe": recipe_requires, "lm": lm_requires, "lightning": lightning_requires,
                    "test": ["pytest>=7", *recipe_requires, *lm_requires, *lightning_requires]},
    license="Apache-2.0",
)
