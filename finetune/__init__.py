"""finetune: learn from recorded deliberations — real and simulated — to run new mini-publics on a small model.

    from finetune.dataset import PrepareOptions, prepare_dataset   # store -> SFT dataset (no torch)
    from finetune.config import TrainConfig, load_config          # one config object, LoRA settings in one place
    from finetune.trainer import train                            # LoRA on transformers (needs the finetune extra)

`assembly finetune prepare|train` (finetune.cli) joins the CLI through the `assembly.commands` entry point.

Uses `transcripts` (the store) and a few torch-free pieces of `assembly` (prompt templates, ballot prompts, the
distilled record format) so that training examples are exactly what a model sees at run time. See docs/finetune.md.
"""

__all__ = ["card", "cli", "config", "dataset", "encoding", "trainer"]
