"""Each participant's data: built-in tasks partitioned across participants, or an
institution's own tables, split locally and normalized with federated statistics.

Import from the submodules (`builtin`, `tables`, `partition`, ...): the partitioners pull
in Hugging Face `datasets`, which takes a couple of seconds to import.
"""
