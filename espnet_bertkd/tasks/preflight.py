"""The training preflight: what `python -m espnet_bertkd.bin.asr_train` (or `espnet_bertkd.launch -m
espnet2.bin.asr_train`) checks on ESPnet's parsed command line before ESPnet builds anything or reads any data.

ESPnet meets bad input late: a typo in model_conf is a TypeError when the model is built, an utterance missing
from text is a KeyError in a data-loader worker mid-epoch, an 8 kHz file trains silently at the wrong rate, a
character the token list lacks becomes <unk>. Here each is an error naming the file, line, utterance or key, and
how to fix it, before anything is written:

1. model_conf: unknown keys (with the closest known key), out-of-range values (espnet_bertkd.kd.config, the same
   checks the model constructor runs), kd_layers beyond encoder_conf.num_blocks, ctc_weight < 1 with no decoder.
2. the teacher (resolve_teacher_vocab_size): its vocabulary size goes into model_conf.teacher.vocab_size, and so
   into the config.yaml ESPnet saves, so that decoding builds the model without the teacher; cached soft labels
   (check_soft_labels): every train/valid utterance has them, from the configured teacher.
3. data, for train and valid: every input file exists; the sound and text inputs are validated together
   (espnet_bertkd.tasks.data_check.validate_loader_inputs, i.e. validate_data_dir where they live in a Kaldi data
   directory): sorted unique keys, the same utterances in wav.scp and text (and every utterance of the shape files
   in both), audio entries checked the way the declared loader reads them (sound: the file exists, its header is
   readable, non-empty, at the front-end's sample rate and mono for ESPnet's default front-end; kaldi_ark: the ark
   exists and the offset is inside it; a command `... |` is refused for both, with the fix), no empty transcript, no
   character the token list cannot represent. A read error that only decoding shows (a truncated file) names the
   utterance and the file when ESPnet's loader meets it (espnet_bertkd.tasks.audio). The audio headers are the costly part (a 281k-utterance set: minutes); progress is
   logged, and ESPNET_BERTKD_DATA_CHECK=no_audio skips them (files must still exist), =off skips step 3.
"""
from __future__ import annotations

import inspect
import logging
import os
import time
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from espnet_bertkd.tasks.data_check import Charset, is_data_dir, validate_loader_inputs
from espnet_bertkd.utils.fileio import DataError, read_table

if TYPE_CHECKING:
    from espnet_bertkd.kd.teacher_config import TeacherConfig

DATA_CHECK_ENV = "ESPNET_BERTKD_DATA_CHECK"
DATA_CHECK_LEVELS = ("full", "no_audio", "off")
# Token types whose every transcript character must be representable (word and phone lists have OOVs by design).
CHARACTER_TOKEN_TYPES = ("char", "bpe")

DataInput = Tuple[str, str, str]  # ESPnet's PATH,NAME,TYPE
SPLITS = ("train", "valid")
NOT_STARTED = "ESPnet was not started and no file was written."


def run_preflight(args: Namespace) -> List[str]:
    """All checks, cheapest first (the data check may read every audio header). Returns the options to append to
    ESPnet's command line so that its own parse (a separate one, run after this) sees what was resolved here."""
    output_dir = getattr(args, "output_dir", None)
    if output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir}: is a file, not a directory; choose another directory. "
                         f"{NOT_STARTED}")
    check_model_config(args)
    extra = resolve_teacher_vocab_size(args)
    check_soft_labels(args)
    check_data(args)
    check_ctc_lengths(args)
    return extra


def check_lightning_args(args: Namespace) -> None:
    """What ESPnet's Lightning trainer reads without a default, asked for before it builds the model (else a KeyError
    or a failure inside Lightning after minutes of start-up)."""
    conf = getattr(args, "lightning_conf", None) or {}
    missing = [key for key in ("log_every_n_steps",) if key not in conf]
    if missing:
        raise ValueError(f"lightning_conf has no {', '.join(missing)}: ESPnet's Lightning trainer needs it "
                         f"(e.g. `lightning_conf: {{log_every_n_steps: 100, max_epochs: 70}}` in the config)")
    if getattr(args, "scheduler", None) is None:
        raise ValueError("no scheduler: ESPnet's Lightning trainer needs one (e.g. `scheduler: warmuplr` with "
                         "`scheduler_conf: {warmup_steps: 25000}`)")


