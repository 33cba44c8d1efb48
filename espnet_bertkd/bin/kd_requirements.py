"""What ASR training configs need from the stage driver: KD or not, the teacher and its mode, cached soft labels.

    python -m espnet_bertkd.bin.kd_requirements --asr_config conf/train_asr_inter_aed_kd.yaml [--asr_config ...] \
        [--teacher /models/bert-base-uncased] [--get FIELD]

Without --get: a JSON object, one entry per config (kd, mode, soft_labels, teacher) and the fields below.
With --get FIELD: that value alone on one line, for a shell script (true/false, a word, a path, or an empty line):

    kd                  true if any config trains KD decoders (model: bertkd, non-empty model_conf.kd_layers)
    mode                the KD configs' teacher.mode: cached, online, mixed, or none (no KD config)
    soft_labels         true if any config reads cached soft labels (the kd_token/kd_prob data inputs)
    soft_labels_config  the config whose teacher block the cached soft labels are extracted with
                        (`extract_soft_labels --asr_config`); an error if the cached configs need different ones
    teacher             the teacher model the KD configs name; an error if they name different ones

--teacher replaces teacher.model of every KD config, as `--model_conf teacher.model=...` does in training.
"""
import argparse
import json
import sys
from typing import List, Optional

from espnet_bertkd.kd.requirements import common_teacher, overall_mode, requirements, soft_label_source

FIELDS = ("kd", "mode", "soft_labels", "soft_labels_config", "teacher")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_config", action="append", required=True, help="an ESPnet ASR training config (repeatable)")
    p.add_argument("--teacher", default=None,
                   help="replaces model_conf.teacher.model of the KD configs (e.g. a local copy of a hub model)")
    p.add_argument("--get", choices=FIELDS, default=None, help="print this field alone (see above)")
    return p


def answer(configs: List[str], teacher: Optional[str], field: Optional[str]) -> str:
    reqs = [requirements(c, teacher or None) for c in configs]

    def value(name: str):
        if name == "kd":
            return any(r.kd for r in reqs)
        if name == "soft_labels":
            return any(r.soft_labels for r in reqs)
        if name == "mode":
            return overall_mode(reqs)
        if name == "soft_labels_config":
            source = soft_label_source(reqs)
            return source.config if source is not None else None
        return common_teacher(reqs)

    if field is not None:
        v = value(field)
        return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return json.dumps({"configs": [r.as_dict() for r in reqs], **{name: value(name) for name in FIELDS}}, indent=2)


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        print(answer(args.asr_config, args.teacher, args.get))
    except (OSError, ValueError) as e:
        sys.exit(f"kd_requirements: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
