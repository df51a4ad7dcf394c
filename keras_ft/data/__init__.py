"""Data stage: files -> Examples -> split -> tokens -> batches.

From the ground up: `records` (one record -> one Example), `readers` (a file
-> records), `sources` (a data spec -> files, mixed), `split` (the seeded
train/validation split), `tokenizer` (an Example -> token ids and a loss
mask), `token_cache` (tokens cached on disk), `batches` (tokens -> padded or
packed batches) and `stats` (what is in the data).
"""

from keras_ft.data.batches import BatchSequence
from keras_ft.data.records import DataError, FieldMapping, LoadReport
from keras_ft.data.split import load_examples, plan_split
from keras_ft.data.token_cache import TokenCacheError, TokenizedDataset, cache_tokenized
from keras_ft.data.tokenizer import TextTokenizer, TokenizedExample, tokenize_example

__all__ = [
    "BatchSequence",
    "DataError",
    "FieldMapping",
    "LoadReport",
    "TextTokenizer",
    "TokenCacheError",
    "TokenizedDataset",
    "TokenizedExample",
    "cache_tokenized",
    "load_examples",
    "plan_split",
    "tokenize_example",
]