# ----------------------------------------------------------------------------------------------------- model_conf
def check_model_config(args: Namespace) -> None:
    """model_conf against the model class: for bertkd every key and value (kd.config), for other models the keys."""
    from espnet2.tasks.asr import encoder_choices, model_choices

    from espnet_bertkd.kd.config import EncoderShape, check_known_keys, check_model_conf, model_conf_defaults
    from espnet_bertkd.asr.bertkd_model import MODEL_NAME

    model_class = model_choices.get_class(args.model)
    signature = inspect.signature(model_class.__init__)
    conf = args.model_conf or {}
    if args.model == MODEL_NAME:
        encoder = EncoderShape.of_class(encoder_choices.get_class(args.encoder), args.encoder_conf or {})
        check_model_conf(conf, signature, encoder)
    elif not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        check_known_keys(conf, model_conf_defaults(signature), f"model_conf (model: {args.model})")
    check_decoder_needed(args, model_class, conf, model_conf_defaults(signature))


def check_decoder_needed(args: Namespace, model_class: type, conf: Dict[str, Any], defaults: Dict[str, Any]) -> None:
    """ESPnet's ASR model asserts a decoder when ctc_weight < 1 ("decoder should not be None", after the model is
    half built); bertkd's KD decoders count as one. Refuse that combination here, naming the key and the fix."""
    from espnet2.asr.espnet_model import ESPnetASRModel

    from espnet_bertkd.asr.bertkd_model import MODEL_NAME

    if not (isinstance(model_class, type) and issubclass(model_class, ESPnetASRModel)):
        return
    if getattr(args, "decoder", None) is not None:
        return
    ctc_weight = conf.get("ctc_weight", defaults.get("ctc_weight", 0.5))
    is_kd = args.model == MODEL_NAME
    if is_kd and conf.get("kd_layers"):
        return
    if not isinstance(ctc_weight, (int, float)) or isinstance(ctc_weight, bool) or ctc_weight >= 1.0:
        return  # a bad value is named by the range check; 1.0 is a CTC-only model
    source = "" if "ctc_weight" in conf else f" (the default of model: {args.model})"
    others = "add kd_layers (KD decoders) or an attention decoder (`decoder: transformer`)" if is_kd else \
        "add an attention decoder (`decoder: transformer`)"
    raise ValueError(
        f"model_conf.ctc_weight={ctc_weight}{source} gives the attention loss weight {1 - ctc_weight:g}, but the model "
        f"has no decoder (no --decoder{', and model_conf.kd_layers is empty' if is_kd else ''}): set "
        f"`ctc_weight: 1.0` in model_conf for a CTC-only model, or {others}"
    )


# --------------------------------------------------------------------------------------------- soft labels
def resolve_teacher_vocab_size(args: Namespace) -> List[str]:
    """Set model_conf.teacher.vocab_size of a KD config that leaves it unset, from the teacher's own config (no
    weights are read), and return the `--model_conf teacher.vocab_size=N` that makes ESPnet save it in config.yaml
    (it writes config.yaml from its own parse of the command line, after building the model): decoding, export and
    `build_model_from_file` then never need the teacher. A teacher that cannot be loaded here is left to the model
    constructor, which fails with TeacherLoadError (saying how to pass a directory or the size) when ESPnet builds
    it; the other checks still run first."""
    from espnet_bertkd.asr.bertkd_model import MODEL_NAME
    from espnet_bertkd.kd.teacher import TeacherLoadError, load_teacher_vocab_size

    conf = args.model_conf or {}
    teacher = conf.get("teacher")
    if getattr(args, "model", None) != MODEL_NAME or not conf.get("kd_layers") or not isinstance(teacher, dict):
        return []
    if teacher.get("vocab_size") is not None or not teacher.get("model"):
        return []  # given (checked against the teacher where it loads), or a missing model the checks name
    try:
        vocab_size = load_teacher_vocab_size(teacher["model"])
    except TeacherLoadError as e:
        logging.warning("teacher.vocab_size is not resolved (the model cannot be built either): %s", e)
        return []
    args.model_conf = {**conf, "teacher": {**teacher, "vocab_size": vocab_size}}
    logging.info("teacher %r: vocabulary size %d (saved as model_conf.teacher.vocab_size)", teacher["model"],
                 vocab_size)
    return ["--model_conf", f"teacher.vocab_size={vocab_size}"]


