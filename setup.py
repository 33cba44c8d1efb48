"""Packaging for espnet-bertkd: BERT knowledge distillation into ESPnet CTC recognisers."""
from setuptools import find_packages, setup

# Versions known to install and import together on Python 3.11 (see ../shared/notes/espnet-internals.md):
# espnet 202511 pins setuptools<74, which rules out torch>=2.13.
install_requires = [
    "espnet==202511",
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "transformers>=4.46",
    "tokenizers>=0.20",
    "sentencepiece>=0.2.0",
    "kaldiio>=2.18",
    "jiwer>=3.0",
    "soundfile>=0.12",
    "espeakng-loader>=0.2.4",  # eSpeak NG library + data for the synthetic corpus (espnet_bertkd.corpus)
    "tqdm>=4.60",
    "tensorboard>=2.14",  # ESPnet's trainer writes tensorboard logs
    "matplotlib>=3.7",  # ESPnet's training-curve images
    "numpy>=1.24",
    "scipy>=1.10",  # resampling and noise in the corpus generator
]

setup(
    name="espnet-bertkd",
    version="0.1.0",
    description="Distil a masked-LM teacher into an ESPnet CTC recogniser through attention decoders "
    "attached at chosen encoder layers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["espnet_bertkd", "espnet_bertkd.*"]),
    install_requires=install_requires,
    extras_require={"test": ["pytest>=7"]},
    license="Apache-2.0",
)
