"""Data: reading files (`files`), rows into preference pairs and prompts (`rows`), text for the models
(`encode`), and deterministic splits and data locations (`splits`). Batching lives with the training core
(`align.training.batches`)."""
from align.data.encode import (
    EncodedPair,
    collate_pairs,
    encode_left_truncated,
    encode_pair,
    render_prompt,
    response_separator,
)
from align.data.files import BadRow, DataError, iter_rows
from align.data.rows import (
    SKIP_REASONS,
    PreferenceData,
    content_id,
    load_preferences,
    load_prompts,
    parse_hh_dialogue,
    parse_preference_rows,
)
from align.data.splits import DATA_DIR_ENV, data_dirs, in_test_split, split_train_eval

__all__ = ["DATA_DIR_ENV", "SKIP_REASONS", "BadRow", "DataError", "EncodedPair", "PreferenceData", "collate_pairs", "content_id",
           "data_dirs", "encode_left_truncated", "encode_pair", "in_test_split", "iter_rows", "load_preferences",
           "load_prompts", "parse_hh_dialogue", "parse_preference_rows", "render_prompt", "response_separator",
           "split_train_eval"]