def check_soft_labels(args: Namespace) -> None:
    """Fail before any data is read when a KD training run cannot work.

    Checks the model config (building nothing heavy) and, in cached teacher mode, that every training and validation
    set has soft labels for all of its utterances, in arks that exist and hold them, written by the configured
    teacher (kd_meta.json) from the transcripts training reads (kd_text.hash). Soft labels without kd_meta.json or
    kd_text.hash cannot be verified and are refused unless ESPNET_BERTKD_ACCEPT_UNVERIFIED_SOFT_LABELS=1.
    """
    from espnet_bertkd.asr.bertkd_model import MODEL_NAME
    from espnet_bertkd.kd.soft_labels import KD_PROB, KD_TOKEN, check_arks, check_coverage, check_meta
    from espnet_bertkd.utils.fileio import read_pairs
    from espnet_bertkd.kd.teacher_config import TeacherConfig

    if getattr(args, "model", None) != MODEL_NAME or getattr(args, "collect_stats", False):
        return
    conf = dict(args.model_conf or {})
    if not conf.get("kd_layers"):
        return
    if conf.get("teacher") is None:
        raise ValueError("model_conf.kd_layers needs model_conf.teacher (at least `model: <hub id or dir>`)")
    teacher = TeacherConfig.from_dict(conf["teacher"])
    if teacher.mode != "cached":
        _check_online_teacher(args, teacher)
        return
    expected = _expected_meta(teacher)
    for split in ("train", "valid"):
        entries = {name: path for path, name, _ in getattr(args, f"{split}_data_path_and_name_and_type") or []}
        for name in (KD_TOKEN, KD_PROB):
            if name not in entries:
                raise ValueError(
                    f"teacher.mode is 'cached' but --{split}_data_path_and_name_and_type has no {name!r} input: add "
                    f"DIR/{name}.scp,{name},kaldi_ark (written by espnet_bertkd.bin.extract_soft_labels)"
                )
            if not os.path.exists(entries[name]):
                raise FileNotFoundError(f"--{split}_data_path_and_name_and_type: {entries[name]} does not exist")
        reference = entries.get("text")
        pairs = read_pairs(reference) if reference is not None and os.path.exists(reference) else None
        if pairs is not None:
            for name in (KD_TOKEN, KD_PROB):
                check_coverage(entries[name], [utt for utt, _ in pairs], reference)
        for name in (KD_TOKEN, KD_PROB):
            check_arks(entries[name])
        for directory in sorted({os.path.dirname(entries[name]) for name in (KD_TOKEN, KD_PROB)}):
            if not _accept_unverified(directory):
                check_meta(directory, expected)
                _warn_if_unverified(directory, teacher, expected)
            if pairs is not None:
                _check_texts(directory, pairs, reference)


def _check_online_teacher(args: Namespace, teacher: "TeacherConfig") -> None:
    """Online mode reads the transcripts with the teacher's tokenizer at every step: check it before training, as
    extraction does in cached mode (its size against the model's vocabulary, the training text's unknown tokens).
    Loads the tokenizer and the model's config only, not its weights. A teacher that cannot be loaded here is left
    to the model's own load (OnlineSoftLabels), which names it."""
    from transformers import AutoConfig, AutoTokenizer

    from espnet_bertkd.kd.teacher import check_unknown_tokens, check_vocab_sizes
    from espnet_bertkd.utils.fileio import read_pairs

    try:
        tokenizer = AutoTokenizer.from_pretrained(teacher.model)
        model_size = int(AutoConfig.from_pretrained(teacher.model).vocab_size)
    except (OSError, ValueError):
        return
    check_vocab_sizes(teacher, len(tokenizer), model_size)
    for split in SPLITS:
        text = loader_inputs(args, split)[1]
        if text is not None and os.path.exists(text):
            check_unknown_tokens(teacher.model, tokenizer, read_pairs(text), text)


