"""How much one request may ask for: declared here, enforced in lab/, so the app, the CLI and the API share them.

Each bound keeps one person's request from stalling everyone behind the one model (stop strings cost the
tokenizer time per character when generation starts) or from filling the workspace.
"""

STOP_STRINGS = 8  # stop strings per request
STOP_STRING_CHARS = 64  # characters per stop string
SYSTEM_PROMPT_CHARS = 8_000
MESSAGE_CHARS = 32_000  # one user turn
NEW_TOKENS = 4_096  # tokens generated per reply
SEED = 2**32 - 1  # the largest seed (NumPy's and Python's generators accept up to this)
UPLOAD_MB = 50  # one uploaded file
FILE_MB = UPLOAD_MB  # a file read for import (the CLI and the API too, not only uploads)
DECOMPRESSED_MB = 200  # what a compressed (Parquet) file may expand to
IMPORT_ROWS = 100_000  # rows per import
NAME_CHARS = 200  # names of people, experiments and runs
CONVERSATION_CHARS = 100_000  # all turns of one demonstration or compared prompt together
QUESTIONS = 1_000  # questions in one prompt experiment
VARIANTS = 16  # prompt variants in one experiment
