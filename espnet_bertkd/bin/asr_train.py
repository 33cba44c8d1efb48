"""ESPnet's `espnet2.bin.asr_train` with the plugin registered (same arguments)."""
import sys

from espnet_bertkd.launch import run_module


def main() -> None:
    run_module("espnet2.bin.asr_train", sys.argv[1:])


if __name__ == "__main__":
    main()