def _accept_unverified(directory: str) -> bool:
    """Soft labels without kd_meta.json cannot be matched to a teacher (labels of another teacher with the same
    vocabulary size would train to completion): an error, unless the user accepts them knowingly for this run.
    Returns whether there is no kd_meta.json (and the user accepted that)."""
    from espnet_bertkd.kd.soft_labels import ACCEPT_UNVERIFIED_ENV, META_FILE

    path = os.path.join(directory, META_FILE)
    if os.path.exists(path):
        return False
    if os.environ.get(ACCEPT_UNVERIFIED_ENV, "") == "1":
        logging.warning("%s is missing: the soft labels in %s are used unverified (%s=1)", path, directory,
                        ACCEPT_UNVERIFIED_ENV)
        return True
    raise ValueError(
        f"{path} is missing: nothing says which teacher, top-k and temperature wrote the soft labels in {directory}. "
        f"Re-run soft-label extraction (espnet_bertkd.bin.extract_soft_labels, asr.sh stage 4) into that directory, "
        f"or set {ACCEPT_UNVERIFIED_ENV}=1 for this run to train from them unverified"
    )


def _check_texts(directory: str, pairs: Sequence[Tuple[str, str]], reference: str) -> None:
    """The soft labels must come from the transcripts training reads (kd_text.hash, written by extraction)."""
    from espnet_bertkd.kd.soft_labels import ACCEPT_UNVERIFIED_ENV, TEXT_HASH_FILE, check_text_hashes

    path = os.path.join(directory, TEXT_HASH_FILE)
    if os.path.exists(path):
        check_text_hashes(directory, pairs, reference)
    elif os.environ.get(ACCEPT_UNVERIFIED_ENV, "") == "1":
        logging.warning("%s is missing: the soft labels in %s are not checked against %s (%s=1)", path, directory,
                        reference, ACCEPT_UNVERIFIED_ENV)
    else:
        raise ValueError(
            f"{path} is missing: the soft labels in {directory} were written by an earlier espnet-bertkd (or their "
            f"extraction did not finish), so nothing says which transcripts they were made from. Re-run soft-label "
            f"extraction with the same --output_dir (`python -m espnet_bertkd.bin.extract_soft_labels --asr_config "
            f"CONFIG --text {reference} --output_dir {directory}`, or asr.sh --stage 4 --stop_stage 4; it recomputes "
            f"them), or set {ACCEPT_UNVERIFIED_ENV}=1 for this run to train from them unverified"
        )


def _expected_meta(teacher: TeacherConfig) -> Dict[str, Any]:
    """What kd_meta.json must say for this config. The vocabulary fingerprint and size come from the teacher when
    it loads here (None, not checked, where it does not); the model's KD decoders are sized the same way."""
    from espnet_bertkd.kd.soft_labels import STORAGE
    from espnet_bertkd.kd.teacher import TeacherLoadError, load_teacher_vocab_size, load_vocab_hash

    vocab_size = teacher.vocab_size
    if vocab_size is None:
        try:
            vocab_size = load_teacher_vocab_size(teacher.model)
        except TeacherLoadError:
            vocab_size = None
    return {"vocab_hash": load_vocab_hash(teacher.model), "topk": teacher.topk, "temperature": teacher.temperature,
            "drop_special": teacher.drop_special, "vocab_size": vocab_size, "storage": STORAGE}


def _warn_if_unverified(directory: str, teacher: TeacherConfig, expected: Dict[str, Any]) -> None:
    """Where the teacher cannot be loaded here its vocabulary cannot be compared: say so, with both teacher ids
    (paths differ between machines, so a different id alone is no error)."""
    from espnet_bertkd.kd.soft_labels import read_meta

    meta = read_meta(directory) or {}
    if expected["vocab_hash"] is None and meta.get("teacher") != teacher.model:
        logging.warning(
            "cannot load teacher %r here to compare its vocabulary with the soft labels in %s, written by teacher "
            "%r: make sure they are the same model", teacher.model, directory, meta.get("teacher"),
        )


# ----------------------------------------------------------------------------------------------------------- data
def data_check_level() -> str:
    level = os.environ.get(DATA_CHECK_ENV, "full").strip().lower() or "full"
    if level not in DATA_CHECK_LEVELS:
        raise ValueError(f"{DATA_CHECK_ENV}={level!r}: must be one of {DATA_CHECK_LEVELS}")
    return level


