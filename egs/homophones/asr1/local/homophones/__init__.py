"""The embedded default corpus: synthetic English speech (eSpeak NG) in LibriSpeech's layout, plus LM text.

No real speech corpus can be downloaded here, so the recipe generates one, deterministically from a seed. Sentences
come from a small grammar whose spelling depends on context (homophones such as THEIR/THERE/THEY'RE, KNIGHT/NIGHT,
ATE/EIGHT that eSpeak pronounces identically), so a language model matters. See build.make_corpus.

Modules: lexicon (words and rules), grammar (the rule engine), text (paired/LM splits), voices (speakers),
speech (eSpeak NG via ctypes, acoustics), librispeech_layout (files on disk), config (options, presets, hash),
build (the orchestration).
"""
from homophones.build import CorpusOptionsError, make_corpus, plan_corpus
from homophones.config import PRESETS, CorpusConfig
from homophones.lexicon import HOMOPHONE_SETS
from homophones.text import generate_text

__all__ = [
    "CorpusConfig", "CorpusOptionsError", "HOMOPHONE_SETS", "PRESETS", "generate_text", "make_corpus",
    "plan_corpus",
]
