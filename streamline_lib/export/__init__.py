"""Save a pruned model so that other tools load it, load it back, and write it as GGUF.

The checkpoint and its ``streamline.json`` are :mod:`~streamline_lib.export.checkpoint` (re-exported
here), the model card :mod:`~streamline_lib.export.model_card`, GGUF files
:mod:`~streamline_lib.export.gguf`, and the safe claim and swap of an output folder
:mod:`~streamline_lib.export.output_folder`.
"""

from .checkpoint import (
                         CUSTOM_WEIGHTS_FILE,
                         METADATA_FILE,
                         STORAGE_FORMATS,
                         ZeroAttentionForm,
                         claim_export_folder,
                         export_files,
                         gguf_file_name,
                         load_pruned,
                         read_metadata,
                         record_evaluation,
                         save_pruned,
                         verify_export,
                         zero_attention_form,
)

__all__ = ["METADATA_FILE", "CUSTOM_WEIGHTS_FILE", "STORAGE_FORMATS", "ZeroAttentionForm", "zero_attention_form",
           "gguf_file_name", "export_files", "claim_export_folder", "save_pruned", "read_metadata", "verify_export",
           "record_evaluation", "load_pruned"]