def check_data(args: Namespace) -> None:
    """Step 3 for the train and the valid inputs (see the module docstring); the problems of both are reported
    together, so one run of the (possibly long) audio check shows everything to fix."""
    level = data_check_level()
    if level == "off":
        logging.warning("%s=off: the training data is not checked before ESPnet reads it", DATA_CHECK_ENV)
        return
    missing = [problem for split in SPLITS for problem in missing_files(args, split)]
    if missing:
        raise DataError(missing, hint=f"Check these paths on the asr_train command line. {NOT_STARTED}")
    fs = expected_sample_rate(args)
    channels = expected_channels(args)
    charset = token_charset(args)
    problems: List[str] = []
    refused: List[str] = []  # the inputs of the splits with problems
    for split in SPLITS:
        speech, text = loader_inputs(args, split)
        if speech is None and text is None:
            continue
        found = check_split(f"--{split}_data_path_and_name_and_type", speech, text,
                            list(getattr(args, f"{split}_shape_file", None) or []), fs, charset,
                            check_audio=level == "full", speech_type=speech_type(args, split), channels=channels)
        problems += found
        refused += [p for p in (speech, text) if p and found]
    if problems:
        raise DataError(problems, hint=fix_hint(refused))


def _input_layer_and_hop(args: Namespace) -> Optional[Tuple[Optional[str], int]]:
    """The encoder's input layer and the default front-end's hop, where the CTC frame count follows from them
    (ESPnet's default front-end on raw audio, an encoder with a known input layer); else None."""
    from espnet2.tasks.asr import encoder_choices, frontend_choices

    from espnet_bertkd.tasks.ctc_lengths import INPUT_LAYERS

    if getattr(args, "input_size", None) is not None or getattr(args, "frontend", None) != "default":
        return None
    try:
        encoder_class = encoder_choices.get_class(args.encoder)
    except (ValueError, KeyError, TypeError):
        return None
    param = inspect.signature(encoder_class.__init__).parameters.get("input_layer")
    layer = (args.encoder_conf or {}).get("input_layer", param.default if param is not None else None)
    hop_param = inspect.signature(frontend_choices.get_class("default").__init__).parameters["hop_length"]
    hop = int((args.frontend_conf or {}).get("hop_length", hop_param.default))
    return (layer, hop) if layer in INPUT_LAYERS and hop > 0 else None


def check_ctc_lengths(args: Namespace) -> None:
    """Count the training utterances whose transcript is longer than the CTC output allows (ctc_lengths), from
    collect-stats' speech shape file and the transcripts tokenised as ESPnet will: name them in a warning, and
    refuse when they are more than MAX_INFEASIBLE_SHARE of the set (ESPnet's zero_infinity would train on a 0 loss
    without a word). Skipped without a shape file, a CTC loss or a known encoder input layer."""
    from espnet_bertkd.tasks.ctc_lengths import MAX_INFEASIBLE_SHARE, infeasible

    if getattr(args, "collect_stats", False) or (args.model_conf or {}).get("ctc_weight") == 0:
        return
    if getattr(args, "token_list", None) is None or getattr(args, "token_type", None) is None:
        return
    layer_hop = _input_layer_and_hop(args)
    shapes = [p for p in getattr(args, "train_shape_file", None) or [] if Path(p).name.startswith("speech_shape")]
    text = loader_inputs(args, "train")[1]
    if layer_hop is None or len(shapes) != 1 or text is None or not os.path.isfile(shapes[0]):
        return
    from espnet2.text.build_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=args.bpemodel,
                                non_linguistic_symbols=args.non_linguistic_symbols, g2p_type=args.g2p)
    normalize = None
    if getattr(args, "cleaner", None):  # what ESPnet's preprocessor does before tokenising
        from espnet2.text.cleaner import TextCleaner

        normalize = TextCleaner(args.cleaner)
    samples = {e.key: int(e.value.split(",")[0]) for e in read_table(shapes[0])}
    pairs = read_table(text)
    tokens = ((e.key, tokenizer.text2tokens(normalize(e.value) if normalize else e.value)) for e in pairs)
    bad, checked = infeasible(samples, tokens, layer_hop[1], layer_hop[0])
    if not bad:
        return
    empty = [u for u, have, _ in bad if have == 0]
    if empty:  # ESPnet's input layer raises TooShortUttError on them, mid-epoch, whatever their share
        raise DataError(f"{text}: {len(empty)} training utterances are too short for the encoder's input layer "
                        f"{layer_hop[0]} (no frame left after it): {', '.join(empty[:5])}"
                        f"{' and more' if len(empty) > 5 else ''}",
                        hint=f"Drop them from the data directory. {NOT_STARTED}")
    share = len(bad) / max(checked, 1)
    shown = ", ".join(f"{u} ({have} frames for {need})" for u, have, need in bad[:5])
    message = (f"{text}: {len(bad)} of {checked} training utterances ({share:.1%}) have more tokens than CTC can "
               f"align in their audio (encoder frames after input_layer {layer_hop[0]}, hop {layer_hop[1]}): "
               f"{shown}{' and more' if len(bad) > 5 else ''}; their CTC loss is 0 (zero_infinity) and they teach "
               "nothing")
    if share > MAX_INFEASIBLE_SHARE:
        raise DataError(message, hint=f"Drop them from the data directory, or subsample less (encoder_conf."
                                      f"input_layer), or use coarser tokens. {NOT_STARTED}")
    logging.warning(message)


def _speech_input(args: Namespace, split: str) -> Optional[DataInput]:
    """The audio input of a split: type sound, or name speech of type kaldi_ark (ESPnet reads audio arks and
    `ARK:OFFSET` wav.scp entries with it)."""
    inputs: List[DataInput] = list(getattr(args, f"{split}_data_path_and_name_and_type", None) or [])
    return next((i for i in inputs if i[2] == "sound" or (i[1] == "speech" and i[2] == "kaldi_ark")), None)


def loader_inputs(args: Namespace, split: str) -> Tuple[Optional[str], Optional[str]]:
    """The speech (type sound, or speech of type kaldi_ark) and transcript (name text, type text) files of a split,
    where given."""
    inputs: List[DataInput] = list(getattr(args, f"{split}_data_path_and_name_and_type", None) or [])
    speech = _speech_input(args, split)
    text = next((path for path, name, kind in inputs if name == "text" and kind == "text"), None)
    return (speech[0] if speech else None), text


def speech_type(args: Namespace, split: str) -> str:
    """ESPnet's loader type of the split's speech input (sound or kaldi_ark): its entries are checked the way that
    loader reads them."""
    speech = _speech_input(args, split)
    return speech[2] if speech else "sound"


def missing_files(args: Namespace, split: str) -> List[str]:
    """Every file ESPnet will open for this split must exist (ESPnet's own error comes after the model is built)."""
    flag, shape_flag = f"--{split}_data_path_and_name_and_type", f"--{split}_shape_file"
    inputs: List[DataInput] = list(getattr(args, f"{split}_data_path_and_name_and_type", None) or [])
    problems = [f"{flag} {path},{name},{kind}: {path}: no such file" for path, name, kind in inputs
                if not os.path.isfile(path)]
    return problems + [f"{shape_flag} {path}: no such file (collect-stats writes the shape files)"
                       for path in getattr(args, f"{split}_shape_file", None) or [] if not os.path.isfile(path)]


def check_split(flag: str, speech: Optional[str], text: Optional[str], shape_files: Sequence[str],
                fs: Optional[int], charset: Optional[Charset], check_audio: bool, speech_type: str = "sound",
                channels: Optional[int] = None) -> List[str]:
    """The problems of one split's inputs (validate_loader_inputs), with progress logged."""
    start = time.monotonic()
    logging.info("checking %s %s%s", flag, " and ".join(p for p in (speech, text) if p),
                 "" if check_audio else f" (audio headers not read: {DATA_CHECK_ENV}=no_audio)")
    try:
        report = validate_loader_inputs(speech, text, check_audio=check_audio, fs=fs if check_audio else None,
                                        charset=charset, key_files=shape_files, speech_type=speech_type,
                                        channels=channels if check_audio else None)
    except DataError as err:
        return err.problems
    logging.info("%s: %d utterances OK (%.1f s)", flag, report.utterances, time.monotonic() - start)
    return []


def fix_hint(paths: Sequence[str]) -> str:
    """How to fix what the data check finds (the problems themselves name file, line and utterance)."""
    dirs = sorted({str(Path(p).parent) for p in paths if is_data_dir(Path(p).parent)})
    fix = ""
    if dirs:
        fix += (" and ".join(f"`python -m espnet_bertkd.recipe.bin.validate_data_dir {d} --fix`" for d in dirs) +
                " strips a byte-order mark and DOS line endings, sorts the tables and keeps the utterances found in "
                "all of them (add --drop_empty_text to drop empty transcripts; the originals go to DIR/.backup), "
                "then re-run collect-stats so the shape files match. ")
    if any(not is_data_dir(Path(p).parent) for p in paths):
        fix += ("Sort tables outside a data directory by key (`LC_ALL=C sort`), keep the same utterances in each "
                "and re-run collect-stats so the shape files match. ")
    return (f"The training data was refused. {NOT_STARTED} How to fix: {fix}"
            "Resample audio whose rate differs from frontend_conf.fs (or set fs), downmix multi-channel audio to "
            "mono; normalise transcripts with "
            "characters the token list lacks, or rebuild the token list / BPE model. "
            f"{DATA_CHECK_ENV}=no_audio skips reading audio headers, {DATA_CHECK_ENV}=off skips the data check.")


def expected_sample_rate(args: Namespace) -> Optional[int]:
    """The rate the front-end assumes (frontend_conf.fs, else its class default: 16000 for ESPnet's default
    front-end); None where speech is features (--input_size) or the front-end has no rate."""
    if getattr(args, "input_size", None) is not None or getattr(args, "frontend", None) is None:
        return None
    from espnet2.tasks.asr import frontend_choices

    param = inspect.signature(frontend_choices.get_class(args.frontend).__init__).parameters.get("fs")
    if param is None:
        return None
    fs = (args.frontend_conf or {}).get("fs", param.default)
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)  # ESPnet's front-ends accept "16k"
    return int(fs) if isinstance(fs, (int, float)) and fs > 0 else None


def expected_channels(args: Namespace) -> Optional[int]:
    """1 where ESPnet's default front-end reads raw audio with no multi-channel enhancement front-end
    (frontend_conf.frontend_conf): a batch that mixes a stereo file with mono ones cannot be padded (collect-stats
    and training fail in the collate function without naming the file), and a stereo file alone is trained on a
    random channel. None (not checked) for features (--input_size) and other front-ends."""
    if getattr(args, "input_size", None) is not None or getattr(args, "frontend", None) != "default":
        return None
    return None if (args.frontend_conf or {}).get("frontend_conf") else 1


# ----------------------------------------------------------------------------------------------------- token list
def read_token_list(token_list) -> List[str]:
    """ESPnet's reading of --token_list (a file, one token a line, or a list)."""
    if not isinstance(token_list, (str, Path)):
        return list(token_list)
    if not os.path.isfile(token_list):
        raise DataError(f"--token_list {token_list}: no such file")
    with open(token_list, encoding="utf-8") as f:
        return [line[0] + line[1:].rstrip() for line in f]


def token_charset(args: Namespace) -> Optional[Charset]:
    """The characters the token list represents, as ESPnet's preprocessor tokenises them (cleaner, tokenizer,
    token list): for char tokens the list itself, for bpe what the sentencepiece model maps to listed pieces.
    None where the text is not tokenised by character (word, phn, ...) or not by ESPnet."""
    if not getattr(args, "use_preprocessor", True) or getattr(args, "token_type", None) not in CHARACTER_TOKEN_TYPES:
        return None
    if getattr(args, "token_list", None) is None:
        return None
    tokens = set(read_token_list(args.token_list))
    if args.token_type == "bpe" and not (args.bpemodel and os.path.isfile(args.bpemodel)):
        raise DataError(f"--bpemodel {args.bpemodel}: no such file (token_type bpe needs the sentencepiece model)")
    from espnet2.text.build_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=args.bpemodel,
                                non_linguistic_symbols=args.non_linguistic_symbols, g2p_type=args.g2p)
    source = f"the token list {args.token_list}" if not isinstance(args.token_list, list) else "the token list"
    if args.token_type == "bpe":
        source += f" with the BPE model {args.bpemodel}"
    return Charset(known=lambda c: all(t in tokens for t in tokenizer.text2tokens(c)),
                   name=f"{source} (they would become <unk>)", normalize=text_normalizer(args, tokenizer))


def text_normalizer(args: Namespace, tokenizer) -> Optional[Callable[[str], str]]:
    """What ESPnet does to a transcript before splitting it into characters: its text cleaner, and (char tokens)
    keeping non-linguistic symbols such as <noise> whole."""
    symbols = sorted(getattr(tokenizer, "non_linguistic_symbols", ()) or (), key=len, reverse=True)
    cleaner = None
    if getattr(args, "cleaner", None):
        from espnet2.text.cleaner import TextCleaner

        cleaner = TextCleaner(args.cleaner)
    if cleaner is None and not symbols:
        return None

    def normalize(text: str) -> str:
        if cleaner is not None:
            text = cleaner(text)
        for symbol in symbols:
            text = text.replace(symbol, " ")
        return text

    return normalize
